"""Deterministic tiny Llama-family checkpoints in Hugging Face layout, made offline.

Same spec and seed give the same bytes. Weights are scaled so the top-1 logit is usually clear of
the runner-up (plain 0.02-std initialisation gives near-ties that make greedy comparisons flaky).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

MAKER_VERSION = 2  # bump when the same spec would be written differently
SPECIAL_TOKENS = ["<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                 "qwen2": "Qwen2ForCausalLM"}


@dataclass(frozen=True)
class TinySpec:
    arch: str = "llama"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 160
    vocab_size: int = 512
    max_position_embeddings: int = 1024
    tie_word_embeddings: bool = False
    rope_scaling: bool = False
    rope_theta: float = 10000.0
    seed: int = 0
    # a later version of the same model: same tokenizer and shapes, other weights (0 = first)
    revision: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch={self.arch!r}: expected one of {sorted(ARCHITECTURES)}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "vocab_size", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive integer")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, "
                f"num_kv_heads={self.num_kv_heads}: heads must divide hidden and kv heads "
                "must divide heads"
            )
        if self.revision < 0:
            raise ValueError(f"revision={self.revision}: expected 0 or more")
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size={self.vocab_size}: expected at least 300")


SIZES = {
    "tiny": TinySpec(),
    "small": TinySpec(hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=2,
                      intermediate_size=1536, vocab_size=8192, max_position_embeddings=8192),
}


def hf_config(spec: TinySpec) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURES[spec.arch]],
        "model_type": spec.arch,
        "vocab_size": spec.vocab_size,
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_layers,
        "num_attention_heads": spec.num_heads,
        "num_key_value_heads": spec.num_kv_heads,
        "head_dim": spec.hidden_size // spec.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": spec.max_position_embeddings,
        "rms_norm_eps": 1e-5,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "float32",
        "attention_dropout": 0.0,
    }
    if spec.arch == "llama":
        config["attention_bias"] = False
        config["mlp_bias"] = False
    if spec.arch == "mistral":
        config["sliding_window"] = None
    if spec.arch == "qwen2":
        config["use_sliding_window"] = False
        config["sliding_window"] = None
        config["max_window_layers"] = spec.num_layers
    if spec.rope_scaling:
        config["rope_scaling"] = {
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": max(16, spec.max_position_embeddings // 8),
        }
    return config


def make_weights(spec: TinySpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([spec.seed, spec.revision] if spec.revision else spec.seed)
    h, inter = spec.hidden_size, spec.intermediate_size
    head_dim = h // spec.num_heads
    q_out, kv_out = spec.num_heads * head_dim, spec.num_kv_heads * head_dim
    residual_scale = 1.0 / np.sqrt(2.0 * spec.num_layers)

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    def norm_weight() -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(h)).astype(np.float32)

    weights: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": normal((spec.vocab_size, h), 4.0 / np.sqrt(h)),
    }
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        weights[p + "input_layernorm.weight"] = norm_weight()
        weights[p + "self_attn.q_proj.weight"] = normal((q_out, h), 1 / np.sqrt(h))
        weights[p + "self_attn.k_proj.weight"] = normal((kv_out, h), 1 / np.sqrt(h))
        weights[p + "self_attn.v_proj.weight"] = normal((kv_out, h), 1 / np.sqrt(h))
        if spec.arch == "qwen2":
            weights[p + "self_attn.q_proj.bias"] = normal((q_out,), 0.2)
            weights[p + "self_attn.k_proj.bias"] = normal((kv_out,), 0.2)
            weights[p + "self_attn.v_proj.bias"] = normal((kv_out,), 0.2)
        weights[p + "self_attn.o_proj.weight"] = normal((h, q_out),
                                                        residual_scale / np.sqrt(q_out))
        weights[p + "post_attention_layernorm.weight"] = norm_weight()
        weights[p + "mlp.gate_proj.weight"] = normal((inter, h), 1 / np.sqrt(h))
        weights[p + "mlp.up_proj.weight"] = normal((inter, h), 1 / np.sqrt(h))
        weights[p + "mlp.down_proj.weight"] = normal((h, inter), residual_scale / np.sqrt(inter))
    weights["model.norm.weight"] = norm_weight()
    if not spec.tie_word_embeddings:
        weights["lm_head.weight"] = normal((spec.vocab_size, h), 4.0 / np.sqrt(h))
    return weights


def training_text(seed: int, num_sentences: int) -> list[str]:
    """The bundled corpus plus seeded made-up sentences, enough text for the BPE merges."""
    base = resources.files("splitserve.engine").joinpath("corpus.txt").read_text()
    lines = [line for line in base.splitlines() if line.strip()]
    rng = np.random.default_rng(seed + 7919)
    syllables = ["ka", "lo", "mi", "ren", "to", "sa", "vel", "qui", "dor", "an", "es", "ul",
                 "bri", "ne", "zo", "tha", "per", "gis", "mo", "ry"]
    lexicon = ["".join(rng.choice(syllables, size=int(rng.integers(1, 5))))
               for _ in range(12000)]
    real = " ".join(lines).replace(",", " ").replace(".", " ").split()
    words = np.array(lexicon + real)
    weights = 1.0 / np.arange(1, len(words) + 1) ** 0.7
    rng.shuffle(weights)
    weights /= weights.sum()
    for _ in range(num_sentences):
        sentence = " ".join(rng.choice(words, size=int(rng.integers(4, 16)), p=weights))
        lines.append(sentence.capitalize() + ".")
    return lines


def make_tokenizer_json(spec: TinySpec) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    sentences = max(2000, spec.vocab_size * 6)
    tokenizer.train_from_iterator(training_text(spec.seed, sentences), trainer=trainer)
    return tokenizer.to_str(pretty=False)


def tokenizer_config() -> dict[str, Any]:
    return {
        "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
        "chat_template": CHAT_TEMPLATE, "model_max_length": 1 << 20,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }


def write_model(out_dir: str | Path, spec: TinySpec) -> Path:
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(make_weights(spec), str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(spec), indent=2, sort_keys=True))
    (out / "tokenizer.json").write_text(make_tokenizer_json(spec))
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(), indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 1}, indent=2))
    (out / "splitserve_spec.json").write_text(json.dumps(_marker(spec), indent=2, sort_keys=True))
    return out


def _marker(spec: TinySpec) -> dict[str, Any]:
    fields = asdict(spec)
    if not spec.revision:
        del fields["revision"]  # first versions keep the marker they always had
    return {"maker_version": MAKER_VERSION, **fields}


def ensure_model(out_dir: str | Path, spec: TinySpec) -> Path:
    """Writes the checkpoint unless a complete one with the same spec is already there."""
    out = Path(out_dir)
    marker = out / "splitserve_spec.json"
    if marker.exists() and json.loads(marker.read_text()) == _marker(spec):
        return out
    return write_model(out, spec)


def default_model_dir(name: str) -> Path:
    """Where built-in checkpoints live: `${XDG_CACHE_HOME:-~/.cache}/splitserve/models/NAME`."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "splitserve" / "models" / name


def ensure_builtin(size: str = "tiny") -> Path:
    """The built-in checkpoint of a named size, written on first use."""
    if size not in SIZES:
        raise ValueError(f"size={size!r}: expected one of {sorted(SIZES)}")
    return ensure_model(default_model_dir(f"{size}-llama-s0"), SIZES[size])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="splitserve make-model", description=__doc__)
    parser.add_argument("out", help="directory to write the checkpoint into")
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES))
    parser.add_argument("--kv-heads", type=int, help="KV heads (equal to heads for MHA)")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--rope-scaling", action="store_true", help="llama3 rope scaling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--revision", type=int, default=0,
                        help="a later version of the model: same tokenizer, other weights")
    return parser.parse_args(argv)


def spec_from_args(args: argparse.Namespace) -> TinySpec:
    spec = replace(SIZES[args.size], seed=args.seed, rope_scaling=args.rope_scaling,
                   revision=args.revision)
    if args.arch:
        spec = replace(spec, arch=args.arch)
    if args.kv_heads:
        spec = replace(spec, num_kv_heads=args.kv_heads)
    if args.tied is not None:
        spec = replace(spec, tie_word_embeddings=args.tied)
    return spec


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        spec = spec_from_args(args)
    except ValueError as exc:
        print(f"splitserve make-model: {exc}", file=sys.stderr)
        return 2
    out = write_model(args.out, spec)
    print(f"wrote {out} ({spec.arch}, hidden {spec.hidden_size}, layers {spec.num_layers})")
    return 0
