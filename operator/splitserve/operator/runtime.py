"""Long-lived operator state kept in kopf's memo: options, the API client, locks, counters,
one autoscaler per autoscaled service."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

from splitserve.operator.autoscaling import Slot
from splitserve.operator.kube import Kube
from splitserve.operator.reconcile import TemplateCache
from splitserve.operator.telemetry import Telemetry


@dataclass(frozen=True)
class OperatorOptions:
    """Everything `splitserve operator` is configured with (from flags and the environment)."""

    kubeconfig: str | None = None
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    liveness_port: int | None = None
    resync_seconds: float = 30.0
    metrics_port: int | None = None
    verbose: bool = False
    autoscaler_tick_seconds: float = 5.0  # how often autoscaled services are checked for due
    autoscaler_rate_window: str = "1m"  # PromQL range of the autoscaler's rate() queries
    autoscaler_half_life_seconds: float = 60.0  # EWMA half-life of the predicted load


@dataclass
class Runtime:
    options: OperatorOptions
    kube: Kube
    templates: TemplateCache
    telemetry: Telemetry = field(default_factory=Telemetry.create)
    locks: dict[tuple[str, str, str], asyncio.Lock] = field(default_factory=dict)
    reconciles: Counter[tuple[str, str]] = field(default_factory=Counter)
    queued: set[tuple[str, str, str]] = field(default_factory=set)
    autoscalers: dict[tuple[str, str], Slot] = field(default_factory=dict)  # (ns, service)

    def lock(self, namespace: str, name: str, kind: str = "service") -> asyncio.Lock:
        """One lock per object, so the timer, its own handlers and child events never run two
        reconciles of the same object at once."""
        return self.locks.setdefault((kind, namespace, name), asyncio.Lock())

    def enqueue(self, namespace: str, name: str, kind: str = "service") -> bool:
        """False when a reconcile of this object is already waiting to run: child events that
        arrive in a burst (one per child written) collapse into that one reconcile."""
        key = (kind, namespace, name)
        if key in self.queued:
            return False
        self.queued.add(key)
        return True

    def dequeue(self, namespace: str, name: str, kind: str = "service") -> None:
        self.queued.discard((kind, namespace, name))

    def count(self, kind: str, result: str) -> None:
        self.reconciles[(kind, result)] += 1
