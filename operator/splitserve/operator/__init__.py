"""The splitserve operator: pure planning, a thin Kubernetes layer and kopf handlers."""
