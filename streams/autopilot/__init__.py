"""The model autopilot: drift → retrain → shadow → verdict → guarded promotion or rollback.

The parts it connects exist on their own: the drift monitor asks for a retrain
(``retrain_requested`` on ``sensor.drift``), the evaluator publishes the
always-valid champion-vs-challenger verdict (``sensor.evaluation``), the registry
moves aliases, and the processor hot-swaps what the aliases name. The autopilot
closes the loop, and writes every step to ``sensor.audit`` with its evidence.

Modules, from the entry point down:

* ``app``: :func:`run_autopilot`, the controller's loop with its metrics endpoint;
* ``controller``: one look at everything (:meth:`Controller.tick`) and what it does;
* ``decisions``: what to do, as pure functions of what was seen (promote, roll back);
* ``guards``: the promotion guards, each with its value and limit (SRM included);
* ``transitions``: alias moves that are done whole or undone (MLflow may fail half-way);
* ``retrain``: the retraining Prefect flow, and :func:`run_retrain` around it;
* ``dataset``: the training window, events joined with labels, with its lineage;
* ``cbpe``: accuracy estimated from calibrated confidence, per window;
* ``views``: the controller's reading of the topics (verdicts, quality, incidents, split);
* ``reference``: each version's CBPE calibration, fitted once on its reference data;
* ``runner``: retraining runs on a background thread, one at a time;
* ``feeds``, ``audit``, ``state``, ``metrics``: topic tails and the processors' /metrics,
  audit records and topic sinks, saved state, Prometheus metrics;
* ``simulation``: the controller's false-promotion rate on seeded null streams;
* ``demo``: ``make demo``, the whole loop on the embedded stack.
"""
