"""The evaluator: labels joined with stored predictions, per-variant quality in event-time
windows, and the always-valid champion-vs-challenger verdict (faust-streaming app).

Modules, from the entry point down:

* ``app``: the Faust app, its agent and timers, and :func:`run_evaluator`;
* ``evaluator``: the IO around the tables and the commit protocol of a batch;
* ``tables``: the tables, and every synchronous change to them;
* ``options``, ``metrics``: what one evaluator is told, and what it exports;
* ``records``: the evaluation records, their keys, the shadow report;
* ``labels``, ``quality``, ``windows``: the label join, the accumulators, the windows;
* ``policy``, ``verdict``, ``sequential``, ``fixed_horizon``: the paired verdict.
"""
