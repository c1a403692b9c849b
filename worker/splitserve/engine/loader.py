"""Loads a Hugging Face layout directory into a `CausalLM` without a second copy of the weights.

Modules are built on the meta device; tensors are read from memory-mapped safetensors shards
one at a time (fused projections are concatenated) and assigned into the module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from splitserve.engine.config import ModelConfig
from splitserve.engine.model import CausalLM, Rotary
from splitserve.engine.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: CausalLM
    config: ModelConfig
    tokenizer: Tokenizer
    weights_digest: str  # identity of the checkpoint: see `weights_digest`
    path: Path


def read_config(path: str | Path) -> ModelConfig:
    root = Path(path)
    if not (root / "config.json").exists():
        raise ValueError(f"model directory {root} has no config.json")
    return ModelConfig.from_hf(json.loads((root / "config.json").read_text()))


def shard_files(root: Path) -> list[Path]:
    shards = sorted(root.glob("*.safetensors"))
    if not shards:
        raise ValueError(f"model directory {root} has no *.safetensors files")
    return shards


def weights_digest(root: Path) -> str:
    """blake2b over config.json and every shard's name and full contents, computed once at load.

    Peers exchange KV only under equal digests, so it must change whenever any weight does
    (a fine-tune that touches a few matrices included); hashing runs near memory speed.
    """
    h = hashlib.blake2b(digest_size=32)
    h.update((root / "config.json").read_bytes())
    for shard in shard_files(root):
        h.update(f"{shard.name}:{shard.stat().st_size}:".encode())
        with shard.open("rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def _checkpoint_name(name: str) -> list[str]:
    if name.endswith("qkv_proj.weight") or name.endswith("qkv_proj.bias"):
        base, kind = name.rsplit(".", 2)[0], name.rsplit(".", 1)[1]
        return [f"{base}.{p}_proj.{kind}" for p in ("q", "k", "v")]
    if name.endswith("gate_up_proj.weight"):
        base = name.rsplit(".", 2)[0]
        return [f"{base}.gate_proj.weight", f"{base}.up_proj.weight"]
    return [name]


def _build_state(
    model: CausalLM,
    config: ModelConfig,
    read: Callable[[str], torch.Tensor],
    dtype: torch.dtype,
    device: str,
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        hf_prefix = "" if name.startswith("lm_head") else "model."
        keys = [hf_prefix + n for n in _checkpoint_name(name)]
        parts = [read(key) for key in keys]
        # checkpoint layout: [out, in]; projections here are [in, out]
        transposed = name.endswith("_proj.weight")
        shape = tuple(param.shape[::-1]) if transposed else tuple(param.shape)
        for key, part in zip(keys, parts, strict=True):
            if tuple(part.shape[1:]) != shape[1:]:
                raise ValueError(f"checkpoint tensor {key} has shape {tuple(part.shape)}, "
                                 f"which does not fit {name} {shape} of config.json")
        tensor = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        if tuple(tensor.shape) != shape:
            raise ValueError(
                f"checkpoint tensors {keys} give {name} shape {tuple(tensor.shape)}, "
                f"config.json implies {shape}"
            )
        if transposed:
            tensor = tensor.t()
        state[name] = tensor.to(device=device, dtype=dtype).contiguous()
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def load_model(path: str | Path, dtype: str = "float32", device: str = "cpu") -> LoadedModel:
    root = Path(path)
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    config = read_config(root)
    tokenizer = Tokenizer.from_dir(root)
    torch_dtype = DTYPES[dtype]
    with torch.device("meta"):
        model = CausalLM(config)
    with ExitStack() as stack:
        handles = [stack.enter_context(safe_open(str(p), framework="pt", device="cpu"))
                   for p in shard_files(root)]
        index = {key: handle for handle in handles for key in handle.keys()}  # noqa: SIM118

        def read(key: str) -> torch.Tensor:
            if key not in index:
                raise ValueError(f"checkpoint {root} is missing tensor {key!r}")
            return index[key].get_tensor(key)

        state = _build_state(model, config, read, torch_dtype, device)
    model.load_state_dict(state, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    with torch.device(device):
        model.rotary = Rotary(config)
    model.eval()
    return LoadedModel(model, config, tokenizer, weights_digest(root), root)
