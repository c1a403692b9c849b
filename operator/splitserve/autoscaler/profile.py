"""`splitserve profile`: measure one replica's capacity against a real worker process.

Starts `splitserve worker --role colocated` (its spawn-to-ready time is the start-up time),
then measures with greedy requests through the worker's gRPC API:
- prefill: idle TTFT (one output token) at several prompt lengths, fitted as
  overhead + tokens * seconds-per-token; and the saturated cost per prompt token with
  `--concurrency` prompts of the reference length sent at once (the larger per-token cost wins);
- decode: the median time between output tokens with B sequences of `--context` prompt tokens
  generating together, for each B in `--batches`, fitted as base + per-sequence * B.
Writes the profile JSON (format in `splitserve.autoscaler.capacity`) with the command line.
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from splitserve.autoscaler.capacity import FORMAT, CapacityProfile
from splitserve.autoscaler.worker_process import WorkerProcess


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope) with the intercept floored at 0 and slope positive."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"fit_line: expected two or more points, got {len(xs)} and {len(ys)}")
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var <= 0:
        raise ValueError("fit_line: expected at least two distinct x values")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    slope = max(slope, 1e-9)
    intercept = max(0.0, my - slope * mx)
    return intercept, slope


def build_profile(*, model: str, device: str, command: str, startup_seconds: float,
                  max_context: int, prefill_points: Sequence[tuple[int, float]],
                  saturated_seconds_per_token: float, reference_tokens: int,
                  decode_points: Sequence[tuple[int, float]], context_tokens: int,
                  max_sequences: int, kv_blocks: int, block_size: int) -> CapacityProfile:
    """A profile from measurements: (prompt tokens, idle TTFT) and (batch, step seconds)."""
    overhead, per_token = fit_line([p[0] for p in prefill_points], [p[1] for p in prefill_points])
    base, per_seq = fit_line([p[0] for p in decode_points], [p[1] for p in decode_points])
    return CapacityProfile.from_dict({
        "format": FORMAT, "model": model, "device": device, "command": command,
        "startupSeconds": round(startup_seconds, 3), "maxContext": max_context,
        "prefill": {"overheadSeconds": round(overhead, 6),
                    "secondsPerToken": max(per_token, saturated_seconds_per_token),
                    "referenceTokens": reference_tokens},
        "decode": {"stepSecondsBase": max(base, 1e-4), "stepSecondsPerSequence": per_seq,
                   "contextTokens": context_tokens, "maxSequences": max_sequences,
                   "kvBlocks": kv_blocks, "blockSize": block_size},
    })


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splitserve profile",
                                description="Measure a pool replica's capacity profile.")
    p.add_argument("--model", default="small", help="model directory or built-in name")
    p.add_argument("--out", type=Path, required=True, help="profile JSON to write")
    p.add_argument("--prompt-lengths", type=_ints, default=[64, 256, 512, 1024])
    p.add_argument("--reference-tokens", type=int, default=512)
    p.add_argument("--concurrency", type=int, default=8, help="prompts sent at once (saturated)")
    p.add_argument("--batches", type=_ints, default=[1, 4, 8, 16])
    p.add_argument("--context", type=int, default=256, help="decode prompt length")
    p.add_argument("--output-tokens", type=int, default=32, help="tokens per decode stream")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker-arg", action="append", default=[],
                   help="extra argument for `splitserve worker` (repeatable)")
    return p


def _prompt(rng: random.Random, n: int, vocab: int = 256) -> list[int]:
    return [rng.randrange(3, vocab) for _ in range(n)]


def measure(a: argparse.Namespace, command: str, log: Any = print) -> CapacityProfile:
    from splitserve.worker.client import WorkerClient  # the data-plane side of the tool

    rng = random.Random(0)
    args = ["--role", "colocated", "--model", a.model, "--device", a.device, *a.worker_arg]
    with WorkerProcess(args) as w, WorkerClient(w.grpc) as c:
        log(f"worker ready in {w.startup_seconds:.1f}s at {w.grpc}")
        stats = c.stats()
        c.generate(_prompt(rng, 32), 4)  # warm-up
        prefill_points = []
        for n in a.prompt_lengths:
            ttfts = [c.generate(_prompt(rng, n), 1).ttft for _ in range(a.reps)]
            prefill_points.append((n, statistics.median(ttfts)))
            log(f"prefill {n:5d} tokens: idle TTFT {prefill_points[-1][1] * 1000:.1f} ms")
        ref = a.reference_tokens
        with ThreadPoolExecutor(a.concurrency) as pool:
            timings = list(pool.map(lambda _: c.generate(_prompt(rng, ref), 1),
                                    range(a.concurrency)))
        makespan = max(t.ttft for t in timings)
        saturated = makespan / (ref * a.concurrency)
        log(f"prefill saturated: {1 / saturated:.0f} prompt tokens/s")
        decode_points = []
        for b in a.batches:
            with ThreadPoolExecutor(b) as pool:
                runs = list(pool.map(
                    lambda _: c.generate(_prompt(rng, a.context), a.output_tokens), range(b)))
            gaps = [g for r in runs for g in r.gaps[2:]]
            decode_points.append((b, statistics.median(gaps)))
            log(f"decode batch {b:3d}: {decode_points[-1][1] * 1000:.2f} ms per step")
    kv_blocks = int(stats.kv_blocks_total)
    worker_defaults = _worker_settings(a.worker_arg)
    return build_profile(
        model=a.model, device=a.device, command=command, startup_seconds=w.startup_seconds,
        max_context=worker_defaults["max_context"] or 8192, prefill_points=prefill_points,
        saturated_seconds_per_token=saturated, reference_tokens=ref,
        decode_points=decode_points, context_tokens=a.context,
        max_sequences=worker_defaults["max_num_seqs"], kv_blocks=kv_blocks,
        block_size=worker_defaults["block_size"])


def _worker_settings(extra: list[str]) -> dict[str, int]:
    from splitserve.worker.config import from_args

    cfg = from_args(["--role", "colocated", *extra])
    return {"max_num_seqs": cfg.engine.max_num_seqs, "block_size": cfg.engine.block_size,
            "max_context": cfg.engine.max_model_len or 0}


def main(argv: list[str]) -> int:
    a = parser().parse_args(argv)
    command = "splitserve profile " + shlex.join(argv)
    try:
        profile = measure(a, command)
    except (ValueError, RuntimeError) as exc:
        print(f"splitserve profile: {exc}", file=sys.stderr)
        return 1
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(profile.to_dict(), indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0
