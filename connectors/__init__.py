"""Edges of streamscore: Kafka clients, admin and lag, Redis stores, the MLflow
registry client, sensor sources and sinks, and the embedded dev stack.

Only this package imports confluent_kafka, redis and the MLflow client."""
