"""Brings one child object to its desired state with as few writes as possible.

Compare-then-write: an object whose observed state already holds everything desired (server
defaults ignored, quantities compared by value) and whose recorded spec hash matches is left
alone, so a converged reconcile writes nothing. Otherwise the object is created, replaced
(guarded by resourceVersion) or, for Services, merge-patched so allocated addresses survive.
A SplitPool's `spec.replicas` is written only when the pool is created: afterwards it belongs
to whatever drives the scale subresource.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Literal

from splitserve.api.names import ANNOTATION_SPEC_HASH
from splitserve.operator.kube import Kube, KubeError
from splitserve.operator.planner.merge import differences

Outcome = Literal["created", "updated", "unchanged"]
META_KEYS = ("apiVersion", "kind", "metadata", "status")


class NotOwnedError(Exception):
    """A child name is taken by an object this service does not control."""


def content(obj: dict[str, Any]) -> dict[str, Any]:
    """The part of an object the operator owns: everything but identity, metadata and status;
    for a SplitPool, without `spec.replicas`."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k not in META_KEYS}
    if obj["kind"] == "SplitPool":
        body.get("spec", {}).pop("replicas", None)
    return body


def spec_hash(obj: dict[str, Any]) -> str:
    encoded = json.dumps(content(obj), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(encoded).hexdigest()[:20]


def with_hash(desired: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(desired)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[ANNOTATION_SPEC_HASH] = spec_hash(desired)
    return out


def needs_write(desired: dict[str, Any], observed: dict[str, Any]) -> list[str]:
    """Paths that differ; empty when the observed object already is what is desired."""
    meta = desired["metadata"]
    wanted = {
        "metadata": {
            "labels": meta.get("labels", {}),
            "annotations": meta.get("annotations", {}),
            "ownerReferences": meta.get("ownerReferences", []),
        },
        **content(desired),
    }
    return differences(wanted, observed)


def _controller_uid(obj: dict[str, Any]) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences", []):
        if ref.get("controller"):
            uid: str | None = ref.get("uid")
            return uid
    return None


def apply(kube: Kube, desired_plain: dict[str, Any]) -> Outcome:
    """Create or converge one object. Raises KubeError (with the server's message) on
    rejection and NotOwnedError when the name belongs to someone else."""
    desired = with_hash(desired_plain)
    meta = desired["metadata"]
    kind, namespace, name = desired["kind"], meta["namespace"], meta["name"]
    observed = kube.get(kind, namespace, name)
    if observed is None:
        kube.create(desired)
        return "created"
    owner = _controller_uid(desired)
    if owner and _controller_uid(observed) not in (None, owner):
        raise NotOwnedError(f"{kind}/{name} exists and is controlled by another object")
    if not needs_write(desired, observed):
        return "unchanged"
    try:
        _write(kube, desired, observed)
    except KubeError as exc:
        if not (exc.invalid and "immutable" in exc.message):
            raise
        kube.delete(kind, namespace, name)
        kube.create(desired)
    return "updated"


def remove(kube: Kube, kind: str, namespace: str, name: str, owner_uid: str) -> bool:
    """Delete a child the owner no longer wants; an object someone else controls stays.
    True when something was deleted."""
    observed = kube.get(kind, namespace, name)
    if observed is None or _controller_uid(observed) != owner_uid:
        return False
    kube.delete(kind, namespace, name)
    return True


def _write(kube: Kube, desired: dict[str, Any], observed: dict[str, Any]) -> None:
    meta, seen = desired["metadata"], observed["metadata"]
    labels = {**seen.get("labels", {}), **meta.get("labels", {})}
    annotations = {**seen.get("annotations", {}), **meta.get("annotations", {})}
    if desired["kind"] == "Service":
        patch = {"metadata": {"labels": labels, "annotations": annotations,
                              "ownerReferences": meta["ownerReferences"]},
                 "spec": desired["spec"]}
        kube.patch("Service", meta["namespace"], meta["name"], patch)
        return
    body = {k: v for k, v in observed.items() if k != "status"}
    body["metadata"] = {**seen, "labels": labels, "annotations": annotations,
                        "ownerReferences": meta["ownerReferences"]}
    for key in [k for k in body if k not in META_KEYS]:
        del body[key]
    body.update(content(desired))
    if desired["kind"] == "SplitPool":
        body["spec"]["replicas"] = observed.get("spec", {}).get("replicas",
                                                              desired["spec"].get("replicas"))
    kube.replace(body)
