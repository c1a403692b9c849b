"""The operator's own Prometheus metrics, built from the names in `splitserve.api.metrics`."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from splitserve.api import metrics as names

ROLE = "operator"


AUTOSCALER_METRICS = (names.AUTOSCALER_INPUT, names.AUTOSCALER_PREDICTED_LOAD,
                      names.AUTOSCALER_DESIRED_REPLICAS, names.AUTOSCALER_DECISIONS,
                      names.AUTOSCALER_LIMITED)


@dataclass
class Telemetry:
    registry: CollectorRegistry
    reconciles: Counter
    errors: Counter
    seconds: Histogram
    writes: Counter
    desired: Gauge
    ready: Gauge
    autoscaler: dict[str, Counter | Gauge]  # by metric name
    # label values of every autoscaler series, by (namespace, service), to drop them with it
    autoscaler_series: dict[tuple[str, str], set[tuple[str, tuple[str, ...]]]]

    @classmethod
    def create(cls) -> Telemetry:
        registry = CollectorRegistry()

        def counter(m: names.Metric) -> Counter:
            return Counter(m.name, m.help, m.labels, registry=registry)

        def gauge(m: names.Metric) -> Gauge:
            return Gauge(m.name, m.help, m.labels, registry=registry)

        seconds = Histogram(names.RECONCILE_SECONDS.name, names.RECONCILE_SECONDS.help,
                            names.RECONCILE_SECONDS.labels, buckets=names.RECONCILE_SECONDS.buckets,
                            registry=registry)
        autoscaler: dict[str, Counter | Gauge] = {
            m.name: counter(m) if m.kind == "counter" else gauge(m) for m in AUTOSCALER_METRICS}
        return cls(registry, counter(names.RECONCILES), counter(names.RECONCILE_ERRORS), seconds,
                   counter(names.RECONCILE_WRITES), gauge(names.POOL_DESIRED_REPLICAS),
                   gauge(names.POOL_READY_REPLICAS), autoscaler, {})

    def for_service(self, namespace: str, service: str) -> ServiceGauges:
        """Where one service's autoscaler exports its inputs and decisions."""
        return ServiceGauges(self, namespace, service)

    def forget_service(self, namespace: str, service: str) -> None:
        """Drops every autoscaler series of a service that is gone or no longer autoscaled."""
        for name, values in self.autoscaler_series.pop((namespace, service), set()):
            self.autoscaler[name].remove(*values)

    def serve(self, port: int) -> None:
        start_http_server(port, registry=self.registry)

    def reconciled(self, kind: str, namespace: str, service: str, seconds: float,
                   error: str | None) -> None:
        base = {"namespace": namespace, "service": service, "pool": "", "role": ROLE}
        self.reconciles.labels(**base, kind=kind, result="error" if error else "ok").inc()
        self.seconds.labels(**base, kind=kind).observe(seconds)
        if error:
            self.errors.labels(**base, kind=kind, reason=error).inc()

    def wrote(self, kind: str, verb: str, count: int) -> None:
        if count:
            self.writes.labels(namespace="", service="", pool="", role=ROLE, kind=kind,
                               verb=verb).inc(count)

    def pool(self, namespace: str, service: str, role: str, desired: int, ready: int) -> None:
        labels = {"namespace": namespace, "service": service, "pool": f"{service}-{role}",
                  "role": role}
        self.desired.labels(**labels).set(desired)
        self.ready.labels(**labels).set(ready)


@dataclass(frozen=True)
class ServiceGauges:
    """The autoscaler applier's `Gauges` for one service: adds its namespace and name."""

    telemetry: Telemetry
    namespace: str
    service: str

    def _child(self, metric: names.Metric, labels: dict[str, str]) -> Counter | Gauge:
        found = self.telemetry.autoscaler.get(metric.name)
        if found is None:
            raise ValueError(f"{metric.name}: not an autoscaler metric")
        every = {"namespace": self.namespace, "service": self.service, **labels}
        values = tuple(every[label] for label in metric.labels)
        self.telemetry.autoscaler_series.setdefault((self.namespace, self.service), set()).add(
            (metric.name, values))
        return found.labels(*values)

    def set(self, metric: names.Metric, value: float, **labels: str) -> None:
        child = self._child(metric, labels)
        if not isinstance(child, Gauge):
            raise ValueError(f"{metric.name}: a {metric.kind}, not a gauge")
        child.set(value)

    def inc(self, metric: names.Metric, amount: float = 1.0, **labels: str) -> None:
        self._child(metric, labels).inc(amount)
