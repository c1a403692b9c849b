"""Turns pydantic's JSON Schema into a Kubernetes structural OpenAPI v3 schema.

Structural means: every node has a type (or is the int-or-string form), references are inlined,
`Optional` unions collapse to their non-null branch, and nothing preserves unknown fields unless
the model says so (only the pod template override does).
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

_DROPPED = {"title", "$defs", "discriminator"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI schema of `model`, with every description kept."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    return _convert(raw, defs, stack=())


def _resolve(node: dict[str, Any], defs: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    name = node["$ref"].rsplit("/", 1)[-1]
    if name in stack:
        raise ValueError(f"recursive schema through {name} cannot be structural")
    target = copy.deepcopy(defs[name])
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    merged = _convert(target, defs, (*stack, name))
    merged.update(_convert(siblings, defs, stack) if siblings else {})
    return merged


def _collapse_optional(node: dict[str, Any]) -> dict[str, Any]:
    branches = node["anyOf"]
    non_null = [b for b in branches if b.get("type") != "null"]
    if len(non_null) == len(branches) or len(non_null) != 1:
        return node
    out = {k: v for k, v in node.items() if k != "anyOf"}
    return {**non_null[0], **out}


def _convert(node: dict[str, Any], defs: dict[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(node, defs, stack)
    if "anyOf" in node:
        collapsed = _collapse_optional(node)
        if collapsed is not node:
            return _convert(collapsed, defs, stack)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _convert(sub, defs, stack) for name, sub in value.items()}
        elif key == "items" or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = _convert(value, defs, stack)
        elif key == "anyOf":
            out[key] = [_convert(b, defs, stack) for b in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        else:
            out[key] = copy.deepcopy(value)
    if isinstance(out.get("additionalProperties"), bool):
        del out["additionalProperties"]
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.pop("properties", None)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "required" in out and not out["required"]:
        del out["required"]
    return out


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every node of a structural schema with its dotted path (`.spec.prefill.replicas`)."""
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += walk(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        found += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += walk(schema["additionalProperties"], f"{path}{{}}")
    return found
