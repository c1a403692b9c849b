"""Kubernetes events on a SplitService: what the operator did and what went wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from splitserve.api.names import MANAGER
from splitserve.operator.kube import Kube, KubeError
from splitserve.operator.reconcile import Note


def event_object(obj: dict[str, Any], note: Note, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    meta = obj["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": note.reason,
        "message": note.message[:1024],
        "type": note.type,
        "source": {"component": MANAGER},
        "reportingComponent": MANAGER,
        "reportingInstance": MANAGER,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def grouped(notes: list[Note]) -> list[Note]:
    """One event per (type, reason) of a reconcile: "created 13 objects" is one event."""
    groups: dict[tuple[str, str], list[str]] = {}
    for note in notes:
        groups.setdefault((note.type, note.reason), []).append(note.message)
    return [Note(kind, reason, "; ".join(messages)) for (kind, reason), messages in groups.items()]


def post(kube: Kube, obj: dict[str, Any], notes: list[Note]) -> None:
    for note in grouped(notes):
        try:
            kube.create(event_object(obj, note))
        except KubeError:
            continue  # an event that cannot be posted must not fail the reconcile
