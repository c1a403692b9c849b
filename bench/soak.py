"""Soak: `splitserve run` (router, one prefill and one decode worker, the built-in `small` model)
under request lengths from the Azure conversation trace, at a fraction of the capacity measured
in the same run, for a long time.

1. Capacity: a closed-loop ramp (1, 2, 4, ... concurrent clients, `--ramp-step` seconds each,
   stopping once throughput no longer grows by 5%); capacity is the best completed req/s.
2. Open loop: Poisson arrivals at `--fraction` x capacity for `--duration` seconds, then the
   requests still in flight get up to `--hang-timeout` seconds to finish.

Every request ends as completed (a full stream with its usage), failed (an HTTP error or an
error event: the client was told), hung (nothing complete within `--hang-timeout`) or truncated
(the stream ended without completion and without an error); lost = hung + truncated. The RSS of
the router and of each worker (with their child processes) is sampled every `--sample-every`
seconds; memory growth is measured from the first sample after `--warmup`.

Writes `--out` (bench/results/soak.json) and `--plot` (docs/soak.png).
Usage: PYTHONPATH=operator:worker:. nice -n 10 python bench/soak.py [--duration S]
       [--fraction F] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import yaml

from bench.goodput import TRACE_NAME, find_trace
from bench.soak_stats import Record, Sample, counts, latency, memory_growth, per_bin, plot
from splitserve.engine.tiny_model import SIZES
from splitserve.local.processes import child_env

ROOT = Path(__file__).resolve().parents[1]
MAX_CONTEXT = 2048
MAX_PROMPT, MAX_OUTPUT = 1024, 64  # tokens, after scaling
READY_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Shape:
    prompt: int
    output: int


def context(model: str) -> int:
    return min(MAX_CONTEXT, SIZES[model].max_position_embeddings)


def trace_shapes(path: Path, prompt_scale: float, output_scale: float, max_context: int
                 ) -> list[Shape]:
    """Prompt and output lengths of every trace request, scaled to this machine and capped so
    prompt + output fits the context."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    max_prompt = min(MAX_PROMPT, max_context - MAX_OUTPUT)
    return [Shape(max(8, min(max_prompt, int(int(r["ContextTokens"]) * prompt_scale))),
                  max(2, min(MAX_OUTPUT, int(int(r["GeneratedTokens"]) * output_scale))))
            for r in rows]


def spec(model: str) -> dict[str, Any]:
    engine = {"maxBatchTokens": 512, "maxRunningSeqs": 32, "kvCacheBlocks": 1024}
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": "soak"},
            "spec": {"model": {"name": model, "dtype": "float32", "maxContext": context(model)},
                     "prefill": {"replicas": 1, "engine": engine},
                     "decode": {"replicas": 1, "engine": engine},
                     "router": {"shortPromptThreshold": 0, "maxRetries": 2}}}


# ---- the stack under test: `splitserve run` as a subprocess ---------------------------------

@dataclass
class Run:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def watched(self) -> dict[str, psutil.Process]:
        """router, prefill-0, decode-0: the direct children of `splitserve run`."""
        out = {}
        for p in psutil.Process(self.proc.pid).children():
            cmd = p.cmdline()
            if "router" in cmd:
                out["router"] = p
            elif "--role" in cmd:
                out[f"{cmd[cmd.index('--role') + 1]}-0"] = p
        return dict(sorted(out.items()))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: router first, then the workers
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_run(model: str, work: Path, threads: int) -> Run:
    spec_path = work / "soak.yaml"
    spec_path.write_text(yaml.safe_dump(spec(model)))
    env = child_env()
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen(
        [sys.executable, "-m", "splitserve.cli", "run", str(spec_path), "--port", "0",
         "--log-dir", str(work / "logs"), "--plain", "--interval", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    run = Run(proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            run.lines.append(line.rstrip())
            m = re.search(r"router ready at (\S+)", line)
            if m:
                run.url = m.group(1)
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            run.stop()
            raise RuntimeError("splitserve run did not come up:\n" + "\n".join(run.lines))
    return run


def rss(proc: psutil.Process) -> int:
    """RSS of a process and its descendants (0 once it is gone)."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


# ---- one request ----------------------------------------------------------------------------

async def one(session: aiohttp.ClientSession, url: str, model: str, shape: Shape, seed: int,
              rec: Record, hang_s: float) -> None:
    """Streams one completion (random prompt tokens of the shape's length, exactly its output
    length) and fills in `rec`'s outcome and durations."""
    rng, vocab = random.Random(seed), SIZES[model].vocab_size
    body = {"model": model, "prompt": [rng.randrange(10, vocab) for _ in range(shape.prompt)],
            "max_tokens": shape.output, "temperature": 0, "ignore_eos": True, "stream": True,
            "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(hang_s):
            await _stream(session, url, body, started, rec)
    except TimeoutError:
        rec.outcome, rec.error = "hung", f"no complete answer within {hang_s:g}s"
    except aiohttp.ClientError as exc:
        rec.outcome, rec.error = "failed", f"connection: {exc.__class__.__name__}"


async def _stream(session: aiohttp.ClientSession, url: str, body: dict[str, Any],
                  started: float, rec: Record) -> None:
    async with session.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            rec.outcome, rec.error = "failed", f"HTTP {resp.status}: {(await resp.text())[:200]}"
            return
        tokens, done = None, False
        async for raw in resp.content:
            line = raw.decode().strip()
            if line == "data: [DONE]":
                done = True
                continue
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                rec.outcome, rec.error = "failed", f"stream error: {event['error']}"
                return
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if event.get("choices") and rec.ttft is None:
                rec.ttft = time.perf_counter() - started
        if done and tokens == body["max_tokens"]:
            rec.outcome, rec.e2e = "completed", time.perf_counter() - started
        else:
            rec.outcome = "truncated"
            rec.error = f"stream ended (DONE={done}) with {tokens} of {body['max_tokens']} tokens"


def session(hang_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=hang_s + 5))


# ---- phase 1: capacity ----------------------------------------------------------------------

async def closed_loop(url: str, model: str, shapes: list[Shape], clients: int,
                      seconds: float, hang_s: float, seed: int) -> tuple[float, int]:
    """`clients` back-to-back request loops for `seconds`: (completed req/s, failed)."""
    rng = random.Random(seed)
    records: list[Record] = []
    started = time.perf_counter()
    end = started + seconds

    async def loop(s: aiohttp.ClientSession, c: int) -> None:
        i = 0
        while time.perf_counter() < end:
            rec = Record(time.perf_counter() - started)
            records.append(rec)
            await one(s, url, model, rng.choice(shapes), seed * 1000 + c * 100000 + i, rec, hang_s)
            if rec.outcome == "completed" and rec.sent_at + (rec.e2e or 0) > seconds:
                rec.outcome = "late"  # finished after the window: not counted
            i += 1

    async with session(hang_s) as s:
        await asyncio.gather(*(loop(s, c) for c in range(clients)))
    done = sum(r.outcome == "completed" for r in records)
    failed = sum(r.outcome not in ("completed", "late") for r in records)
    return done / seconds, failed


def measure_capacity(url: str, model: str, shapes: list[Shape], step_s: float,
                     max_clients: int, hang_s: float, say: Any
                     ) -> tuple[float, list[dict[str, float]]]:
    ramp: list[dict[str, float]] = []
    best, clients = 0.0, 1
    while clients <= max_clients:
        rps, failed = asyncio.run(closed_loop(url, model, shapes, clients, step_s, hang_s,
                                                    clients))
        ramp.append({"clients": clients, "completed_rps": round(rps, 3), "failed": failed})
        say(f"ramp: {clients} client(s) -> {rps:.2f} req/s completed, {failed} failed")
        if rps < best * 1.05:
            break
        best = max(best, rps)
        clients *= 2
    if best <= 0:
        raise RuntimeError("capacity ramp completed no request: see the logs")
    return best, ramp


# ---- phase 2: open loop ---------------------------------------------------------------------

async def open_loop(run: Run, shapes: list[Shape], rate: float, args: argparse.Namespace,
                    say: Any) -> tuple[list[Record], list[Sample]]:
    rng = random.Random(7)
    records: list[Record] = []
    samples: list[Sample] = []
    watched = run.watched()
    started = time.perf_counter()
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        next_report = args.bin
        while True:
            t = time.perf_counter() - started
            samples.append(Sample(t, {name: rss(p) for name, p in watched.items()}))
            if t >= next_report:
                c = counts(records)
                lat = latency([r for r in records if next_report - args.bin <= r.sent_at])
                mem = " ".join(f"{k} {v / 2**20:.0f}" for k, v in samples[-1].rss.items())
                say(f"{t / 60:5.1f} min: sent {c['sent']} completed {c['completed']} failed "
                    f"{c['failed']} hung {c['hung']} truncated {c['truncated']} in flight "
                    f"{c['in_flight']} | last bin "
                    f"TTFT p50/p99 {lat['ttft_p50_ms']}/{lat['ttft_p99_ms']} ms e2e p99 "
                    f"{lat['e2e_p99_ms']} ms | RSS MiB {mem}")
                next_report += args.bin
            try:
                await asyncio.wait_for(stop_sampling.wait(), args.sample_every)
                return
            except TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    async with session(args.hang_timeout) as s:
        tasks = []
        t, i = 0.0, 0
        while t < args.duration:
            delay = started + t - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)  # Poisson arrival schedule
            rec = Record(time.perf_counter() - started)
            records.append(rec)
            tasks.append(asyncio.create_task(
                one(s, run.url, args.model, rng.choice(shapes), 10**6 + i, rec, args.hang_timeout)))
            i += 1
            t += rng.expovariate(rate)
        # every request has its own hang timeout; this outer bound only guards the harness
        _, pending = await asyncio.wait(tasks, timeout=args.hang_timeout + 30) if tasks else (
            set(), set())
        for task in pending:
            task.cancel()
    stop_sampling.set()
    await sampler
    return records, samples


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of open-loop load")
    p.add_argument("--fraction", type=float, default=0.7, help="share of measured capacity")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    p.add_argument("--plot", default=str(ROOT / "docs" / "soak.png"),
                   help="PNG path ('' for none)")
    p.add_argument("--model", default="small", choices=sorted(SIZES), help="built-in model")
    p.add_argument("--trace", type=Path, default=None,
                   help="CSV with ContextTokens and GeneratedTokens columns (default: "
                   f"{TRACE_NAME} in shared/traces beside the checkout)")
    p.add_argument("--warmup", type=float, default=300.0,
                   help="seconds of the open loop before memory growth is measured")
    p.add_argument("--ramp-step", type=float, default=30.0, help="seconds per ramp level")
    p.add_argument("--max-clients", type=int, default=16)
    p.add_argument("--hang-timeout", type=float, default=60.0,
                   help="a request with no complete answer after this counts as hung")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--bin", type=float, default=60.0, help="seconds per series bin")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    p.add_argument("--prompt-scale", type=float, default=0.25)
    p.add_argument("--output-scale", type=float, default=0.25)
    args = p.parse_args(argv)
    for name in ("duration", "fraction", "ramp_step", "hang_timeout", "sample_every", "bin"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}={getattr(args, name)}: expected > 0")
    if not 0 <= args.warmup < args.duration:
        p.error(f"--warmup={args.warmup}: expected 0 <= warmup < --duration ({args.duration})")

    def say(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    shapes = trace_shapes(args.trace or find_trace(), args.prompt_scale, args.output_scale,
                          context(args.model))
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    say(f"starting splitserve run ({args.model} model; logs in {work / 'logs'})")
    run = start_run(args.model, work, args.threads)
    try:
        say(f"router at {run.url}; watching {', '.join(run.watched())}")
        asyncio.run(closed_loop(run.url, args.model, shapes, 1, min(5.0, args.ramp_step),
                                args.hang_timeout, 0))  # warm-up, not measured
        capacity, ramp = measure_capacity(run.url, args.model, shapes, args.ramp_step,
                                          args.max_clients, args.hang_timeout, say)
        rate = args.fraction * capacity
        say(f"capacity {capacity:.2f} req/s; open loop at {rate:.2f} req/s for "
            f"{args.duration:g}s")
        records, samples = asyncio.run(open_loop(run, shapes, rate, args, say))
        alive = {name: proc.is_running() for name, proc in run.watched().items()}
    finally:
        code = run.stop()
    say(f"splitserve run stopped (exit code {code})")
    c = counts(records)
    growth = memory_growth(samples, args.warmup)
    errors: dict[str, int] = {}
    for r in records:
        if r.error:
            key = r.error[:80]
            errors[key] = errors.get(key, 0) + 1
    result = {
        "duration_s": args.duration, "requests": c["sent"], "completed": c["completed"],
        "failed": c["failed"], "hung": c["hung"], "truncated": c["truncated"],
        "lost_requests": c["lost"], "error_rate": c["error_rate"],
        "max_memory_growth_fraction": max(g["growth_fraction"] for g in growth.values()),
        "memory": growth, "capacity_rps": round(capacity, 3), "fraction": args.fraction,
        "rate_rps": round(rate, 3), "achieved_rps": round(c["sent"] / args.duration, 3),
        "warmup_s": args.warmup, **{f"overall_{k}": v for k, v in latency(records).items()},
        "errors": errors, "processes_alive_at_end": alive, "ramp": ramp,
        "per_minute": per_bin(records, samples, args.duration, args.bin),
        "rss_samples": [{"t": round(s.t, 1), **{k: round(v / 2**20, 1) for k, v in s.rss.items()}}
                        for s in samples],
        "setup": {"model": args.model, "prefill_workers": 1, "decode_workers": 1,
                  "threads_per_worker": args.threads, "trace": TRACE_NAME,
                  "prompt_scale": args.prompt_scale, "output_scale": args.output_scale,
                  "max_context": context(args.model),
                  "max_prompt_tokens": max(s.prompt for s in shapes),
                  "max_output_tokens": MAX_OUTPUT,
                  "hang_timeout_s": args.hang_timeout, "ramp_step_s": args.ramp_step,
                  "sample_every_s": args.sample_every, "bin_s": args.bin,
                  "cpus": os.cpu_count()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, samples, Path(args.plot))
    say(f"{c['sent']} requests: {c['completed']} completed, {c['failed']} failed, {c['lost']} "
        f"lost; error rate {c['error_rate']:.3%}; max RSS growth after warm-up "
        f"{result['max_memory_growth_fraction']:.1%}; wrote {args.out}"
        + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
