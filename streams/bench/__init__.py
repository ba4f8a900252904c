"""``streamscore bench``: pass-through limit vs the full pipeline, stage profile, latency at a
fixed load, soak, and the report that prints them."""
