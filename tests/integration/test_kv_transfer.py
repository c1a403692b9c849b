"""Prefill -> KV push over gRPC -> decode, between real worker processes."""

from __future__ import annotations

import grpc
import pytest

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.process import WorkerProcess, wait_for

PROMPTS = [
    "Hello",
    "The quick brown fox jumps over the lazy dog.",
    "Once upon a time " * 6,
    "A long story about a river and a mountain. " * 10,
    "Numbers: " + " ".join(str(i) for i in range(120)),
    "Short.",
    "Paged attention keeps the cache in blocks. " * 12,
    "Why is the sky blue? Because of scattering. " * 3,
]


def disaggregated(prefill: WorkerProcess, decode: WorkerProcess, request_id: str,
                  ids: list[int], sampling: pb.SamplingParams,
                  compression: kv.Compression = kv.COMPRESSION_NONE,
                  chunk_blocks: int = 2) -> tuple[list[int], pb.PrefillReply]:
    res = decode.stub.Reserve(pb.ReserveRequest(
        request_id=request_id, prompt_token_ids=ids, sampling=sampling), timeout=30)
    reply = prefill.stub.Prefill(pb.PrefillRequest(
        request_id=request_id, prompt_token_ids=ids, sampling=sampling,
        decode_address=decode.grpc_address, reservation_id=res.reservation_id,
        compression=compression, chunk_blocks=chunk_blocks), timeout=60)
    tokens: list[int] = []
    for chunk in decode.stub.Generate(pb.GenerateRequest(
            request_id=request_id, reservation_id=res.reservation_id), timeout=60):
        tokens += chunk.token_ids
    return tokens, reply


def test_disaggregated_equals_colocated_token_for_token(
        pair: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = pair
    before = decode.stats()
    for i, text in enumerate(PROMPTS):
        ids = reference.encode_prompt(text)
        want = reference.generate([ids], SamplingParams(max_tokens=24, ignore_eos=True))[0]
        got, reply = disaggregated(prefill, decode, f"eq-{i}", ids,
                                   pb.SamplingParams(max_tokens=24, ignore_eos=True))
        assert got == want.token_ids, f"prompt {i} ({len(ids)} tokens) diverged"
        assert reply.bytes_sent > 0
    after = decode.stats()
    assert after.kv_bytes_received > before.kv_bytes_received
    assert after.kv_blocks_used == before.kv_blocks_used and after.reservations == 0
    assert prefill.stats().kv_blocks_used == 0


def test_seeded_sampling_continues_identically_on_the_decode_side(
        pair: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = pair
    ids = reference.encode_prompt(PROMPTS[2])
    params = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, seed=1234,
                            ignore_eos=True)
    want = reference.generate([ids], params)[0].token_ids
    got, _ = disaggregated(prefill, decode, "seeded", ids, pb.SamplingParams(
        max_tokens=16, temperature=0.9, top_p=0.9, seed=1234, ignore_eos=True))
    assert got == want


def test_int8_on_the_wire_halves_the_bytes_and_keeps_greedy_tokens(
        pair: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = pair
    agree = total = 0
    full_bytes = small_bytes = 0
    for i, text in enumerate(PROMPTS):
        ids = reference.encode_prompt(text)
        sp = pb.SamplingParams(max_tokens=16, ignore_eos=True)
        exact, full = disaggregated(prefill, decode, f"f32-{i}", ids, sp)
        approx, small = disaggregated(prefill, decode, f"i8-{i}", ids, sp,
                                      compression=kv.COMPRESSION_INT8)
        full_bytes += full.bytes_sent
        small_bytes += small.bytes_sent
        agree += sum(a == b for a, b in zip(exact, approx, strict=True))
        total += len(exact)
    # fp32 cache: int8 values plus one float32 scale per token and head, over 4-byte values
    head_dim = reference.model_config.head_dim
    assert small_bytes <= (1 + 4 / head_dim) / 4 * full_bytes * 1.01
    assert agree / total >= 0.95, f"int8 greedy agreement {agree}/{total}"


def test_a_reservation_that_never_receives_expires_and_frees_its_blocks(
        pair: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    _, decode = pair
    base = decode.stats().kv_blocks_used
    ids = reference.encode_prompt(PROMPTS[3])
    res = decode.stub.Reserve(pb.ReserveRequest(
        request_id="never", prompt_token_ids=ids, timeout_ms=300,
        sampling=pb.SamplingParams(max_tokens=4)), timeout=10)
    assert res.num_blocks > 1
    assert decode.stats().kv_blocks_used == base + res.num_blocks
    wait_for(lambda: decode.stats().kv_blocks_used == base, 10, "the reservation to expire")
    with pytest.raises(grpc.RpcError) as err:
        list(decode.stub.Generate(pb.GenerateRequest(request_id="never",
                                                     reservation_id=res.reservation_id)))
    assert err.value.code() == grpc.StatusCode.ABORTED
    assert "unknown or expired" in err.value.details()
