"""Engine throughput against Hugging Face `transformers` on the `small` model, in one run.

Same machine, threads, dtype and weights for both. Output lengths are drawn (seeded) from the
Azure conversation trace and multiplied by --output-scale (0.25: median 32, longest 250) so the
run stays short while keeping the trace's spread; prompts for the decode measurement have
--prompt-len tokens, prompts for the prefill measurement have trace lengths capped at
--max-prompt. Engine and transformers runs alternate and the best of several is kept, since
other work on the machine slows runs at random.

- decode: generated tokens after the first, per second of decoding. transformers' `generate` runs
  a static batch until its longest request is done; the engine retires each request at its own
  length. `decode_speedup_vs_hf` counts the tokens requests asked for; `decode_step_speedup_vs_hf`
  gives every request the same length (--flat-len; same tokens for both: per-step speed alone).
- prefill: prompt tokens per second to the first token (`generate(max_new_tokens=1)` with left
  padding for transformers).
- KV bytes per token: a cache filled to the last block by prompts held in place, bytes of the
  cache tensors over tokens held, against 2 * layers * kv_heads * head_dim * bytes.

    nice python bench/engine.py [TRACE_CSV] [--batches 1 8 32]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.loader import DTYPES
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.tiny_model import ensure_builtin

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "AzureLLMInferenceTrace_conv.csv"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def trace_lengths(path: Path) -> tuple[list[int], list[int]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return [int(r["ContextTokens"]) for r in rows], [int(r["GeneratedTokens"]) for r in rows]


def model_dir() -> Path:
    return ensure_builtin("small")


def random_prompt(rng: random.Random, n: int, vocab: int) -> list[int]:
    return [rng.randrange(5, vocab) for _ in range(n)]


def engine_for(path: Path, dtype: str, batch: int, tokens: int) -> LLMEngine:
    block_size = 16
    blocks = batch * (-(-tokens // block_size) + 1) + 8
    return LLMEngine.from_path(path, EngineConfig(
        block_size=block_size, num_blocks=blocks, max_num_seqs=max(batch, 1),
        max_num_batched_tokens=2048, dtype=dtype, device="cpu", enable_prefix_caching=False))


@dataclass
class Rate:
    """Tokens per second by the wall clock and by this process's CPU time."""

    wall: float = 0.0
    cpu: float = 0.0

    def best(self, other: Rate) -> Rate:
        return Rate(max(self.wall, other.wall), max(self.cpu, other.cpu))


class Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rate(self, tokens: int, minus: tuple[float, float] = (0.0, 0.0)) -> Rate:
        wall, cpu = self.elapsed()
        return Rate(tokens / max(wall - minus[0], 1e-9), tokens / max(cpu - minus[1], 1e-9))


def ratio(rates: dict[str, Rate], mine: str, theirs: str, clock: str) -> float:
    return round(getattr(rates[mine], clock) / getattr(rates[theirs], clock), 3)


def engine_decode(engine: LLMEngine, prompts: list[list[int]], lengths: list[int]) -> Rate:
    """Decode rate: tokens after each request's first, over the time after all firsts."""
    for i, (p, n) in enumerate(zip(prompts, lengths, strict=True)):
        engine.add_request(f"d{i}", p, SamplingParams(max_tokens=n, ignore_eos=True))
    firsts: set[str] = set()
    while len(firsts) < len(prompts):
        firsts.update(o.request_id for o in engine.step())
    clock = Clock()
    while engine.has_unfinished():
        engine.step()
    return clock.rate(sum(lengths) - len(lengths))


def hf_decode(model: Any, prompts: list[list[int]], lengths: list[int]) -> Rate:
    """Decode rate of `generate`: its whole time minus the time of a prefill-only `generate`."""
    ids = torch.tensor(prompts)
    longest = max(lengths)
    with torch.inference_mode():
        clock = Clock()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                       do_sample=False, pad_token_id=0)
        prefill = clock.elapsed()
        clock = Clock()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=longest,
                       min_new_tokens=longest, do_sample=False, pad_token_id=0)
    return clock.rate(sum(lengths) - len(lengths), minus=prefill)


def engine_prefill(engine: LLMEngine, prompts: list[list[int]]) -> Rate:
    for i, p in enumerate(prompts):
        engine.add_request(f"p{i}", p, SamplingParams(max_tokens=1, ignore_eos=True))
    clock = Clock()
    while engine.has_unfinished():
        engine.step()
    return clock.rate(sum(map(len, prompts)))


def hf_prefill(model: Any, prompts: list[list[int]]) -> Rate:
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        clock = Clock()
        model.generate(ids, attention_mask=mask, max_new_tokens=1, do_sample=False,
                       pad_token_id=0)
    return clock.rate(sum(map(len, prompts)))


def kv_bytes_per_token(path: Path, dtype: str, prompt_lengths: list[int]) -> dict[str, float]:
    engine = LLMEngine.from_path(path, EngineConfig(
        block_size=16, num_blocks=96, max_num_batched_tokens=2048, dtype=dtype, device="cpu",
        enable_prefix_caching=False))
    rng = random.Random(3)
    vocab = engine.model_config.vocab_size
    held = 0
    for i, n in enumerate(prompt_lengths):
        room = engine.free_block_count() * engine.config.block_size - 1
        if room <= 0:
            break
        engine.add_request(f"k{i}", random_prompt(rng, min(n, room), vocab),
                           SamplingParams(max_tokens=1, ignore_eos=True), hold_kv=True)
        while engine.has_unfinished():
            engine.step()
        held += engine.held_blocks(f"k{i}")[1]
    c = engine.model_config
    theory = 2 * c.num_layers * c.num_kv_heads * c.head_dim * DTYPES[dtype].itemsize
    measured = engine.cache.num_bytes / held
    return {"bytes_per_token": measured, "theory": theory, "tokens_held": held,
            "blocks_free": engine.free_block_count(), "ratio": measured / theory}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", nargs="?", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--output-scale", type=float, default=0.25)
    parser.add_argument("--flat-len", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3, help="prefill runs (best kept)")
    parser.add_argument("--decode-repeats", type=int, default=2, help="decode runs (best kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--max-prompt", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engine.json")
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    contexts, generated = trace_lengths(args.trace)
    rng = random.Random(args.seed)
    path = model_dir()
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    log(f"model {path}; threads {threads}; dtype {args.dtype}")
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[args.dtype], attn_implementation="sdpa").eval()
    vocab = hf.config.vocab_size
    # with one thread, CPU time is the work done, whatever else the machine runs
    headline = "cpu" if threads == 1 else "wall"
    other = "wall" if headline == "cpu" else "cpu"
    result: dict[str, Any] = {
        "model": "small", "dtype": args.dtype, "threads": threads, "trace": args.trace.name,
        "headline_clock": headline,
        "output_scale": args.output_scale,
        "load_average_at_start": os.getloadavg()[0], "prompt_len": args.prompt_len,
        "tokens_per_s": {},
    }
    for name in ("decode_speedup_vs_hf", "decode_step_speedup_vs_hf", "prefill_speedup_vs_hf"):
        result[name] = {}
        result[f"{name}_{other}_clock"] = {}
    for batch in args.batches:
        lengths = [max(2, round(args.output_scale * rng.choice(generated)))
                   for _ in range(batch)]
        prompts = [random_prompt(rng, args.prompt_len, vocab) for _ in range(batch)]
        engine = engine_for(path, args.dtype, batch, args.prompt_len + max(lengths))
        log(f"batch {batch}: decoding {sum(lengths)} tokens, longest {max(lengths)}")
        flat = [args.flat_len] * batch
        engine_decode(engine, prompts[:1], [4])  # warm-up
        hf_decode(hf, prompts[:1], [4])
        rates = {name: Rate() for name in ("mine", "theirs", "mine_flat", "theirs_flat",
                                           "mine_prefill", "theirs_prefill")}
        for _ in range(args.decode_repeats):
            rates["mine"] = rates["mine"].best(engine_decode(engine, prompts, lengths))
            rates["theirs"] = rates["theirs"].best(hf_decode(hf, prompts, lengths))
            rates["mine_flat"] = rates["mine_flat"].best(engine_decode(engine, prompts, flat))
            rates["theirs_flat"] = rates["theirs_flat"].best(hf_decode(hf, prompts, flat))
        plens = [max(16, min(args.max_prompt, rng.choice(contexts))) for _ in range(batch)]
        pprompts = [random_prompt(rng, n, vocab) for n in plens]
        engine = engine_for(path, args.dtype, batch, max(plens) + 1)
        engine_prefill(engine, pprompts[:1])  # warm-up
        for _ in range(args.repeats):
            rates["mine_prefill"] = rates["mine_prefill"].best(engine_prefill(engine, pprompts))
            rates["theirs_prefill"] = rates["theirs_prefill"].best(hf_prefill(hf, pprompts))
        key = str(batch)
        for clock in ("cpu", "wall"):
            suffix = "" if clock == headline else f"_{clock}_clock"
            result[f"decode_speedup_vs_hf{suffix}"][key] = ratio(rates, "mine", "theirs", clock)
            result[f"decode_step_speedup_vs_hf{suffix}"][key] = ratio(
                rates, "mine_flat", "theirs_flat", clock)
            result[f"prefill_speedup_vs_hf{suffix}"][key] = ratio(
                rates, "mine_prefill", "theirs_prefill", clock)
        result["tokens_per_s"][key] = {
            name: {"wall": round(r.wall, 1), "cpu": round(r.cpu, 1)} for name, r in rates.items()}
        result["tokens_per_s"][key]["output_lengths"] = lengths
        result["tokens_per_s"][key]["prefill_prompt_lengths"] = plens
        log(f"batch {batch}: speedup ({headline} clock) decode "
            f"{result['decode_speedup_vs_hf'][key]}x, equal-length decode "
            f"{result['decode_step_speedup_vs_hf'][key]}x, prefill "
            f"{result['prefill_speedup_vs_hf'][key]}x; tokens/s {result['tokens_per_s'][key]}")
    kv = kv_bytes_per_token(path, args.dtype, [max(16, min(args.max_prompt, rng.choice(contexts)))
                                               for _ in range(64)])
    result["kv_bytes_per_token_over_theory"] = round(kv["ratio"], 4)
    result["kv_cache"] = kv
    log(f"KV bytes/token {kv['bytes_per_token']:.1f} vs theory {kv['theory']} "
        f"({kv['ratio']:.4f}x, {kv['tokens_held']} tokens held)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
