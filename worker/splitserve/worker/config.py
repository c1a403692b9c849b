"""Worker settings: flags, else `SPLITSERVE_*`/pod environment, else the service config document
(`--config`, the YAML the operator renders from the SplitService: model, the role's engine
limits, kvTransfer), else defaults.

This is the one place the worker reads its environment.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from splitserve.engine.config import EngineConfig

BUILTIN_MODELS = ("tiny", "small")
ROLES = ("prefill", "decode", "colocated")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "splitserve"


def builtin_model(size: str) -> Path:
    """The built-in checkpoint of `size`, written once into the user cache."""
    from splitserve.engine.tiny_model import SIZES, ensure_model

    if size not in SIZES:
        raise ValueError(f"model {size!r}: expected a directory or one of {sorted(SIZES)}")
    return ensure_model(cache_dir() / "models" / size, SIZES[size])


def resolve_model(model: str) -> Path:
    """A model directory, or the name of a built-in model."""
    if model in BUILTIN_MODELS:
        return builtin_model(model)
    path = Path(model)
    if not (path / "config.json").is_file():
        raise ValueError(f"model={model!r}: expected a Hugging Face directory with config.json "
                         f"or one of {list(BUILTIN_MODELS)}")
    return path


@dataclass(frozen=True)
class WorkerConfig:
    role: str
    model: str
    model_name: str
    host: str
    grpc_port: int
    http_port: int
    engine: EngineConfig
    namespace: str
    service: str
    pool: str
    reservation_timeout_s: float
    push_timeout_s: float
    max_message_bytes: int
    drain_timeout_s: float
    tls_dir: str
    tls_server_name: str


def parser() -> argparse.ArgumentParser:
    """Flags only; every default is applied in `from_args` (flag, else environment, else the
    config document, else the built-in default)."""
    p = argparse.ArgumentParser(prog="splitserve worker",
                                description="Run one splitserve worker process.")
    p.add_argument("--config", help="service config document (YAML) rendered by the operator: "
                   "model, the role's engine limits, kvTransfer")
    p.add_argument("--role", choices=ROLES, help="default: colocated")
    p.add_argument("--model",
                   help="model directory (Hugging Face layout) or a built-in name: tiny, small")
    p.add_argument("--model-name", help="name clients use; default: the model argument")
    p.add_argument("--host", help="address gRPC and HTTP listen on; default 127.0.0.1 "
                   "(0.0.0.0 in a pod)")
    p.add_argument("--grpc-port", type=int,
                   help="generation, control and KV transfer; 0 picks a free port")
    p.add_argument("--http-port", type=int,
                   help="health, drain and metrics; 0 picks a free port")
    p.add_argument("--dtype")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--block-size", type=int)
    p.add_argument("--num-blocks", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-batched-tokens", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--namespace")
    p.add_argument("--service")
    p.add_argument("--pool")
    p.add_argument("--reservation-timeout", type=float, help="seconds")
    p.add_argument("--push-timeout", type=float, help="seconds")
    p.add_argument("--max-message-bytes", type=int)
    p.add_argument("--drain-timeout", type=float, help="seconds")
    p.add_argument("--tls-dir",
                   help="tls.crt, tls.key and ca.crt (mTLS) for gRPC; empty = plaintext")
    p.add_argument("--tls-server-name", help="name in the workers' certificate, checked by peers")
    return p


def read_document(path: str | None, flag: str = "--config") -> dict[str, Any]:
    """The service config document, or {} when no path is given."""
    if not path:
        return {}
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{flag} {path}: cannot read the config document ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{flag} {path}: expected a mapping at the top level")
    return doc


def pick(*values: Any) -> Any:
    """The first value that is set (not None, not empty)."""
    return next((v for v in values if v is not None and v != ""), None)


def _number(kind: type[int] | type[float], value: Any, what: str) -> Any:
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what}={value!r}: expected a{'n integer' if kind is int else ' number'}"
                         ) from None


def from_args(argv: list[str], environ: Mapping[str, str] | None = None) -> WorkerConfig:
    a = parser().parse_args(argv)
    env = os.environ if environ is None else environ

    def e(name: str) -> str | None:
        return env.get(f"SPLITSERVE_{name}")

    doc = read_document(pick(a.config, e("CONFIG")))
    role = pick(a.role, e("ROLE"), "colocated")
    if role not in ROLES:
        raise ValueError(f"SPLITSERVE_ROLE={role!r}: expected one of {list(ROLES)}")
    model, kv = doc.get("model") or {}, doc.get("kvTransfer") or {}
    # a colocated worker generates tokens: it takes the decode pool's limits
    section = doc.get("decode" if role == "colocated" else role) or {}
    limits = section.get("engine") or {}
    timeout_ms = kv.get("transferTimeoutMs")

    def num(kind: type[int] | type[float], flag: Any, env_name: str, from_doc: Any,
            default: Any, what: str) -> Any:
        value = pick(flag, e(env_name), from_doc, default)
        return None if value is None else _number(kind, value, what)

    model_arg = pick(a.model, e("MODEL"), model.get("path"), "tiny")
    max_model_len = num(int, a.max_model_len, "MAX_MODEL_LEN", model.get("maxContext"), None,
                        "max-model-len")
    engine = EngineConfig(
        block_size=num(int, a.block_size, "BLOCK_SIZE", limits.get("blockSize"), 16,
                       "block-size"),
        num_blocks=num(int, a.num_blocks, "NUM_BLOCKS", limits.get("kvCacheBlocks"), 512,
                       "num-blocks"),
        max_num_seqs=num(int, a.max_num_seqs, "MAX_NUM_SEQS", limits.get("maxRunningSeqs"), 64,
                         "max-num-seqs"),
        max_num_batched_tokens=num(int, a.max_batched_tokens, "MAX_BATCHED_TOKENS",
                                   limits.get("maxBatchTokens"), 512, "max-batched-tokens"),
        max_model_len=max_model_len or None,
        dtype=pick(a.dtype, e("DTYPE"), model.get("dtype"), "float32"),
        device=pick(a.device, e("DEVICE"), "auto"),
    )
    cfg = WorkerConfig(
        role=role, model=model_arg,
        model_name=pick(a.model_name, e("MODEL_NAME"), model.get("name"), Path(model_arg).name),
        host=pick(a.host, e("HOST"), "127.0.0.1"),
        grpc_port=num(int, a.grpc_port, "GRPC_PORT", kv.get("port"), 50051, "grpc-port"),
        http_port=num(int, a.http_port, "HTTP_PORT", None, 8081, "http-port"),
        engine=engine,
        namespace=pick(a.namespace, e("NAMESPACE"), env.get("POD_NAMESPACE"),
                       doc.get("namespace"), "default"),
        service=pick(a.service, e("SERVICE"), doc.get("service"), "local"),
        pool=pick(a.pool, e("POOL"), role),
        reservation_timeout_s=num(float, a.reservation_timeout, "RESERVATION_TIMEOUT",
                                  None if timeout_ms is None else timeout_ms / 1000, 30.0,
                                  "reservation-timeout"),
        push_timeout_s=num(float, a.push_timeout, "PUSH_TIMEOUT", None, 60.0, "push-timeout"),
        max_message_bytes=num(int, a.max_message_bytes, "MAX_MESSAGE_BYTES",
                              kv.get("maxMessageBytes"), 256 << 20, "max-message-bytes"),
        drain_timeout_s=num(float, a.drain_timeout, "DRAIN_TIMEOUT", None, 120.0,
                            "drain-timeout"),
        tls_dir=pick(a.tls_dir, e("TLS_DIR")) or "",
        tls_server_name=pick(a.tls_server_name, e("TLS_SERVER_NAME"), "splitserve-worker"),
    )
    for name in ("grpc_port", "http_port"):
        if not 0 <= getattr(cfg, name) < 65536:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(cfg, name)}: expected 0..65535")
    return cfg
