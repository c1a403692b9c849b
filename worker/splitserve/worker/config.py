"""Worker settings: command-line flags with defaults from `SPLITSERVE_*` environment variables.

This is the one place the worker reads its environment.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from splitserve.engine.config import EngineConfig

BUILTIN_MODELS = ("tiny", "small")


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


def _env(name: str, default: str) -> str:
    return os.environ.get(f"SPLITSERVE_{name}", default)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitserve worker",
                                description="Run one splitserve worker process.")
    p.add_argument("--role", choices=("prefill", "decode", "colocated"),
                   default=_env("ROLE", "colocated"))
    p.add_argument("--model", default=_env("MODEL", "tiny"),
                   help="model directory (Hugging Face layout) or a built-in name: tiny, small")
    p.add_argument("--model-name", default=_env("MODEL_NAME", ""),
                   help="name clients use; default: the model argument")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"))
    p.add_argument("--grpc-port", type=int, default=int(_env("GRPC_PORT", "50051")),
                   help="0 picks a free port")
    p.add_argument("--http-port", type=int, default=int(_env("HTTP_PORT", "8081")),
                   help="health, drain and metrics; 0 picks a free port")
    p.add_argument("--dtype", default=_env("DTYPE", "float32"))
    p.add_argument("--device", default=_env("DEVICE", "auto"))
    p.add_argument("--block-size", type=int, default=int(_env("BLOCK_SIZE", "16")))
    p.add_argument("--num-blocks", type=int, default=int(_env("NUM_BLOCKS", "512")))
    p.add_argument("--max-num-seqs", type=int, default=int(_env("MAX_NUM_SEQS", "64")))
    p.add_argument("--max-batched-tokens", type=int,
                   default=int(_env("MAX_BATCHED_TOKENS", "512")))
    p.add_argument("--max-model-len", type=int, default=int(_env("MAX_MODEL_LEN", "0")) or None)
    p.add_argument("--namespace", default=_env("NAMESPACE", "default"))
    p.add_argument("--service", default=_env("SERVICE", "local"))
    p.add_argument("--pool", default=_env("POOL", ""))
    p.add_argument("--reservation-timeout", type=float,
                   default=float(_env("RESERVATION_TIMEOUT", "30")))
    p.add_argument("--push-timeout", type=float, default=float(_env("PUSH_TIMEOUT", "60")))
    p.add_argument("--max-message-bytes", type=int,
                   default=int(_env("MAX_MESSAGE_BYTES", str(256 << 20))))
    p.add_argument("--drain-timeout", type=float, default=float(_env("DRAIN_TIMEOUT", "120")))
    p.add_argument("--tls-dir", default=_env("TLS_DIR", ""),
                   help="tls.crt, tls.key and ca.crt (mTLS) for gRPC; empty = plaintext")
    p.add_argument("--tls-server-name", default=_env("TLS_SERVER_NAME", "splitserve-worker"),
                   help="name in the workers' certificate, checked by peers")
    return p


def from_args(argv: list[str]) -> WorkerConfig:
    a = parser().parse_args(argv)
    for name in ("grpc_port", "http_port"):
        if not 0 <= getattr(a, name) < 65536:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(a, name)}: expected 0..65535")
    engine = EngineConfig(
        block_size=a.block_size, num_blocks=a.num_blocks, max_num_seqs=a.max_num_seqs,
        max_num_batched_tokens=a.max_batched_tokens, max_model_len=a.max_model_len,
        dtype=a.dtype, device=a.device,
    )
    return WorkerConfig(
        role=a.role, model=a.model, model_name=a.model_name or Path(a.model).name,
        host=a.host, grpc_port=a.grpc_port, http_port=a.http_port, engine=engine,
        namespace=a.namespace, service=a.service, pool=a.pool or a.role,
        reservation_timeout_s=a.reservation_timeout, push_timeout_s=a.push_timeout,
        max_message_bytes=a.max_message_bytes, drain_timeout_s=a.drain_timeout,
        tls_dir=a.tls_dir, tls_server_name=a.tls_server_name,
    )
