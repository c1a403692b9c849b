"""KV-cache hand-off from prefill to decode workers over gRPC."""
