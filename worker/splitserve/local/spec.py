"""A `SplitService` spec → the command lines of local workers and the router (pure but for
reading the YAML file and resolving the model directory)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import yaml

from splitserve.api import PoolSpec, SplitService

BUILTIN_SIZES = ("tiny", "small")
BUILTIN_PLACEHOLDER = "/builtin"


@dataclass(frozen=True)
class LocalPlan:
    service: SplitService
    builtin: str | None  # size of the built-in model when the spec names no weights

    @property
    def name(self) -> str:
        return str(self.service.metadata.get("name") or "local")

    @property
    def namespace(self) -> str:
        return str(self.service.metadata.get("namespace") or "default")


def parse_spec(raw: Any, source: str = "spec") -> LocalPlan:
    """A SplitService object (or just its `spec`) -> validated plan. `model.source` may be
    left out locally: the built-in model named by `model.name` (tiny or small; else tiny)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a SplitService mapping")
    obj = copy.deepcopy(raw) if "spec" in raw else {"spec": copy.deepcopy(raw)}
    obj.setdefault("metadata", {"name": "local"})
    model = obj["spec"].get("model") if isinstance(obj["spec"], dict) else None
    builtin = None
    if isinstance(model, dict) and "source" not in model:
        name = model.get("name")
        builtin = name if name in BUILTIN_SIZES else "tiny"
        model["source"] = {"hostPath": f"{BUILTIN_PLACEHOLDER}/{builtin}"}
    try:
        service = SplitService.model_validate(obj)
    except pydantic.ValidationError as exc:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}"
                             if e["loc"][:1] == ("spec",) else f"{e['loc']}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{source}: {problems}") from None
    return LocalPlan(service, builtin)


def load_spec(path: str | Path) -> LocalPlan:
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the spec ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from None
    return parse_spec(raw, str(path))


def model_dir(plan: LocalPlan) -> str:
    """The weights directory the workers load, or the built-in model's name."""
    if plan.builtin is not None:
        return plan.builtin
    src = plan.service.spec.model.source
    if src.host_path is None:
        kind = "pvc" if src.pvc is not None else "image"
        raise ValueError(f"spec.model.source.{kind}: weights on a {kind} are not reachable from "
                         "this machine; use source.hostPath, or leave source out for the "
                         "built-in tiny model")
    if not (Path(src.host_path) / "config.json").is_file():
        raise ValueError(f"spec.model.source.hostPath={src.host_path}: no config.json there")
    return src.host_path


def worker_args(plan: LocalPlan, role: str, model: str, host: str = "127.0.0.1"
                ) -> list[str]:
    spec = plan.service.spec
    pool: PoolSpec = spec.prefill if role == "prefill" else spec.decode
    e = pool.engine
    args = ["worker", "--role", role, "--model", model, "--model-name", spec.model.name,
            "--host", host, "--grpc-port", "0", "--http-port", "0",
            "--dtype", spec.model.dtype.value, "--block-size", str(e.block_size),
            "--max-num-seqs", str(e.max_running_seqs),
            "--max-batched-tokens", str(e.max_batch_tokens),
            "--namespace", plan.namespace, "--service", plan.name, "--pool", role,
            "--reservation-timeout", str(spec.kv_transfer.transfer_timeout_ms / 1000),
            "--max-message-bytes", str(spec.kv_transfer.max_message_bytes),
            "--drain-timeout", str(pool.drain_seconds)]
    if e.kv_cache_blocks is not None:
        args += ["--num-blocks", str(e.kv_cache_blocks)]
    if spec.model.max_context is not None:
        args += ["--max-model-len", str(spec.model.max_context)]
    return args


def router_args(plan: LocalPlan, model: str, prefill: list[str], decode: list[str],
                port: int, host: str = "127.0.0.1") -> list[str]:
    spec = plan.service.spec
    r = spec.router
    args = ["router", "--host", host, "--port", str(port), "--model", model,
            "--model-name", spec.model.name, "--discovery", "static",
            "--prefill", ",".join(prefill), "--decode", ",".join(decode),
            "--namespace", plan.namespace, "--service", plan.name,
            "--policy", r.policy.value, "--short-prompt-threshold", str(r.short_prompt_threshold),
            "--max-retries", str(r.max_retries),
            "--compression", spec.kv_transfer.compression.value,
            "--reservation-timeout-ms", str(spec.kv_transfer.transfer_timeout_ms),
            "--block-size", str(spec.decode.engine.block_size)]
    if spec.model.max_context is not None:
        args += ["--max-context", str(spec.model.max_context)]
    return args
