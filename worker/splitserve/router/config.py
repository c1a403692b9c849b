"""Router settings: flags, else `SPLITSERVE_*`/pod environment, else the service config document
(`--config`, the YAML the operator renders from the SplitService), else defaults.

This is the one place the router reads its environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from splitserve.router.discovery import parse_static
from splitserve.router.policy import POLICIES
from splitserve.worker.config import pick as _pick
from splitserve.worker.config import read_document

COMPRESSIONS = {"none": "COMPRESSION_NONE", "int8": "COMPRESSION_INT8"}  # proto enum names


@dataclass(frozen=True)
class RouterConfig:
    host: str
    port: int
    model: str  # directory (or built-in name) holding tokenizer.json and config.json
    model_name: str
    max_context: int | None
    discovery: str  # "static" | "endpointslices"
    prefill: tuple[str, ...]
    decode: tuple[str, ...]
    namespace: str
    service: str
    prefill_service: str
    decode_service: str
    policy: str
    short_prompt_threshold: int
    max_retries: int
    max_inflight: int
    max_queue: int
    queue_timeout_s: float
    request_timeout_s: float
    reservation_timeout_ms: int
    compression: str
    block_size: int
    stats_interval_s: float
    drain_timeout_s: float
    tls_dir: str  # the workers' certificate files (mTLS); empty = plaintext gRPC
    tls_server_name: str
    api_keys_file: str  # accepted API keys, one per line; empty = no keys required


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitserve router",
                                description="Run the OpenAI-compatible router.")
    p.add_argument("--config", help="service config document (YAML) rendered by the operator")
    p.add_argument("--host")
    p.add_argument("--port", type=int, help="0 picks a free port")
    p.add_argument("--model", help="model directory (tokenizer, config.json) or built-in name")
    p.add_argument("--model-name", help="the name clients pass as `model`")
    p.add_argument("--max-context", type=int)
    p.add_argument("--discovery", choices=("static", "endpointslices"))
    p.add_argument("--prefill", help="static prefill workers: host:port,host:port")
    p.add_argument("--decode", help="static decode workers: host:port,host:port")
    p.add_argument("--namespace")
    p.add_argument("--service")
    p.add_argument("--prefill-service")
    p.add_argument("--decode-service")
    p.add_argument("--policy", choices=POLICIES)
    p.add_argument("--short-prompt-threshold", type=int)
    p.add_argument("--max-retries", type=int)
    p.add_argument("--max-inflight", type=int)
    p.add_argument("--max-queue", type=int)
    p.add_argument("--queue-timeout", type=float)
    p.add_argument("--request-timeout", type=float)
    p.add_argument("--reservation-timeout-ms", type=int)
    p.add_argument("--compression", choices=sorted(COMPRESSIONS))
    p.add_argument("--block-size", type=int)
    p.add_argument("--stats-interval", type=float)
    p.add_argument("--drain-timeout", type=float)
    p.add_argument("--tls-dir", help="tls.crt, tls.key and ca.crt of the workers' gRPC (mTLS); "
                   "empty = plaintext")
    p.add_argument("--tls-server-name", help="name in the workers' certificate")
    p.add_argument("--api-keys-file", help="file of accepted API keys, one per line, re-read "
                   "when it changes; /v1/* then needs `Authorization: Bearer <key>`")
    return p


def from_args(argv: list[str], environ: Mapping[str, str] | None = None) -> RouterConfig:
    a = parser().parse_args(argv)
    env = os.environ if environ is None else environ

    def e(name: str) -> str | None:
        return env.get(f"SPLITSERVE_{name}")

    doc = read_document(_pick(a.config, e("CONFIG")))
    model, router = doc.get("model") or {}, doc.get("router") or {}
    kv = doc.get("kvTransfer") or {}
    engine = (doc.get("decode") or {}).get("engine") or {}
    model_dir = _pick(a.model, e("MODEL"), model.get("path"), "tiny")
    discovery = _pick(a.discovery, e("DISCOVERY"), "static")
    cfg = RouterConfig(
        host=_pick(a.host, e("HOST"), "127.0.0.1"),
        port=int(_pick(a.port, e("PORT"), router.get("port"), 8000)),
        model=model_dir,
        model_name=_pick(a.model_name, e("MODEL_NAME"), model.get("name"),
                         Path(model_dir).name),
        max_context=_pick(a.max_context, model.get("maxContext")),
        discovery=discovery,
        prefill=tuple(parse_static(_pick(a.prefill, e("PREFILL_WORKERS")) or "", "--prefill")),
        decode=tuple(parse_static(_pick(a.decode, e("DECODE_WORKERS")) or "", "--decode")),
        namespace=_pick(a.namespace, env.get("POD_NAMESPACE"), doc.get("namespace"),
                        "default"),
        service=_pick(a.service, e("SERVICE"), doc.get("service"), "local"),
        prefill_service=_pick(a.prefill_service, e("PREFILL_SERVICE"),
                              router.get("prefillService")) or "",
        decode_service=_pick(a.decode_service, e("DECODE_SERVICE"),
                             router.get("decodeService")) or "",
        policy=_pick(a.policy, router.get("policy"), "least-loaded"),
        short_prompt_threshold=int(_pick(a.short_prompt_threshold,
                                         router.get("shortPromptThreshold"), 64)),
        max_retries=int(_pick(a.max_retries, router.get("maxRetries"), 2)),
        max_inflight=int(_pick(a.max_inflight, e("MAX_INFLIGHT"), 256)),
        max_queue=int(_pick(a.max_queue, e("MAX_QUEUE"), 1024)),
        queue_timeout_s=float(_pick(a.queue_timeout, e("QUEUE_TIMEOUT"), 30.0)),
        request_timeout_s=float(_pick(a.request_timeout, e("REQUEST_TIMEOUT"), 600.0)),
        reservation_timeout_ms=int(_pick(a.reservation_timeout_ms,
                                         kv.get("transferTimeoutMs"), 30_000)),
        compression=_pick(a.compression, kv.get("compression"), "none"),
        block_size=int(_pick(a.block_size, engine.get("blockSize"), 16)),
        stats_interval_s=float(_pick(a.stats_interval, e("STATS_INTERVAL"), 0.5)),
        drain_timeout_s=float(_pick(a.drain_timeout, e("DRAIN_TIMEOUT"), 30.0)),
        tls_dir=_pick(a.tls_dir, e("TLS_DIR")) or "",
        tls_server_name=_pick(a.tls_server_name, e("TLS_SERVER_NAME"), "splitserve-worker"),
        api_keys_file=_pick(a.api_keys_file, e("API_KEYS_FILE")) or "",
    )
    _validate(cfg)
    return cfg


def _validate(cfg: RouterConfig) -> None:
    if not 0 <= cfg.port < 65536:
        raise ValueError(f"--port={cfg.port}: expected 0..65535")
    if cfg.policy not in POLICIES:
        raise ValueError(f"policy={cfg.policy!r}: expected one of {list(POLICIES)}")
    if cfg.compression not in COMPRESSIONS:
        raise ValueError(f"compression={cfg.compression!r}: expected one of "
                         f"{sorted(COMPRESSIONS)}")
    if cfg.discovery == "static" and not cfg.decode:
        raise ValueError("--decode: static discovery needs at least one decode worker")
    if cfg.discovery == "endpointslices" and not (cfg.prefill_service and cfg.decode_service):
        raise ValueError("endpointslices discovery needs --prefill-service and --decode-service "
                         "(or SPLITSERVE_PREFILL_SERVICE / SPLITSERVE_DECODE_SERVICE)")
    for name in ("short_prompt_threshold", "max_retries", "max_queue"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(cfg, name)}: expected >= 0")
    if cfg.max_inflight < 1:
        raise ValueError(f"--max-inflight={cfg.max_inflight}: expected >= 1")
