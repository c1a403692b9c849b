"""Failures of the KV hand-off between real processes: nothing stranded, nothing hung."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.tiny_model import SIZES, write_model
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.kvtransfer.codec import encode_chunk
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.process import WorkerProcess, wait_for
from tests.integration.test_kv_transfer import disaggregated

LONG = "Paged attention keeps the cache in blocks. " * 14  # ~450 tokens: many slow chunks
SAMPLING = pb.SamplingParams(max_tokens=8, ignore_eos=True)
# Stated deadline for a failure to surface, far below the 30 s reservation timeout: the fault
# must be noticed from the connection, not by waiting the reservation out.
FAULT_DEADLINE_S = 10.0


class Call(threading.Thread):
    """Runs one blocking RPC in the background and keeps its outcome."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.result: object = None
        self.error: grpc.RpcError | None = None
        self.finished_at = 0.0
        self.start()

    def run(self) -> None:
        try:
            self.result = self._fn()
        except grpc.RpcError as exc:
            self.error = exc
        self.finished_at = time.monotonic()


def freeze_mid_stream(victim: WorkerProcess, decode: WorkerProcess, prefill_call: Call) -> None:
    """Stops `victim` (SIGSTOP) while the push into `decode` is under way, then kills it."""
    wait_for(lambda: decode.stats().kv_bytes_received > 0 or not prefill_call.is_alive(),
             30, "the push to start")
    victim.proc.send_signal(signal.SIGSTOP)
    assert prefill_call.is_alive(), "the push finished before it could be interrupted"
    victim.kill()


@pytest.fixture
def workers(tiny_model: Path, log_dir: Path) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    # 8 tokens per prefill step: a long prompt takes many steps, so a push is long-lived.
    prefill = WorkerProcess("prefill", tiny_model, "--max-batched-tokens", "8",
                            log_dir=log_dir)
    decode = WorkerProcess("decode", tiny_model, "--max-message-bytes", str(1 << 20),
                           log_dir=log_dir)
    yield prefill, decode
    prefill.stop()
    decode.stop()


def start_request(prefill: WorkerProcess, decode: WorkerProcess, rid: str, ids: list[int]
                  ) -> tuple[pb.ReserveReply, Call, Call]:
    res = decode.stub.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=ids,
                                                sampling=SAMPLING), timeout=10)
    generate = Call(lambda: list(decode.stub.Generate(
        pb.GenerateRequest(request_id=rid, reservation_id=res.reservation_id), timeout=60)))
    prefill_call = Call(lambda: prefill.stub.Prefill(pb.PrefillRequest(
        request_id=rid, prompt_token_ids=ids, sampling=SAMPLING,
        decode_address=decode.grpc_address, reservation_id=res.reservation_id,
        chunk_blocks=1), timeout=60))
    return res, generate, prefill_call


def test_prefill_killed_mid_stream_frees_the_reservation_and_fails_retryably(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = workers
    base = decode.stats()
    ids = reference.encode_prompt(LONG)
    res, generate, prefill_call = start_request(prefill, decode, "killed-prefill", ids)
    freeze_mid_stream(prefill, decode, prefill_call)
    killed = time.monotonic()
    generate.join(FAULT_DEADLINE_S)
    assert not generate.is_alive(), "Generate hung after the prefill worker died"
    assert generate.error is not None and generate.error.code() == grpc.StatusCode.ABORTED
    assert generate.finished_at - killed < FAULT_DEADLINE_S
    wait_for(lambda: decode.stats().kv_blocks_used == base.kv_blocks_used, FAULT_DEADLINE_S,
             "the decode worker's blocks to be freed")
    assert decode.stats().reservations == 0
    assert decode.stats().kv_blocks_total - decode.stats().kv_blocks_used == \
        base.kv_blocks_total - base.kv_blocks_used
    assert res.num_blocks > 1


def test_decode_killed_mid_stream_makes_prefill_abort_promptly(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = workers
    ids = reference.encode_prompt(LONG)
    _, _, prefill_call = start_request(prefill, decode, "killed-decode", ids)
    freeze_mid_stream(decode, decode, prefill_call)
    killed = time.monotonic()
    prefill_call.join(FAULT_DEADLINE_S)
    assert not prefill_call.is_alive(), "Prefill hung after the decode worker died"
    assert prefill_call.error is not None
    assert prefill_call.error.code() == grpc.StatusCode.UNAVAILABLE
    assert prefill_call.finished_at - killed < FAULT_DEADLINE_S
    wait_for(lambda: prefill.stats().kv_blocks_used == 0, FAULT_DEADLINE_S,
             "the prefill worker's blocks to be freed")


def raw_push(decode: WorkerProcess, res: pb.ReserveReply, num_tokens: int,
             chunks: list[kv.KVChunk], identity: kv.ModelIdentity | None = None) -> kv.PushAck:
    header = kv.PushHeader(request_id="raw", reservation_id=res.reservation_id,
                           identity=identity or res.identity, num_tokens=num_tokens)
    messages = [kv.PushMessage(header=header)] + [kv.PushMessage(chunk=c) for c in chunks] + \
        [kv.PushMessage(end=kv.PushEnd(first_token=1, chunks=len(chunks)))]
    return decode.kv.Push(iter(messages), timeout=10)


def layer_chunk(res: pb.ReserveReply, num_blocks: int | None = None) -> kv.KVChunk:
    ident = res.identity
    n = num_blocks or res.num_blocks
    shape = (n, ident.block_size, ident.num_kv_heads, ident.head_dim)
    return encode_chunk(0, 0, torch.randn(shape), torch.randn(shape), kv.COMPRESSION_NONE)


def corrupted(res: pb.ReserveReply) -> kv.KVChunk:
    chunk = layer_chunk(res)
    data = bytearray(chunk.v)
    data[-1] ^= 0x01
    chunk.v = bytes(data)
    return chunk


def misshaped(res: pb.ReserveReply) -> kv.KVChunk:
    chunk = layer_chunk(res)
    chunk.shape[2] += 1
    return chunk


def oversized(res: pb.ReserveReply) -> kv.KVChunk:
    return layer_chunk(res, num_blocks=res.num_blocks * 64)


@pytest.mark.parametrize("make,codes,needle", [
    (corrupted, {grpc.StatusCode.INVALID_ARGUMENT}, "crc32"),
    (misshaped, {grpc.StatusCode.INVALID_ARGUMENT}, "chunk.shape"),
    (oversized, {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT}, ""),
], ids=["corrupted", "misshaped", "oversized"])
def test_bad_chunks_are_refused_and_nothing_else_is_affected(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine, make, codes,
        needle: str) -> None:
    prefill, decode = workers
    base = decode.stats().kv_blocks_used
    ids = reference.encode_prompt("Bad chunks must not hurt anyone else. " * 3)
    res = decode.stub.Reserve(pb.ReserveRequest(request_id="bad", prompt_token_ids=ids,
                                                sampling=SAMPLING), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        raw_push(decode, res, len(ids), [make(res)])
    assert err.value.code() in codes, err.value.details()
    assert needle in (err.value.details() or "")
    wait_for(lambda: decode.stats().kv_blocks_used == base, FAULT_DEADLINE_S,
             "the refused reservation's blocks to be freed")
    want = reference.generate([ids], SamplingParams(max_tokens=8, ignore_eos=True))[0].token_ids
    got, _ = disaggregated(prefill, decode, "after-bad", ids, SAMPLING)
    assert got == want


def test_a_push_from_a_different_model_is_refused_with_the_field_named(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine, tmp_path: Path,
        log_dir: Path) -> None:
    _, decode = workers
    base = decode.stats().kv_blocks_used
    ids = reference.encode_prompt("Which model are you?")
    other_model = write_model(tmp_path / "other", SIZES["tiny"].__class__(seed=7))
    other = WorkerProcess("prefill", other_model, log_dir=log_dir)
    try:
        res = decode.stub.Reserve(pb.ReserveRequest(request_id="other", prompt_token_ids=ids,
                                                    sampling=SAMPLING), timeout=10)
        with pytest.raises(grpc.RpcError) as err:
            other.stub.Prefill(pb.PrefillRequest(
                request_id="other", prompt_token_ids=ids, sampling=SAMPLING,
                decode_address=decode.grpc_address, reservation_id=res.reservation_id),
                timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "weights_digest" in err.value.details()
        assert other.stats().kv_blocks_used == 0
    finally:
        other.stop()
    wait_for(lambda: decode.stats().kv_blocks_used == base, FAULT_DEADLINE_S,
             "the refused reservation's blocks to be freed")
    ident = kv.ModelIdentity()
    ident.CopyFrom(res.identity)
    ident.weights_digest = "not-the-same"
    res2 = decode.stub.Reserve(pb.ReserveRequest(request_id="other2", prompt_token_ids=ids,
                                                 sampling=SAMPLING), timeout=10)
    with pytest.raises(grpc.RpcError) as err2:
        raw_push(decode, res2, len(ids), [], identity=ident)
    assert err2.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "weights_digest" in err2.value.details()
