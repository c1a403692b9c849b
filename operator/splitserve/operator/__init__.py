"""The splitserve operator: pure planning of child objects, a thin Kubernetes layer, kopf handlers."""
