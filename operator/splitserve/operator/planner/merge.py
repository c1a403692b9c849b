"""Merging the user's pod template override, and comparing desired with observed objects."""

from __future__ import annotations

import copy
from typing import Any

from splitserve.api.base import parse_quantity

# lists whose items are identified by `name` and merged item by item
NAMED_LISTS = frozenset(
    {"containers", "initContainers", "volumes", "volumeMounts", "env", "ports", "imagePullSecrets"}
)


def merge_override(base: dict[str, Any], override: dict[str, Any] | None) -> dict[str, Any]:
    """`base` with `override` merged in: maps merge deeply, named lists merge by name, other
    values (and other lists) are replaced. Neither argument is modified."""
    result = copy.deepcopy(base)
    if not override:
        return result
    if not isinstance(override, dict):
        raise ValueError("podTemplateOverride must be an object")
    return _merge(result, copy.deepcopy(override), "podTemplateOverride")


def _merge(base: dict[str, Any], over: dict[str, Any], path: str) -> dict[str, Any]:
    for key, value in over.items():
        here = f"{path}.{key}"
        current = base.get(key)
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict) and isinstance(current, dict):
            base[key] = _merge(current, value, here)
        elif key in NAMED_LISTS and isinstance(value, list) and isinstance(current, list):
            base[key] = _merge_named(current, value, here)
        else:
            base[key] = value
    return base


def _merge_named(base: list[Any], over: list[Any], path: str) -> list[Any]:
    merged = list(base)
    index = {item.get("name"): i for i, item in enumerate(merged) if isinstance(item, dict)}
    for item in over:
        if not isinstance(item, dict) or not item.get("name"):
            raise ValueError(f"{path}: every item needs a name to merge by")
        if item["name"] in index:
            slot = index[item["name"]]
            merged[slot] = _merge(merged[slot], item, f"{path}[{item['name']}]")
        else:
            index[item["name"]] = len(merged)
            merged.append(item)
    return merged


def differences(desired: Any, observed: Any, path: str = "") -> list[str]:
    """Paths where `observed` does not already hold what `desired` asks for.

    Fields the API server adds (defaults, status, allocated IPs) are ignored: only keys present
    in `desired` are compared. Quantities compare by value (`1000m` equals `1`)."""
    if observed is None and desired in ({}, [], None):
        return []
    if isinstance(desired, dict):
        if not isinstance(observed, dict):
            return [path or "."]
        found: list[str] = []
        for key, value in desired.items():
            found += differences(value, observed.get(key), f"{path}.{key}")
        return found
    if isinstance(desired, list):
        if not isinstance(observed, list) or len(desired) != len(observed):
            return [path]
        found = []
        for i, (want, have) in enumerate(zip(desired, observed, strict=True)):
            found += differences(want, have, f"{path}[{i}]")
        return found
    if isinstance(desired, bool) or isinstance(observed, bool):
        return [] if desired is observed else [path]
    if desired == observed or _same_quantity(desired, observed):
        return []
    return [path]


def _same_quantity(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    if not isinstance(a, int | str) or not isinstance(b, int | str):
        return False
    try:
        return parse_quantity(a) == parse_quantity(b)
    except ValueError:
        return False
