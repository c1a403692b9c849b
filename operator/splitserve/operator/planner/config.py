"""The engine configuration every worker and the router read, and its hash."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import yaml

from splitserve.api import SplitServiceSpec

CONFIG_KEY = "splitserve.yaml"
CONFIG_DIR = "/etc/splitserve"
MODEL_DIR = "/models"


def engine_config(spec: SplitServiceSpec, service: str, namespace: str) -> dict[str, Any]:
    """What the data plane needs to know, in one document (camelCase, like the CRD)."""
    wire = spec.to_wire()
    return {
        "service": service,
        "namespace": namespace,
        "model": {**wire["model"], "path": MODEL_DIR},
        "prefill": {"engine": wire["prefill"]["engine"]},
        "decode": {"engine": wire["decode"]["engine"]},
        "router": {k: v for k, v in wire["router"].items() if k not in ("resources", "replicas")},
        "kvTransfer": wire["kvTransfer"],
    }


def render_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=True)


def config_hash(data: dict[str, str]) -> str:
    """Stable short hash of a ConfigMap's data; changes roll the pods that read it."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return digest[:16]
