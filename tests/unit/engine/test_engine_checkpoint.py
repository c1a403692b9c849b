"""The tiny-model maker and the loader: determinism, HF layout, shards, identity, bad input."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from splitserve.engine.config import EngineConfig, ModelConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.loader import load_model, weights_digest
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.tiny_model import SIZES, TinySpec, hf_config, main, write_model


def files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path) -> None:
    spec = TinySpec(num_layers=1)
    a = files(write_model(tmp_path / "a", spec))
    b = files(write_model(tmp_path / "b", spec))
    c = files(write_model(tmp_path / "c", TinySpec(num_layers=1, seed=5)))
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert set(a) >= {"config.json", "model.safetensors", "tokenizer.json",
                      "tokenizer_config.json"}


def test_make_model_command_and_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "m"), "--arch", "qwen2", "--kv-heads", "4", "--tied"]) == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["tie_word_embeddings"]
    assert config["num_key_value_heads"] == 4
    assert main([str(tmp_path / "bad"), "--kv-heads", "3"]) == 2
    assert "kv heads" in capsys.readouterr().err


def test_small_size_is_about_thirty_million_parameters() -> None:
    c = hf_config(SIZES["small"])
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
            c["num_key_value_heads"], c["vocab_size"], c["max_position_embeddings"]) == (
        512, 8, 8, 2, 8192, 8192)
    config = ModelConfig.from_hf(c)
    per_layer = 512 * (512 + 2 * 128) + 512 * 512 + 3 * 512 * config.intermediate_size
    total = 8 * per_layer + 2 * 8192 * 512
    assert 25e6 < total < 40e6


def test_tokenizer_round_trips_text(tiny_checkpoint: Path) -> None:
    loaded = load_model(tiny_checkpoint)
    assert loaded.tokenizer.vocab_size == loaded.config.vocab_size
    text = "The lighthouse keeper wrote 42 notes."
    ids = loaded.tokenizer.encode(text)
    assert ids[0] == loaded.tokenizer.bos_token_id
    assert loaded.tokenizer.decode(ids) == text


def test_sharded_checkpoint_loads_the_same_model(tiny_checkpoint: Path, tmp_path: Path) -> None:
    tensors = load_file(str(tiny_checkpoint / "model.safetensors"))
    names = sorted(tensors)
    shard_dir = tmp_path / "sharded"
    shard_dir.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (shard_dir / name).write_bytes((tiny_checkpoint / name).read_bytes())
    for i in range(3):
        part = {n: tensors[n] for n in names[i::3]}
        save_file(part, str(shard_dir / f"model-0000{i + 1}-of-00003.safetensors"))
    prompt = [[5, 17, 300, 2, 9]]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    one = LLMEngine.from_path(tiny_checkpoint, EngineConfig(device="cpu")).generate(prompt, params)
    many = LLMEngine.from_path(shard_dir, EngineConfig(device="cpu")).generate(prompt, params)
    assert one[0].token_ids == many[0].token_ids
    assert weights_digest(shard_dir) != weights_digest(tiny_checkpoint)


def test_weights_digest_is_stable_and_tracks_the_checkpoint(
    make_checkpoint: Callable[[TinySpec], Path], tiny_checkpoint: Path
) -> None:
    assert weights_digest(tiny_checkpoint) == weights_digest(tiny_checkpoint)
    assert load_model(tiny_checkpoint).weights_digest == weights_digest(tiny_checkpoint)
    other = make_checkpoint(TinySpec(num_kv_heads=4))
    assert weights_digest(other) != weights_digest(tiny_checkpoint)


def test_unsupported_architecture_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"GPT2LMHeadModel.*not supported"):
        load_model(tmp_path)


def test_missing_files_and_tensors_are_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no config\.json"):
        load_model(tmp_path)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_checkpoint / name).read_bytes())
    with pytest.raises(ValueError, match=r"no \*\.safetensors"):
        load_model(tmp_path)
    tensors = load_file(str(tiny_checkpoint / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    missing = re.escape("missing tensor 'model.layers.1.mlp.up_proj.weight'")
    with pytest.raises(ValueError, match=missing):
        load_model(tmp_path)
    tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=re.escape("up_proj.weight has shape (3, 3)")):
        load_model(tmp_path)


def test_bad_config_values_name_the_key() -> None:
    base = hf_config(TinySpec())
    with pytest.raises(ValueError, match="hidden_size=0"):
        ModelConfig.from_hf({**base, "hidden_size": 0})
    with pytest.raises(ValueError, match="rope_scaling type 'yarn'"):
        ModelConfig.from_hf({**base, "rope_scaling": {"rope_type": "yarn", "factor": 2.0}})
