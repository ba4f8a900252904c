"""``streamscore bench``: pass-through limit vs the full pipeline, stage profile, latency at a
fixed load, soak, and the report that prints them.

:mod:`~streams.bench.run` runs the phases in order; :mod:`~streams.bench.report` prints the
result. Below them, one module per phase (:mod:`~streams.bench.throughput`,
:mod:`~streams.bench.stage_profile`, :mod:`~streams.bench.latency`,
:mod:`~streams.bench.soak`), the two loops they run (:mod:`~streams.bench.loops`), the
bench's topics and producers (:mod:`~streams.bench.feed`), helper processes
(:mod:`~streams.bench.processes`), machine and process probes
(:mod:`~streams.bench.probes`), quantiles (:mod:`~streams.bench.stats`) and what they all
share (:mod:`~streams.bench.common`).
"""
