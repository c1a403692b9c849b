"""KV hand-off benchmark on loopback, the `small` model, one run, ratios against baselines.

Figures (written to bench/results/kv_transfer.json):
- throughput_vs_raw_tcp: bytes/s of one KV push (gRPC, layer chunks, checksums) over bytes/s
  of a plain TCP socket moving the same number of bytes with large buffers between processes;
- ttft_overhead_fraction: (disaggregated TTFT - colocated TTFT) / colocated TTFT at 512, 2048
  and 8192 prompt tokens, medians of repeated runs;
- int8_bytes_over_bf16: bytes on the wire with int8 over bytes with bf16, same prompts;
- int8_greedy_agreement: share of greedy tokens equal with and without int8 on the wire, and
  the first-step logit deviation of the int8 path.
Usage: python bench/kv_transfer.py [--repeats N] [--parts throughput,ttft,int8]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.kvtransfer import kvtransfer_pb2 as kv
from splitserve.kvtransfer.codec import ChunkSpec, decode_chunk, encode_chunk
from splitserve.kvtransfer.sender import KVPush, PushOptions
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.config import builtin_model
from splitserve.worker.process import WorkerProcess

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (512, 2048, 8192)

TCP_SINK = r"""
import socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    want = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "little")
    buf = bytearray(16 << 20); view = memoryview(buf); got = 0
    while got < want:
        n = conn.recv_into(view, min(len(buf), want - got))
        if not n: break
        got += n
    conn.sendall(b"k"); conn.close()
"""


def log(msg: str) -> None:
    print(f"[kv_transfer] {msg}", flush=True)


def prompt_ids(engine: LLMEngine, n: int, salt: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(1000 + n + salt)
    return torch.randint(10, engine.model_config.vocab_size, (n,), generator=g).tolist()


def raw_tcp_seconds(payload: list[bytes]) -> float:
    sink = subprocess.Popen([sys.executable, "-c", TCP_SINK], stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None
        port = int(sink.stdout.readline())
        total = sum(len(p) for p in payload)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 << 20)
            t0 = time.perf_counter()
            s.sendall(total.to_bytes(8, "little"))
            for part in payload:
                s.sendall(part)
            s.recv(1)
            return time.perf_counter() - t0
    finally:
        sink.kill()


def push_seconds(decode: WorkerProcess, ident: kv.ModelIdentity, ids: list[int],
                 layers: list[tuple[torch.Tensor, torch.Tensor]], rid: str) -> tuple[float, int]:
    res = decode.stub.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=ids,
                                                sampling=pb.SamplingParams(max_tokens=1)))
    header = kv.PushHeader(request_id=rid, reservation_id=res.reservation_id, identity=ident,
                           num_tokens=len(ids))
    t0 = time.perf_counter()
    push = KVPush(decode.channel, header, PushOptions(chunk_blocks=0, timeout_s=120))
    for layer, (k, v) in enumerate(layers):
        push.send_layer(layer, k, v)
    ack = push.finish(first_token=1)
    elapsed = time.perf_counter() - t0
    list(decode.stub.Generate(pb.GenerateRequest(request_id=rid,
                                                 reservation_id=res.reservation_id)))
    return elapsed, ack.bytes_received


def throughput(decode: WorkerProcess, engine: LLMEngine, repeats: int) -> dict[str, float]:
    ids = prompt_ids(engine, engine.max_model_len - 1)
    health = decode.stub.Health(pb.HealthRequest())
    ident = health.identity
    c = engine.model_config
    blocks = -(-len(ids) // ident.block_size)
    shape = (blocks, ident.block_size, c.num_kv_heads, c.head_dim)
    layers = [(torch.randn(shape), torch.randn(shape)) for _ in range(c.num_layers)]
    grpc_s, nbytes = [], 0
    for i in range(repeats):
        s, nbytes = push_seconds(decode, ident, ids, layers, f"tput-{i}")
        grpc_s.append(s)
    payload = [t.contiguous().view(torch.uint8).numpy().tobytes() for kv_ in layers for t in kv_]
    tcp_s = [raw_tcp_seconds(payload) for _ in range(repeats)]
    g, t = statistics.median(grpc_s), statistics.median(tcp_s)
    log(f"push of {nbytes / 1e6:.1f} MB: gRPC {nbytes / g / 1e6:.0f} MB/s, "
        f"raw TCP {nbytes / t / 1e6:.0f} MB/s")
    return {"bytes": nbytes, "grpc_mb_s": nbytes / g / 1e6, "tcp_mb_s": nbytes / t / 1e6,
            "ratio": t / g}


def ttft_colocated(worker: WorkerProcess, ids: list[int], rid: str) -> float:
    t0 = time.perf_counter()
    stream = worker.stub.Generate(pb.GenerateRequest(
        request_id=rid, prompt_token_ids=ids, sampling=pb.SamplingParams(max_tokens=1)))
    next(iter(stream))
    elapsed = time.perf_counter() - t0
    list(stream)
    return elapsed


def ttft_disaggregated(prefill: WorkerProcess, decode: WorkerProcess, ids: list[int],
                       rid: str, compression: kv.Compression = kv.COMPRESSION_NONE
                       ) -> tuple[float, int]:
    sp = pb.SamplingParams(max_tokens=1)
    t0 = time.perf_counter()
    res = decode.stub.Reserve(pb.ReserveRequest(request_id=rid, prompt_token_ids=ids,
                                                sampling=sp, timeout_ms=600_000))
    first: list[float] = []

    def generate() -> None:
        stream = decode.stub.Generate(pb.GenerateRequest(request_id=rid,
                                                         reservation_id=res.reservation_id))
        next(iter(stream))
        first.append(time.perf_counter())
        list(stream)

    waiter = threading.Thread(target=generate)
    waiter.start()
    reply = prefill.stub.Prefill(pb.PrefillRequest(
        request_id=rid, prompt_token_ids=ids, sampling=sp, decode_address=decode.grpc_address,
        reservation_id=res.reservation_id, compression=compression))
    waiter.join()
    return first[0] - t0, reply.bytes_sent


def int8_quality(engine: LLMEngine, prompts: list[list[int]], max_tokens: int
                 ) -> dict[str, float]:
    """Greedy agreement and first-step logit deviation with the KV round-tripped through int8
    exactly as the wire does it, everything else equal (one engine, no prefix caching)."""
    c = engine.model_config
    agree = total = 0
    devs: list[float] = []
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True)
    for i, ids in enumerate(prompts):
        runs: dict[str, tuple[torch.Tensor, list[int]]] = {}
        for mode in ("exact", "int8"):
            src, dst = f"p{i}-{mode}", f"d{i}-{mode}"
            engine.add_request(src, ids, SamplingParams(max_tokens=1), hold_kv=True)
            first = [o for o in engine.stream() if o.request_id == src][-1].token_ids[0]
            blocks = engine.reserve(dst, ids, params)
            for layer in range(c.num_layers):
                k, v = engine.export_kv(src, layer)
                if mode == "int8":
                    spec = ChunkSpec(c.num_layers, len(blocks), engine.cache.block_size,
                                     c.num_kv_heads, c.head_dim, engine.cache.dtype,
                                     kv.COMPRESSION_INT8, 1 << 30)
                    got = decode_chunk(encode_chunk(layer, 0, k, v, kv.COMPRESSION_INT8), spec)
                    k, v = got.k, got.v
                engine.import_kv_layer(dst, layer, k, v)
            engine.release(src)
            engine.commit(dst, first)
            outs = engine.step()
            assert engine.last_logits is not None
            logits = engine.last_logits[0].clone()
            tokens = outs[0].token_ids
            for o in engine.stream():
                tokens = o.token_ids
            runs[mode] = (logits, tokens)
        devs.append(float((runs["exact"][0] - runs["int8"][0]).abs().max()))
        agree += sum(a == b for a, b in zip(runs["exact"][1], runs["int8"][1], strict=True))
        total += len(runs["exact"][1])
    return {"agreement": agree / total, "tokens": total, "logit_max_abs_dev": max(devs),
            "logit_mean_of_max_abs_dev": statistics.mean(devs)}


def conv_prompt_lengths(path: Path, n: int, cap: int) -> list[int]:
    rows = path.read_text().splitlines()[1:]
    step = max(1, len(rows) // n)
    return [max(8, min(cap, int(r.split(",")[1]))) for r in rows[::step][:n]]


PARTS = ("throughput", "ttft", "int8")


def measure_ttft(colocated: WorkerProcess, prefill: WorkerProcess, decode: WorkerProcess,
                 engine: LLMEngine, repeats: int) -> dict[str, object]:
    overhead: dict[str, float] = {}
    detail: dict[str, dict[str, float]] = {}
    for n in LENGTHS:
        size = min(n, engine.max_model_len - 1)  # room for the sampled token
        # a fresh prompt for every run, so no run is served from the prefix cache
        fresh = iter(prompt_ids(engine, size, salt=100 * i) for i in range(1, 10**6))
        ttft_colocated(colocated, next(fresh), f"warm-c{n}")
        ttft_disaggregated(prefill, decode, next(fresh), f"warm-d{n}")
        # alternate the two paths so background load hits both alike
        cols, diss = [], []
        for r in range(repeats):
            cols.append(ttft_colocated(colocated, next(fresh), f"c{n}-{r}"))
            diss.append(ttft_disaggregated(prefill, decode, next(fresh), f"d{n}-{r}")[0])
        col, dis = statistics.median(cols), statistics.median(diss)
        overhead[str(n)] = (dis - col) / col
        detail[str(n)] = {"prompt_tokens": size, "colocated_ttft_s": col,
                          "disaggregated_ttft_s": dis}
        log(f"{n} tokens: colocated TTFT {col * 1000:.0f} ms, disaggregated "
            f"{dis * 1000:.0f} ms, overhead {overhead[str(n)]:+.1%}")
    return {"ttft_overhead_fraction": overhead, "ttft": detail}


def measure_int8(model: Path, engine: LLMEngine, trace: Path, n_prompts: int, logs: Path
                 ) -> dict[str, object]:
    lengths = conv_prompt_lengths(trace, n_prompts, 2048)
    prompts = [prompt_ids(engine, n, salt=i) for i, n in enumerate(lengths)]
    log(f"int8 vs bf16 bytes on {len(prompts)} prompts (lengths from the conv trace)")
    limits = ["--num-blocks", "1100", "--max-batched-tokens", "2048", "--dtype", "bfloat16"]
    with WorkerProcess("prefill", model, *limits, log_dir=logs) as p, \
            WorkerProcess("decode", model, *limits, log_dir=logs) as d:
        b_full = b_int8 = 0
        for i, ids in enumerate(prompts):
            b_full += ttft_disaggregated(p, d, ids, f"bf-{i}")[1]
            b_int8 += ttft_disaggregated(p, d, ids, f"i8-{i}", kv.COMPRESSION_INT8)[1]
    log("int8 greedy agreement and logit deviation (fp32 cache)")
    quality = int8_quality(engine, prompts, max_tokens=32)
    return {"int8_bytes_over_bf16": b_int8 / b_full, "int8_greedy_agreement":
            quality["agreement"], "int8_quality": quality}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--trace", default=str(ROOT.parent / "shared" / "traces" /
                                           "AzureLLMInferenceTrace_conv.csv"))
    ap.add_argument("--prompts", type=int, default=24, help="benchmark prompts for int8")
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma-separated subset of throughput,ttft,int8; the others keep "
                         "their figures from an earlier run in --out")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kv_transfer.json"))
    args = ap.parse_args(argv)
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        ap.error(f"--parts={args.parts!r}: expected a subset of {','.join(PARTS)}")
    out = Path(args.out)
    result: dict[str, object] = json.loads(out.read_text()) if out.exists() else {}
    model = builtin_model("small")
    logs = Path(tempfile.mkdtemp(prefix="kv-bench-"))
    limits = ["--num-blocks", "1100", "--max-batched-tokens", "2048"]
    log("loading the small model in-process")
    engine = LLMEngine.from_path(model, EngineConfig(num_blocks=1100, enable_prefix_caching=False))
    if parts & {"throughput", "ttft"}:
        with WorkerProcess("colocated", model, *limits, log_dir=logs) as colocated, \
                WorkerProcess("prefill", model, *limits, log_dir=logs) as prefill, \
                WorkerProcess("decode", model, *limits, log_dir=logs) as decode:
            if "throughput" in parts:
                log("throughput: one 8k-token KV push vs raw TCP")
                tput = throughput(decode, engine, args.repeats)
                result.update(throughput_vs_raw_tcp=tput["ratio"], throughput=tput)
            if "ttft" in parts:
                result.update(measure_ttft(colocated, prefill, decode, engine, args.repeats))
    if "int8" in parts:
        result.update(measure_int8(model, engine, Path(args.trace), args.prompts, logs))
    result.update(model="small", command="python bench/kv_transfer.py")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    keys = ("throughput_vs_raw_tcp", "ttft_overhead_fraction", "int8_bytes_over_bf16",
            "int8_greedy_agreement")
    log(json.dumps({k: result.get(k) for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
