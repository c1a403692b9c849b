"""`splitserve demo`: start the sample service, ask it through the OpenAI client, print, exit."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import urllib.request
from importlib import resources

import yaml

from splitserve.api import metrics as names
from splitserve.local.metrics_text import counter_sum
from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack

PROMPT = ("A prefill worker computes the prompt and streams its KV cache to a decode worker, "
          "which then generates the answer token by token.")
QUESTION = "Explain in one sentence why prefill and decode run on separate workers."


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def _say(line: str) -> None:
    print(line, flush=True)


def ask(url: str, model: str, max_tokens: int) -> dict[str, list[float]]:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
    done = client.completions.create(model=model, prompt=PROMPT, max_tokens=max_tokens,
                                     temperature=0)
    _say(f"\n[completion] {PROMPT!r}\n  -> {done.choices[0].text!r}  "
         f"({done.usage.prompt_tokens if done.usage else '?'} prompt tokens, "
         f"finish {done.choices[0].finish_reason}, id {done.id})")
    chat = client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": "You are terse."},
                               {"role": "user", "content": QUESTION}],
        max_tokens=max_tokens, temperature=0)
    _say(f"\n[chat] {QUESTION!r}\n  -> {chat.choices[0].message.content!r}  (id {chat.id})")
    ttft, tpot = [], []
    _say("\n[streaming chat]")
    for i in range(3):
        started = time.monotonic()
        stamps, parts = [], []
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"{QUESTION} (take {i + 1})"}],
            max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True})
        tokens = 0
        for event in stream:
            if event.usage is not None:
                tokens = event.usage.completion_tokens
            if event.choices and event.choices[0].delta.content:
                stamps.append(time.monotonic())
                parts.append(event.choices[0].delta.content)
        _say(f"  {i + 1}: {''.join(parts)!r}  ({tokens} tokens)")
        if stamps:
            ttft.append(stamps[0] - started)
        if len(stamps) > 1 and tokens > 1:
            tpot.append((stamps[-1] - stamps[0]) / (tokens - 1))
    return {"ttft": ttft, "tpot": tpot}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="splitserve demo", description=__doc__)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--log-dir", default=None)
    args = p.parse_args(argv)
    raw = yaml.safe_load(resources.files("splitserve.local").joinpath("sample.yaml").read_text())
    plan = parse_spec(raw, "built-in sample spec")
    stack = LocalStack(plan, router_port=0, log_dir=args.log_dir)
    started = time.monotonic()
    try:
        stack.start(lambda line: _say(f"demo: {line}"))
        _say(f"demo: stack up in {time.monotonic() - started:.1f}s")
        lat = ask(stack.url, plan.service.spec.model.name, args.max_tokens)
        sent = sum(counter_sum(_get("http://" + c.ready_fields["http"] + "/metrics"),
                               names.KV_TRANSFER_BYTES.series, direction="sent")
                   for c in stack.worker_children("prefill"))
        local = counter_sum(_get(stack.url + "/metrics"), names.ROUTER_LOCAL_PREFILL.series)
        _say("\n[summary]")
        if lat["ttft"]:
            _say(f"  TTFT (client, streaming) median {statistics.median(lat['ttft']) * 1e3:.1f} ms")
        if lat["tpot"]:
            _say(f"  TPOT (client, streaming) median {statistics.median(lat['tpot']) * 1e3:.1f} ms")
        _say(f"  KV cache sent prefill -> decode: {sent / 1024:.1f} KiB; requests prefilled "
             f"locally on decode: {local:.0f}")
        if sent <= 0:
            _say("demo: no KV transfer happened; the disaggregated path was not used")
            return 1
    except Exception as exc:
        print(f"splitserve demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        _say(f"demo: stopped everything ({time.monotonic() - started:.1f}s in all)")
    return 0
