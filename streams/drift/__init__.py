"""Online drift detection: PSI, two-sample tests (KS, chi-squared) and ADWIN, incidents with
hysteresis, the HTML report and the detection-quality bench.

Records flow ``windows`` (the window clock) → ``psi`` (every feature per window) and
``twosample`` (KS and chi-squared from the same counts) → ``calibration`` (their
thresholds from the false-alarm budget) → ``hops`` (judged every hop over the last
window) and ``adwin`` (error / score streams) → ``findings`` → ``incidents``
(hysteresis, cooldown, the records) → ``monitor`` (:class:`~streams.drift.monitor.DriftMonitor`,
composing them); ``report`` and ``bench`` (over ``bench_streams``) read its records."""
