"""The evaluator: labels joined with stored predictions, per-variant quality in event-time
windows, and the always-valid champion-vs-challenger verdict (faust-streaming app)."""
