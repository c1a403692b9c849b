"""Fuzzed frames against the worker's gRPC services (Worker and KVTransfer) of real processes.

Raw bytes, random and malformed messages, oversized frames, bogus reservation ids, pushes whose
chunks come out of order, twice, too few or too many, and mismatched identities. Every call must
end with a clean status (never UNKNOWN or INTERNAL, which mean an unhandled exception), within a
deadline; afterwards the workers are alive, hold no reservation and no KV block, and serve a
normal disaggregated request token for token.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.kvtransfer.codec import encode_chunk
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.process import WorkerProcess, wait_for
from tests.integration.test_kv_transfer import disaggregated

MAX_MESSAGE = 1 << 20
CALL_TIMEOUT_S = 20.0
CLEAN = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ABORTED, grpc.StatusCode.UNAVAILABLE,
}
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SMALL = pb.SamplingParams(max_tokens=4, ignore_eos=True)

# (method path, kind) of every RPC but Drain, which would (correctly) stop the worker serving.
METHODS = [
    ("/splitserve.worker.v1.Worker/Generate", "unary_stream"),
    ("/splitserve.worker.v1.Worker/Reserve", "unary_unary"),
    ("/splitserve.worker.v1.Worker/Prefill", "unary_unary"),
    ("/splitserve.worker.v1.Worker/Health", "unary_unary"),
    ("/splitserve.worker.v1.Worker/Stats", "unary_unary"),
    ("/splitserve.kvtransfer.v1.KVTransfer/Push", "stream_unary"),
]


@pytest.fixture(scope="module")
def workers(tiny_model: Path, log_dir: Path) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    prefill = WorkerProcess("prefill", tiny_model, "--max-message-bytes", str(MAX_MESSAGE),
                            log_dir=log_dir)
    decode = WorkerProcess("decode", tiny_model, "--max-message-bytes", str(MAX_MESSAGE),
                           log_dir=log_dir)
    yield prefill, decode
    prefill.stop()
    decode.stop()


def outcome(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def assert_clean(code: grpc.StatusCode, details: str, what: str) -> None:
    assert code in CLEAN, f"{what}: {code.name} {details!r}"
    if code is not grpc.StatusCode.OK:
        assert details, f"{what}: {code.name} without a message"


def raw_call(channel: grpc.Channel, method: str, kind: str, frames: list[bytes]
             ) -> tuple[grpc.StatusCode, str]:
    ident = {"request_serializer": None, "response_deserializer": None}
    if kind == "unary_unary":
        return outcome(lambda: channel.unary_unary(method, **ident)(
            frames[0], timeout=CALL_TIMEOUT_S))
    if kind == "unary_stream":
        return outcome(lambda: channel.unary_stream(method, **ident)(
            frames[0], timeout=CALL_TIMEOUT_S))
    return outcome(lambda: channel.stream_unary(method, **ident)(
        iter(frames), timeout=CALL_TIMEOUT_S))


def settled(worker: WorkerProcess, after: str = "") -> None:
    """Alive, no reservation and no KV block left behind (blocks are freed on the engine loop,
    so they are waited for)."""
    assert worker.proc.poll() is None, f"{worker.role} worker died; see {worker.log_path}"
    wait_for(lambda: worker.stats().reservations == 0 and worker.stats().kv_blocks_used == 0
             and worker.stats().running == 0, 15,
             f"the {worker.role} worker to hold nothing {after}: {worker.stats()}")


def still_serves(prefill: WorkerProcess, decode: WorkerProcess, reference: LLMEngine,
                 rid: str) -> None:
    ids = reference.encode_prompt("After the fuzzing, a normal request. " * 3)
    want = reference.generate([ids], SamplingParams(max_tokens=8, ignore_eos=True))[0].token_ids
    got, _ = disaggregated(prefill, decode, rid, ids,
                           pb.SamplingParams(max_tokens=8, ignore_eos=True))
    assert got == want
    settled(prefill)
    settled(decode)


def no_tracebacks(worker: WorkerProcess) -> None:
    log = worker.log_path.read_text(errors="replace")
    assert "Traceback" not in log, f"{worker.role} worker logged an exception:\n{log[-4000:]}"


# ---- raw bytes ----------------------------------------------------------------------------

frames = st.one_of(
    st.binary(max_size=256),
    st.binary(min_size=1, max_size=16).map(lambda b: b * 64),  # repeated patterns
    st.just(b"\xff" * 11),  # overlong varint
    st.just(b"\x12\xff\xff\xff\xff\x0f"),  # field 2, length 2**32-1
    st.just(b"\x0a\x05ab"),  # a string field that runs past the end
)


@FUZZ
@given(method=st.sampled_from(METHODS), data=st.lists(frames, min_size=1, max_size=4))
def test_raw_bytes_get_a_clean_status(workers: tuple[WorkerProcess, WorkerProcess],
                                      method: tuple[str, str], data: list[bytes]) -> None:
    for worker in workers:
        code, details = raw_call(worker.channel, method[0], method[1], data)
        assert_clean(code, details, f"{worker.role} {method[0]} {data[:2]!r}")


def test_oversized_frames_are_refused_as_resource_exhausted(
        workers: tuple[WorkerProcess, WorkerProcess]) -> None:
    huge = b"\x0a" + b"\x80\x80\x40" + b"x" * (MAX_MESSAGE + 16)
    for worker in workers:
        for path, kind in METHODS:
            code, details = raw_call(worker.channel, path, kind, [huge])
            assert code is grpc.StatusCode.RESOURCE_EXHAUSTED, (path, code, details)


# ---- structured worker requests -----------------------------------------------------------

int32 = st.integers(-(2**31), 2**31 - 1)
token_ids = st.one_of(st.lists(st.integers(0, 255), min_size=1, max_size=12),
                      st.lists(st.one_of(st.integers(0, 300), int32), max_size=12))
floats = st.one_of(st.sampled_from([0.0, 1.0, 0.5]), st.floats(0, 1, width=32),
                   st.floats(allow_nan=True, allow_infinity=True, width=32))
sampling = st.builds(
    pb.SamplingParams,
    max_tokens=st.one_of(st.integers(0, 4), st.just(2**32 - 1)),
    temperature=floats, top_k=st.one_of(st.integers(0, 4), st.just(2**32 - 1)), top_p=floats,
    seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    stop=st.lists(st.text(max_size=4), max_size=5),
    stop_token_ids=st.lists(int32, max_size=3), ignore_eos=st.booleans(),
)
request_ids = st.one_of(st.text(max_size=12), st.sampled_from(["", "r", "x" * 300, "a/r1"]))
reservation_ids = st.one_of(st.text(max_size=12), st.sampled_from(["", "r/r1", "/r0"]))


def addresses(decode: WorkerProcess) -> st.SearchStrategy[str]:
    return st.sampled_from(["", "127.0.0.1:1", "not an address", "[::1", "localhost:99999",
                            decode.grpc_address])


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_structured_requests_get_a_clean_status(
        workers: tuple[WorkerProcess, WorkerProcess], data: st.DataObject) -> None:
    decode = workers[1]
    worker = data.draw(st.sampled_from(workers), "worker")
    rpc = data.draw(st.sampled_from(["Generate", "Reserve", "Prefill"]), "rpc")
    rid = data.draw(request_ids, "request_id")
    ids = data.draw(token_ids, "prompt")
    params = data.draw(sampling, "sampling")
    if rpc == "Generate":
        req: Any = pb.GenerateRequest(request_id=rid, prompt_token_ids=ids, sampling=params,
                                      reservation_id=data.draw(st.one_of(
                                          st.just(""), reservation_ids), "reservation"))
        code, details = outcome(lambda: worker.stub.Generate(req, timeout=CALL_TIMEOUT_S))
    elif rpc == "Reserve":
        req = pb.ReserveRequest(request_id=rid, prompt_token_ids=ids, sampling=params,
                                timeout_ms=data.draw(st.integers(0, 2000), "timeout_ms"))
        replies: list[pb.ReserveReply] = []
        code, details = outcome(lambda: replies.append(
            worker.stub.Reserve(req, timeout=CALL_TIMEOUT_S)))
        for reply in replies:  # a push from another model frees the reservation at once
            other = kv.PushHeader(reservation_id=reply.reservation_id)
            other.identity.CopyFrom(reply.identity)
            other.identity.weights_digest += "-other"
            refusal = [kv.PushMessage(header=other)]
            outcome(lambda: worker.kv.Push(iter(refusal), timeout=CALL_TIMEOUT_S))  # noqa: B023
    else:
        req = pb.PrefillRequest(
            request_id=rid, prompt_token_ids=ids, sampling=params,
            decode_address=data.draw(addresses(decode), "decode_address"),
            reservation_id=data.draw(reservation_ids, "reservation"),
            compression=cast(Any, data.draw(st.integers(0, 3), "compression")),
            chunk_blocks=data.draw(st.integers(0, 2**32 - 1), "chunk_blocks"))
        code, details = outcome(lambda: worker.stub.Prefill(req, timeout=CALL_TIMEOUT_S))
    assert_clean(code, details, f"{worker.role} {rpc} {req}")


# ---- KV pushes ----------------------------------------------------------------------------

def chunk_for(ident: kv.ModelIdentity, layer: int, first: int, n: int) -> kv.KVChunk:
    shape = (n, ident.block_size, ident.num_kv_heads, ident.head_dim)
    return encode_chunk(layer, first, torch.randn(shape), torch.randn(shape),
                        kv.COMPRESSION_NONE)


@dataclass(frozen=True)
class PushPlan:
    """A push, kept small for the report: header changes, chunks, end, trailing garbage."""

    alter: str  # which header field is spoiled, or "none" / "missing" (no header at all)
    value: Any
    chunks: tuple[tuple[int, int, int], ...]  # (layer, first block, blocks; 0 = empty chunk)
    end: tuple[int, int] | None  # (first token, chunks announced)
    trailing_header: bool

    def build(self, ident: kv.ModelIdentity, res: pb.ReserveReply, num_tokens: int
              ) -> list[kv.PushMessage]:
        header = kv.PushHeader(request_id="fuzz", reservation_id=res.reservation_id,
                               num_tokens=num_tokens)
        header.identity.CopyFrom(ident)
        if self.alter in ("reservation_id", "num_tokens", "compression"):
            setattr(header, self.alter, self.value)
        elif self.alter != "none" and self.alter != "missing":
            old = getattr(ident, self.alter)
            setattr(header.identity, self.alter, old + 1 if isinstance(old, int) else old + "x")
        messages = [] if self.alter == "missing" else [kv.PushMessage(header=header)]
        messages += [kv.PushMessage(chunk=chunk_for(ident, layer, first, n) if n
                                    else kv.KVChunk(layer=layer))
                     for layer, first, n in self.chunks]
        if self.end is not None:
            messages.append(kv.PushMessage(end=kv.PushEnd(first_token=self.end[0],
                                                          chunks=self.end[1])))
        if self.trailing_header:
            messages.append(kv.PushMessage(header=header))
        return messages


@st.composite
def pushes(draw: st.DrawFn, layers: int, blocks: int) -> PushPlan:
    """Pushes that are well-formed in parts: chunks in any order, repeated, missing or out of
    range, headers with a spoiled field, ends with any count and first token."""
    alter = draw(st.sampled_from(["none"] * 5 + [
        "reservation_id", "num_tokens", "compression", "missing", "architecture", "dtype",
        "weights_digest", "num_layers", "head_dim", "block_size"]))
    value: Any = None
    if alter == "reservation_id":
        value = draw(reservation_ids)
    elif alter == "num_tokens":
        value = draw(st.integers(0, 2**32 - 1))
    elif alter == "compression":
        value = draw(st.integers(1, 9))
    full = [(layer, 0, blocks) for layer in range(layers)] if draw(st.integers(0, 3)) else []
    extra = draw(st.one_of(st.just([]), st.lists(st.tuples(
        st.integers(0, layers), st.integers(0, blocks), st.integers(0, 2)), max_size=6)))
    chunks = draw(st.permutations(full + extra))
    end = None
    if draw(st.integers(0, 3)):
        end = (draw(st.one_of(st.integers(0, 255), int32)),
               draw(st.sampled_from([len(chunks)] * 3 + [len(chunks) + 1, 0])))
    return PushPlan(alter, value, tuple(chunks), end, draw(st.integers(0, 3)) == 0)


def summary(messages: list[kv.PushMessage]) -> str:
    def one(m: kv.PushMessage) -> str:
        if m.WhichOneof("body") == "header":
            h = m.header
            return f"header({h.reservation_id!r}, tokens={h.num_tokens}, c={h.compression})"
        if m.WhichOneof("body") == "chunk":
            return f"chunk(layer={m.chunk.layer}, {m.chunk.first_block}+{m.chunk.num_blocks})"
        return f"end(first_token={m.end.first_token}, chunks={m.end.chunks})"
    return "[" + ", ".join(one(m) for m in messages) + "]"


@settings(FUZZ, max_examples=30)
@given(data=st.data())
def test_fuzzed_pushes_are_refused_cleanly_and_leak_nothing(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine,
        data: st.DataObject) -> None:
    _, decode = workers
    ids = reference.encode_prompt("A reservation the fuzzer fills badly, or well. " * 2)
    rid = f"push-{uuid.uuid4().hex[:8]}"
    res = decode.stub.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=ids,
                                                sampling=SMALL, timeout_ms=1500), timeout=10)
    plan = data.draw(pushes(res.identity.num_layers, res.num_blocks), "push")
    messages = plan.build(res.identity, res, len(ids))
    code, details = outcome(lambda: decode.kv.Push(iter(messages), timeout=CALL_TIMEOUT_S))
    assert_clean(code, details, f"Push of {len(messages)} messages")
    generate_rid = data.draw(st.sampled_from([rid, rid, "someone-else"]), "generate_rid")
    if code is grpc.StatusCode.OK or data.draw(st.integers(0, 3), "generate anyway") == 0:
        code, details = outcome(lambda: decode.stub.Generate(pb.GenerateRequest(
            request_id=generate_rid, reservation_id=res.reservation_id),
            timeout=CALL_TIMEOUT_S))
        assert_clean(code, details, f"Generate {generate_rid} after the push")
    settled(decode, f"push {summary(messages)}, then Generate as {generate_rid}")


def complete_push(decode: WorkerProcess, reference: LLMEngine, rid: str, first_token: int
                  ) -> tuple[pb.ReserveReply, grpc.StatusCode, str]:
    ids = reference.encode_prompt("Every layer of every block, then the end. " * 2)
    res = decode.stub.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=ids,
                                                sampling=SMALL), timeout=10)
    layers = res.identity.num_layers
    plan = PushPlan("none", None, tuple((layer, 0, res.num_blocks) for layer in range(layers)),
                    (first_token, layers), False)
    code, details = outcome(lambda: decode.kv.Push(iter(plan.build(res.identity, res, len(ids))),
                                                   timeout=CALL_TIMEOUT_S))
    return res, code, details


def test_a_first_token_outside_the_vocabulary_is_refused_naming_the_field(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    decode = workers[1]
    _, code, details = complete_push(decode, reference, "bad-first-token", -1)
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "end.first_token=-1" in details
    settled(decode)


def test_generate_under_another_request_id_is_refused_and_frees_the_blocks(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    decode = workers[1]
    res, code, _ = complete_push(decode, reference, "owner", 7)
    assert code is grpc.StatusCode.OK
    code, details = outcome(lambda: decode.stub.Generate(pb.GenerateRequest(
        request_id="intruder", reservation_id=res.reservation_id), timeout=CALL_TIMEOUT_S))
    assert code is grpc.StatusCode.INVALID_ARGUMENT and "request_id='intruder'" in details
    settled(decode)


def test_workers_serve_normally_and_logged_no_exception_after_fuzzing(
        workers: tuple[WorkerProcess, WorkerProcess], reference: LLMEngine) -> None:
    prefill, decode = workers
    still_serves(prefill, decode, reference, "after-fuzz")
    for worker in workers:
        no_tracebacks(worker)
