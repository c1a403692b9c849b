"""Grafana dashboards and the metrics reference, generated from `splitserve.api.metrics`."""
