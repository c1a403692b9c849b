"""The worker process: one engine, a gRPC service, metrics, readiness and drain."""
