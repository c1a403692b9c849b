"""Goodput (DistServe): the highest request rate at which at least 90% of requests meet both the
TTFT and the TPOT SLO — disaggregated (1 prefill + 1 decode worker) against colocated (2
colocated workers, chunked prefill on), each worker on one CPU thread, both behind the router,
the `small` built-in model, request lengths from the Azure conversation trace scaled down to
this machine.

SLOs are fixed before any load, from this run's idle engine (one worker process, same thread
count, nothing else running on it):
TTFT SLO = 3x the idle prefill time of the median prompt; TPOT SLO = 1.5x the idle
single-sequence decode step. Each setup is swept over Poisson arrival rates (growing by
`--step` until attainment falls below `--floor`); goodput is the highest rate whose attainment
reaches 90% (interpolated between the measured rates).

Writes bench/results/goodput.json and docs/goodput.png.
Usage: nice python bench/goodput.py [--duration S] [--start RPS] [--step X] [--max-rates N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from splitserve.local.processes import Child
from splitserve.local.stack import ROUTER_READY, WORKER_READY
from splitserve.worker.config import builtin_model

ROOT = Path(__file__).resolve().parents[1]
TRACE_NAME = "AzureLLMInferenceTrace_conv.csv"
TARGET = 0.9
THREADS = "1"  # torch threads per worker process (and for the idle SLO engine)
MAX_CONTEXT = 2048


@dataclass(frozen=True)
class Shape:
    prompt: int
    output: int


def find_trace() -> Path:
    """`../shared/traces/` next to the checkout (or next to any folder above it)."""
    for parent in ROOT.parents:
        candidate = parent / "shared" / "traces" / TRACE_NAME
        if candidate.is_file():
            return candidate
    raise SystemExit(f"{TRACE_NAME} not found in shared/traces above {ROOT}")


def trace_shapes(path: Path, prompt_scale: float, output_scale: float, cap_prompt: int,
                 cap_output: int) -> list[Shape]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [Shape(max(8, min(cap_prompt, int(int(r["ContextTokens"]) * prompt_scale))),
                  max(2, min(cap_output, int(int(r["GeneratedTokens"]) * output_scale))))
            for r in rows]


def idle_slos(model: Path, median_prompt: int, log_dir: Path) -> dict[str, float]:
    """Idle prefill time of the median prompt and idle single-sequence decode step (seconds),
    measured on one worker process of this run (same thread count, same machine load as the
    sweeps), with nothing else running on it."""
    import grpc

    from splitserve.worker import worker_pb2 as pb
    from splitserve.worker import worker_pb2_grpc as pb_grpc

    os.environ["OMP_NUM_THREADS"] = THREADS
    worker = Child("idle-colocated", ["worker", "--role", "colocated", "--model", str(model),
                                      "--grpc-port", "0", "--http-port", "0", "--dtype",
                                      "float32", "--num-blocks", "512", "--max-batched-tokens",
                                      "512", "--max-model-len", str(MAX_CONTEXT)],
                   log_dir / "idle-colocated.log", WORKER_READY)
    worker.start()
    try:
        worker.wait_ready(900)
        channel = grpc.insecure_channel(worker.ready_fields["grpc"])
        stub = pb_grpc.WorkerStub(channel)
        rng = random.Random(0)
        prefill, steps = [], []
        for i in range(6):
            prompt = [rng.randrange(10, 8000) for _ in range(median_prompt)]
            started = time.perf_counter()
            list(stub.Generate(pb.GenerateRequest(
                request_id=f"idle-p{i}", prompt_token_ids=prompt,
                sampling=pb.SamplingParams(max_tokens=1, ignore_eos=True))))
            prefill.append(time.perf_counter() - started)
            stamps = [time.perf_counter() for _ in stub.Generate(pb.GenerateRequest(
                request_id=f"idle-d{i}", prompt_token_ids=prompt[:32],
                sampling=pb.SamplingParams(max_tokens=33, ignore_eos=True)))]
            steps.append((stamps[-1] - stamps[0]) / (len(stamps) - 1))
        channel.close()
    finally:
        worker.stop(30)
    prefill_s, step_s = statistics.median(prefill[1:]), statistics.median(steps[1:])
    return {"idle_prefill_ms": prefill_s * 1e3, "idle_decode_step_ms": step_s * 1e3,
            "ttft_ms": 3 * prefill_s * 1e3, "tpot_ms": 1.5 * step_s * 1e3}


class Setup:
    """Workers and a router as processes; `roles` like ["prefill", "decode"]."""

    def __init__(self, name: str, roles: list[str], model: Path, log_dir: Path) -> None:
        self.name = name
        common = ["--model", str(model), "--model-name", "small", "--grpc-port", "0",
                  "--http-port", "0", "--dtype", "float32", "--num-blocks", "1024",
                  "--max-batched-tokens", "512", "--max-model-len", str(MAX_CONTEXT)]
        self.workers = [Child(f"{name}-{r}-{i}", ["worker", "--role", r, *common],
                              log_dir / f"{name}-{r}-{i}.log", WORKER_READY)
                        for i, r in enumerate(roles)]
        self.router: Child | None = None
        self.model = model
        self.log_dir = log_dir

    def start(self) -> str:
        os.environ["OMP_NUM_THREADS"] = THREADS
        os.environ["MKL_NUM_THREADS"] = THREADS
        for w in self.workers:
            w.start()
        for w in self.workers:
            w.wait_ready(900)
        prefill = [w.ready_fields["grpc"] for w in self.workers if "-prefill-" in w.name]
        decode = [w.ready_fields["grpc"] for w in self.workers if "-prefill-" not in w.name]
        args = ["router", "--port", "0", "--model", str(self.model), "--model-name", "small",
                "--decode", ",".join(decode), "--short-prompt-threshold", "0",
                "--max-context", str(MAX_CONTEXT)]
        if prefill:
            args += ["--prefill", ",".join(prefill)]
        self.router = Child(f"{self.name}-router", args, self.log_dir / f"{self.name}-router.log",
                            ROUTER_READY)
        self.router.start()
        self.router.wait_ready(300)
        return "http://" + self.router.ready_fields["http"]

    def stop(self) -> None:
        if self.router is not None:
            self.router.stop(20)
        for w in self.workers:
            w.terminate()
        for w in self.workers:
            w.stop(30)


@dataclass
class Result:
    ttft: float | None = None
    tpot: float | None = None
    ok: bool = False


async def one(session: aiohttp.ClientSession, url: str, shape: Shape, seed: int) -> Result:
    rng = random.Random(seed)
    body = {"model": "small", "prompt": [rng.randrange(10, 8000) for _ in range(shape.prompt)],
            "max_tokens": shape.output, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    try:
        async with session.post(url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                return Result()
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                if event.get("choices"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
    except (TimeoutError, aiohttp.ClientError):
        return Result()
    if first is None or last is None or tokens < 1:
        return Result()
    tpot = (last - first) / (tokens - 1) if tokens > 1 else 0.0
    return Result(first - started, tpot, True)


async def load(url: str, rate: float, duration_s: float, shapes: list[Shape], seed: int
               ) -> list[Result]:
    rng = random.Random(seed)
    timeout = aiohttp.ClientTimeout(total=duration_s + 120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = []
        t = 0.0
        started = time.perf_counter()
        i = 0
        while t < duration_s:
            delay = started + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # Poisson arrival schedule
            tasks.append(asyncio.create_task(one(session, url, rng.choice(shapes), seed * 7 + i)))
            i += 1
            t += rng.expovariate(rate)
        return list(await asyncio.gather(*tasks))


def attainment(results: list[Result], slo: dict[str, float]) -> float:
    good = [r for r in results if r.ok and r.ttft is not None and r.tpot is not None
            and r.ttft * 1e3 <= slo["ttft_ms"] and r.tpot * 1e3 <= slo["tpot_ms"]]
    return len(good) / len(results) if results else 0.0


def goodput(points: list[tuple[float, float]]) -> float:
    """Highest rate with attainment >= TARGET, interpolated where the curve crosses it."""
    best = 0.0
    for (r0, a0), (r1, a1) in itertools.pairwise(points):
        if a0 >= TARGET:
            best = r0
            if a1 < TARGET:
                return r0 + (r1 - r0) * (a0 - TARGET) / (a0 - a1)
    if points and points[-1][1] >= TARGET:
        best = points[-1][0]
    return best


def side_by_side(curves: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Attainment of every setup at each rate all of them were measured at."""
    by = {name: {round(p["rate"], 3): p["attainment"] for p in pts}
          for name, pts in curves.items()}
    common = sorted(set.intersection(*(set(v) for v in by.values()))) if by else []
    return {f"{r:g}": {name: round(by[name][r], 3) for name in by} for r in common}


def sweep(setup: Setup, shapes: list[Shape], slo: dict[str, float], args: argparse.Namespace
          ) -> list[dict[str, float]]:
    url = setup.start()
    out = []
    try:
        asyncio.run(load(url, 1.0, 3.0, shapes, 999))  # warm-up
        rate = args.start
        for i in range(args.max_rates):
            results = asyncio.run(load(url, rate, args.duration, shapes, 100 + i))
            att = attainment(results, slo)
            ok = [r for r in results if r.ok]
            point = {"rate": rate, "attainment": att, "requests": len(results),
                     "failed": len(results) - len(ok),
                     "ttft_p50_ms": 1e3 * statistics.median([r.ttft or 0 for r in ok]) if ok
                     else None,
                     "tpot_p50_ms": 1e3 * statistics.median([r.tpot or 0 for r in ok]) if ok
                     else None}
            out.append(point)
            print(f"  {setup.name:<14} rate {rate:5.2f}/s  attainment {att:5.1%}  "
                  f"n={len(results)}  ttft p50 {point['ttft_p50_ms'] or 0:.0f} ms  "
                  f"tpot p50 {point['tpot_p50_ms'] or 0:.1f} ms", flush=True)
            if att < args.floor:
                break
            rate *= args.step
    finally:
        setup.stop()
    return out


def plot(curves: dict[str, list[dict[str, float]]], slo: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in curves.items():
        ax.plot([p["rate"] for p in pts], [100 * p["attainment"] for p in pts], marker="o",
                label=name)
    ax.axhline(100 * TARGET, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("request rate (req/s)")
    ax.set_ylabel("SLO attainment (%)")
    ax.set_title(f"TTFT ≤ {slo['ttft_ms']:.0f} ms and TPOT ≤ {slo['tpot_ms']:.0f} ms")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20.0, help="seconds of load per rate")
    p.add_argument("--start", type=float, default=0.25, help="first rate (req/s)")
    p.add_argument("--step", type=float, default=1.5, help="rate multiplier per step")
    p.add_argument("--max-rates", type=int, default=7)
    p.add_argument("--floor", type=float, default=0.5, help="stop a sweep below this")
    p.add_argument("--prompt-scale", type=float, default=0.25)
    p.add_argument("--output-scale", type=float, default=0.25)
    args = p.parse_args(argv)
    model = builtin_model("small")
    shapes = trace_shapes(find_trace(), args.prompt_scale, args.output_scale, 1024, 64)
    median_prompt = int(statistics.median(s.prompt for s in shapes))
    log_dir = Path(tempfile.mkdtemp(prefix="goodput-"))
    slo = idle_slos(model, median_prompt, log_dir)
    print(f"trace: {len(shapes)} requests, median prompt {median_prompt} tokens, median output "
          f"{statistics.median(s.output for s in shapes):.0f} tokens (scaled)")
    print(f"SLOs from the idle engine: TTFT {slo['ttft_ms']:.0f} ms "
          f"(3 x {slo['idle_prefill_ms']:.0f} ms prefill), TPOT {slo['tpot_ms']:.1f} ms "
          f"(1.5 x {slo['idle_decode_step_ms']:.1f} ms)")
    curves = {
        "disaggregated": sweep(Setup("disaggregated", ["prefill", "decode"], model, log_dir),
                               shapes, slo, args),
        "colocated": sweep(Setup("colocated", ["colocated", "colocated"], model, log_dir),
                           shapes, slo, args),
    }
    rps = {name: goodput([(pt["rate"], pt["attainment"]) for pt in pts])
           for name, pts in curves.items()}
    ratio = rps["disaggregated"] / rps["colocated"] if rps["colocated"] else None
    result = {
        "goodput_rps": rps, "goodput_ratio": ratio, "slo": {k: round(v, 2) for k, v in
                                                           slo.items()},
        "attainment_by_rate": side_by_side(curves),
        "target_attainment": TARGET, "curves": curves,
        "setup": {"model": "small", "threads_per_worker": int(THREADS),
                  "median_prompt_tokens": median_prompt, "prompt_scale": args.prompt_scale,
                  "output_scale": args.output_scale, "duration_s": args.duration,
                  "cpus": os.cpu_count()},
    }
    out = ROOT / "bench" / "results" / "goodput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    (ROOT / "docs").mkdir(exist_ok=True)
    plot(curves, slo, ROOT / "docs" / "goodput.png")
    print(f"goodput: disaggregated {rps['disaggregated']:.2f} req/s, colocated "
          f"{rps['colocated']:.2f} req/s, ratio {ratio if ratio is None else round(ratio, 2)}")
    print(f"wrote {out} and docs/goodput.png (logs in {log_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
