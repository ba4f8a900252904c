"""Online drift detection: PSI per feature and ADWIN, incidents with hysteresis, the HTML
report and the detection-quality bench.

Records flow ``windows`` (the window clock) → ``psi`` (the formula, every feature per window) and
``adwin`` (score / error streams) → ``incidents`` (hysteresis, cooldown, the records) →
``monitor`` (:class:`~streams.drift.monitor.DriftMonitor`, composing them); ``report`` and
``bench`` read its records."""
