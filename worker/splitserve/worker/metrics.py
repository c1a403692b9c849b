"""Prometheus collectors of one worker process, named by `splitserve.api.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from splitserve.api import metrics as m


@dataclass(frozen=True)
class Identity:
    namespace: str
    service: str
    pool: str
    role: str

    def values(self) -> dict[str, str]:
        return {"namespace": self.namespace, "service": self.service, "pool": self.pool,
                "role": self.role}


def build(metric: m.Metric, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
    """A prometheus_client collector for `metric` (counters drop the `_total` the client adds)."""
    labels = list(metric.labels)
    if metric.kind == "counter":
        return Counter(metric.name, metric.help, labels, registry=registry)
    if metric.kind == "gauge":
        return Gauge(metric.name, metric.help, labels, registry=registry)
    return Histogram(metric.name, metric.help, labels, buckets=metric.buckets, registry=registry)


class WorkerMetrics:
    def __init__(self, identity: Identity) -> None:
        self.registry = CollectorRegistry()
        self._base = identity.values()
        self._collectors: dict[str, Counter | Gauge | Histogram] = {}

    def _get(self, metric: m.Metric, **extra: str) -> Counter | Gauge | Histogram:
        collector = self._collectors.get(metric.name)
        if collector is None:
            collector = self._collectors[metric.name] = build(metric, self.registry)
        return collector.labels(**{**self._base, **extra})  # extra may override a base label

    def inc(self, metric: m.Metric, amount: float = 1.0, **extra: str) -> None:
        c = self._get(metric, **extra)
        assert isinstance(c, Counter)
        c.inc(amount)

    def set(self, metric: m.Metric, value: float, **extra: str) -> None:
        g = self._get(metric, **extra)
        assert isinstance(g, Gauge)
        g.set(value)

    def observe(self, metric: m.Metric, value: float, **extra: str) -> None:
        h = self._get(metric, **extra)
        assert isinstance(h, Histogram)
        h.observe(value)
