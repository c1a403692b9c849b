"""Names, labels, selectors and owner references of everything a SplitService owns."""

from __future__ import annotations

from typing import Any

from splitserve.api import names

DATA_PLANE = "splitserve-worker"
ROUTER_APP = "splitserve-router"


def pool_name(service: str, role: str) -> str:
    return f"{service}-{role}"


def router_name(service: str) -> str:
    return f"{service}-router"


def config_name(service: str) -> str:
    return f"{service}-config"


def selector(service: str, role: str) -> dict[str, str]:
    """Immutable Deployment selector of one pool or of the router."""
    return {names.LABEL_SERVICE: service, names.LABEL_ROLE: role}


def selector_string(service: str, role: str) -> str:
    return ",".join(f"{k}={v}" for k, v in selector(service, role).items())


def labels(service: str, role: str | None = None, version: str | None = None) -> dict[str, str]:
    """Recommended `app.kubernetes.io/*` labels plus the `splitserve.io/*` ones."""
    out = {
        names.LABEL_NAME: ROUTER_APP if role == names.Role.ROUTER else DATA_PLANE,
        names.LABEL_INSTANCE: service,
        names.LABEL_PART_OF: names.PRODUCT,
        names.LABEL_MANAGED_BY: names.MANAGER,
        names.LABEL_SERVICE: service,
    }
    if role is None:
        out[names.LABEL_NAME] = names.PRODUCT
    else:
        out[names.LABEL_COMPONENT] = role
        out[names.LABEL_ROLE] = role
        if role != names.Role.ROUTER:
            out[names.LABEL_POOL] = pool_name(service, role)
    if version:
        out[names.LABEL_VERSION] = version[:63]
    return out


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to `owner` (a SplitService or SplitPool object)."""
    meta = owner.get("metadata", {})
    for key in ("name", "uid"):
        if not meta.get(key):
            raise ValueError(f"owner metadata.{key} is required to own children")
    return {
        "apiVersion": owner.get("apiVersion", "splitserve.io/v1alpha1"),
        "kind": owner["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(owner: dict[str, Any], name: str, child_labels: dict[str, str],
                   annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner["metadata"].get("namespace", "default"),
        "labels": child_labels,
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta
