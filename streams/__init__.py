"""Stream processors of streamscore: the scoring loop, its pure batch stages,
shadow scoring, drift detection, the evaluator, metrics/health and the CLI."""
