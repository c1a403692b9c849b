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


def engine_config(spec: SplitServiceSpec, service: str, namespace: str,
                  prefill_service: str = "", decode_service: str = "") -> dict[str, Any]:
    """What the data plane needs to know, in one document (camelCase, like the CRD). The
    workers read `model`, their role's `engine` and `kvTransfer`; the router reads `model`,
    `router` (with the pool Services it discovers workers through) and `kvTransfer`."""
    wire = spec.to_wire()
    router = {k: v for k, v in wire["router"].items() if k not in ("resources", "replicas")}
    if prefill_service:
        router["prefillService"] = prefill_service
    if decode_service:
        router["decodeService"] = decode_service
    return {
        "service": service,
        "namespace": namespace,
        "model": {**wire["model"], "path": MODEL_DIR},
        "prefill": {"engine": wire["prefill"]["engine"]},
        "decode": {"engine": wire["decode"]["engine"]},
        "router": router,
        "kvTransfer": wire["kvTransfer"],
    }


def render_config(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=True)


def config_hash(data: dict[str, str]) -> str:
    """Stable short hash of a ConfigMap's data; changes roll the pods that read it."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return digest[:16]
