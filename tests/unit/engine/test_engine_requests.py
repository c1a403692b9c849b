"""LLMEngine request handling: validation, sampling, stops, streaming, abort and KV hand-off."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def engine(tiny_checkpoint: Path) -> LLMEngine:
    return LLMEngine.from_path(tiny_checkpoint, EngineConfig(
        block_size=8, num_blocks=64, max_num_batched_tokens=64, max_model_len=128, device="cpu"))


def fresh(path: Path, **overrides: object) -> LLMEngine:
    settings: dict = dict(block_size=8, num_blocks=64, max_num_batched_tokens=64, device="cpu")
    settings.update(overrides)
    return LLMEngine.from_path(path, EngineConfig(**settings))


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"temperature": -1.0}, "temperature"),
    ({"top_k": -3}, "top_k"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": -1}, "seed"),
    ({"stop": ("",)}, "stop"),
    ({"stop_token_ids": (-4,)}, "stop_token_ids"),
])
def test_bad_sampling_params_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}="):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("kwargs,field", [
    ({"block_size": 0}, "block_size"), ({"num_blocks": -1}, "num_blocks"),
    ({"dtype": "int8"}, "dtype"), ({"device": "tpu"}, "device"),
])
def test_bad_engine_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"EngineConfig.{field}="):
        EngineConfig(**kwargs)


def test_bad_prompts_are_refused_and_change_nothing(engine: LLMEngine) -> None:
    free = engine.free_block_count()
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add_request("e1", "")
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.add_request("e2", [])
    with pytest.raises(ValueError, match="prompt has 128 tokens; the context limit is 128"):
        engine.add_request("e3", [5] * 128)
    with pytest.raises(ValueError, match=r"outside \[0, 512\)"):
        engine.add_request("e4", [5, 100000])
    engine.add_request("dup", [5, 6])
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request("dup", [5, 6])
    engine.abort("dup")
    assert not engine.has_unfinished() and engine.free_block_count() == free


def test_generation_stops_at_the_context_limit(engine: LLMEngine) -> None:
    [out] = engine.generate([[7] * 120], SamplingParams(max_tokens=50, ignore_eos=True))
    assert out.finish_reason == "length" and len(out.token_ids) == 8


def test_stop_token_ids_and_max_tokens(engine: LLMEngine) -> None:
    prompt = [9, 30, 41, 7]
    [free_run] = engine.generate([prompt], SamplingParams(max_tokens=12, ignore_eos=True))
    assert free_run.finish_reason == "length" and len(free_run.token_ids) == 12
    stop_at = free_run.token_ids[5]
    [stopped] = engine.generate([prompt], SamplingParams(
        max_tokens=12, stop_token_ids=(stop_at,), ignore_eos=True))
    first = free_run.token_ids.index(stop_at)
    assert stopped.finish_reason == "stop"
    assert stopped.token_ids == free_run.token_ids[: first + 1]


def test_stop_strings_cut_the_text(engine: LLMEngine) -> None:
    prompt = "The keeper wrote"
    [free_run] = engine.generate([prompt], SamplingParams(max_tokens=16, ignore_eos=True))
    text = free_run.text or ""
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop.strip(), text
    [stopped] = engine.generate([prompt], SamplingParams(max_tokens=16, stop=(stop,),
                                                         ignore_eos=True))
    assert stopped.finish_reason == "stop"
    assert stopped.text == text[: text.find(stop)]


def test_seeded_sampling_is_reproducible_in_any_batch(engine: LLMEngine) -> None:
    params = SamplingParams(max_tokens=10, temperature=0.9, top_k=50, top_p=0.9, seed=1234,
                            ignore_eos=True)
    [alone] = engine.generate([[11, 12, 13]], params)
    batch = engine.generate([[40, 41], [11, 12, 13], [50] * 20], params)
    assert batch[1].token_ids == alone.token_ids
    other = engine.generate([[11, 12, 13]], SamplingParams(
        max_tokens=10, temperature=0.9, seed=99, ignore_eos=True))
    greedy = engine.generate([[11, 12, 13]], SamplingParams(max_tokens=10, ignore_eos=True))
    assert other[0].token_ids != alone.token_ids or alone.token_ids != greedy[0].token_ids


def test_top_k_one_is_greedy(engine: LLMEngine) -> None:
    greedy = engine.generate([[3, 4, 5]], SamplingParams(max_tokens=8, ignore_eos=True))
    top1 = engine.generate([[3, 4, 5]], SamplingParams(max_tokens=8, temperature=1.5, top_k=1,
                                                       ignore_eos=True))
    assert greedy[0].token_ids == top1[0].token_ids


def test_tokens_stream_as_they_are_produced(engine: LLMEngine) -> None:
    engine.add_request("s1", [5, 6, 7], SamplingParams(max_tokens=5, ignore_eos=True))
    engine.add_request("s2", [8] * 30, SamplingParams(max_tokens=3, ignore_eos=True))
    seen: dict[str, list[int]] = {"s1": [], "s2": []}
    finals = {}
    for out in engine.stream():
        assert len(out.new_token_ids) == 1
        seen[out.request_id] += out.new_token_ids
        assert seen[out.request_id] == out.token_ids
        if out.finished:
            finals[out.request_id] = out
    assert len(seen["s1"]) == 5 and len(seen["s2"]) == 3 and set(finals) == {"s1", "s2"}


def test_abort_mid_generation_frees_blocks(engine: LLMEngine) -> None:
    free = engine.free_block_count()
    engine.add_request("a1", [5] * 40, SamplingParams(max_tokens=50, ignore_eos=True))
    engine.add_request("a2", [6] * 30, SamplingParams(max_tokens=50, ignore_eos=True))
    assert engine.stats().waiting == 2 and engine.stats().queued_prompt_tokens == 70
    engine.step()
    # the 64-token budget takes all 40 of a1 and 24 of a2: 5 + 3 blocks of 8
    assert engine.stats().running == 2 and engine.stats().kv_blocks_used == 8
    engine.abort("a2")
    assert engine.free_block_count() < free
    engine.abort("a1")
    assert engine.free_block_count() == free and not engine.has_unfinished()


def test_chat_template_renders_and_generates(engine: LLMEngine) -> None:
    text = engine.tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}])
    assert text == "<s><|user|>\nHi there</s>\n<|assistant|>\n"
    ids = engine.tokenizer.encode_chat([{"role": "user", "content": "Hi there"}])
    assert ids[0] == engine.tokenizer.bos_token_id and ids.count(engine.tokenizer.bos_token_id) == 1
    [out] = engine.generate([ids], SamplingParams(max_tokens=4, ignore_eos=True))
    assert len(out.token_ids) == 4
    with pytest.raises(ValueError, match=r"messages\[0\]"):
        engine.tokenizer.apply_chat_template([{"role": "user"}])


def test_kv_handoff_between_engines_continues_token_for_token(tiny_checkpoint: Path) -> None:
    """Prefill on one engine, move each layer's blocks into another engine's reservation, decode
    there: the answer is the colocated one."""
    prompt = [17, 99, 4, 250, 31, 8, 77, 120, 5, 64, 300, 2, 9, 10, 11, 12, 13, 14, 15]
    params = SamplingParams(max_tokens=10, ignore_eos=True)
    colocated = fresh(tiny_checkpoint).generate([prompt], params)[0].token_ids

    prefill = fresh(tiny_checkpoint, block_size=4, max_num_batched_tokens=8)
    decode = fresh(tiny_checkpoint, block_size=4)
    decode_free = decode.free_block_count()
    prefill.add_request("x", prompt, SamplingParams(max_tokens=1, ignore_eos=True), hold_kv=True)
    finals = [o for o in prefill.stream() if o.finished]
    assert prefill.counters.prefill_chunks > 0
    first = finals[0].token_ids[0]
    blocks, tokens = prefill.held_blocks("x")
    assert tokens == len(prompt) and len(blocks) == 5

    reserved = decode.reserve("x", prompt, params)
    assert len(reserved) == len(blocks)
    assert decode.stats().kv_blocks_reserved == len(blocks)
    assert prefill.stats().kv_blocks_reserved == len(blocks)
    for layer in range(prefill.model_config.num_layers):
        k, v = prefill.export_kv("x", layer)  # [blocks, block_size, kv_heads, head_dim]
        decode.import_kv_layer("x", layer, k, v)
    prefill.release("x")
    assert prefill.free_block_count() == prefill.config.num_blocks
    decode.commit("x", first)
    out = next(o for o in decode.stream() if o.finished)
    assert out.token_ids == colocated
    assert decode.free_block_count() == decode_free


def test_kv_import_rejects_mismatched_chunks_and_release_frees(tiny_checkpoint: Path) -> None:
    decode = fresh(tiny_checkpoint, block_size=4)
    free = decode.free_block_count()
    decode.reserve("y", [5] * 10, SamplingParams())
    good = torch.zeros(3, 4, 2, 16)
    with pytest.raises(ValueError, match="expected \\(3, 4, 2, 16\\)"):
        decode.import_kv_layer("y", 0, torch.zeros(2, 4, 2, 16), good)
    with pytest.raises(ValueError, match="dtype"):
        decode.import_kv_layer("y", 0, good.double(), good.double())
    with pytest.raises(ValueError, match="layer=9"):
        decode.import_kv_layer("y", 9, good, good)
    with pytest.raises(ValueError, match="holds no KV"):
        decode.import_kv_layer("nope", 0, good, good)
    decode.release("y")
    assert decode.free_block_count() == free


def test_kv_streams_layer_by_layer_during_the_prefill_step(tiny_checkpoint: Path) -> None:
    """Each layer's blocks are copied out from inside the step, right after that layer ran."""
    prompt = [23, 5, 88, 140, 7, 19, 301, 66, 2, 45, 11]
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    colocated = fresh(tiny_checkpoint).generate([prompt], params)[0].token_ids
    prefill, decode = fresh(tiny_checkpoint, block_size=4), fresh(tiny_checkpoint, block_size=4)
    decode.reserve("z", prompt, params)
    prefill.add_request("z", prompt, SamplingParams(max_tokens=1), hold_kv=True)
    sent: list[int] = []

    def ship(layer: int) -> None:
        completing = [i.seq.seq_id for i in prefill.in_flight.scheduled if i.completes]
        assert completing == ["z"]
        k, v = prefill.export_kv("z", layer)
        decode.import_kv_layer("z", layer, k, v)
        sent.append(layer)

    [out] = prefill.step(on_layer_done=ship)
    assert out.finished and sent == list(range(prefill.model_config.num_layers))
    prefill.release("z")
    decode.commit("z", out.token_ids[0])
    final = next(o for o in decode.stream() if o.finished)
    assert final.token_ids == colocated
