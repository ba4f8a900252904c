"""What operators watch: Prometheus metrics, liveness/readiness, consumer lag."""
