"""`splitserve demo`: the built-in tiny model in a colocated engine, a few requests, the answers
and a latency summary, then exit."""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.tiny_model import ensure_builtin

PROMPTS = [
    "The lighthouse keeper wrote in the log",
    "Prefill reads the whole prompt at once;",
]
CHAT = [{"role": "user", "content": "What does the scheduler decide?"}]


@dataclass
class Timing:
    start: float
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft_ms(self) -> float:
        return (self.token_times[0] - self.start) * 1000

    @property
    def tpot_ms(self) -> float:
        gaps = [b - a for a, b in zip(self.token_times, self.token_times[1:], strict=False)]
        return statistics.mean(gaps) * 1000 if gaps else 0.0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="splitserve demo", description=__doc__)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    path = ensure_builtin("tiny")
    engine = LLMEngine.from_path(path, EngineConfig(block_size=16, num_blocks=128))
    print(f"model {path.name} loaded on {engine.device} in {time.perf_counter() - t0:.2f}s "
          f"(random weights: the answers are noise, but real tokens from a real engine)")
    params = SamplingParams(max_tokens=args.max_tokens, ignore_eos=True)
    requests = {f"prompt-{i}": p for i, p in enumerate(PROMPTS)}
    timings: dict[str, Timing] = {}
    for request_id, prompt in requests.items():
        engine.add_request(request_id, prompt, params)
        timings[request_id] = Timing(time.perf_counter())
    engine.add_request("chat", engine.tokenizer.encode_chat(CHAT), params)
    timings["chat"] = Timing(time.perf_counter())
    requests["chat"] = f"[chat] {CHAT[0]['content']}"
    answers = {}
    for out in engine.stream():
        timings[out.request_id].token_times.append(time.perf_counter())
        if out.finished:
            answers[out.request_id] = out
    for request_id, prompt in requests.items():
        out = answers[request_id]
        print(f"\n> {prompt}\n{out.text!r} ({len(out.token_ids)} tokens, {out.finish_reason})")
    ttft = [t.ttft_ms for t in timings.values()]
    tpot = [t.tpot_ms for t in timings.values()]
    print(f"\nlatency: TTFT mean {statistics.mean(ttft):.1f} ms (max {max(ttft):.1f}), "
          f"TPOT mean {statistics.mean(tpot):.2f} ms; {engine.counters.steps} engine steps")
    return 0
