"""Two versions of one model served at once, as during a roll: real workers and a real router.

The tiny checkpoint's revision 1 has the same tokenizer and shapes as revision 0 and other
weights. The router pairs a decode worker only with prefill workers of its own checkpoint (the
weights digest from the workers' Stats), names the checkpoint that answered in
`system_fingerprint`, and every answer equals the colocated engine's on that checkpoint: no
request mixes the two versions, and none fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from openai import OpenAI
from stackutil import get, spec_doc, wait_for

from splitserve.api import metrics as names
from splitserve.engine.config import EngineConfig
from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.loader import weights_digest
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.tiny_model import SIZES, ensure_model
from splitserve.local.metrics_text import counter_sum
from splitserve.local.processes import Child
from splitserve.local.spec import parse_spec, router_args, worker_args
from splitserve.router.responses import fingerprint

PROMPT = "Versions roll one pod at a time, and a request must stay on one of them. " * 2
MAX_TOKENS = 12
READY_S = 300


@dataclass
class Stack:
    url: str
    prefill: dict[str, str]  # http address -> weights digest
    decode: dict[str, str]
    answers: dict[str, str]  # system_fingerprint -> the colocated answer on that checkpoint


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("versions")
    return (ensure_model(root / "r0", SIZES["tiny"]),
            ensure_model(root / "r1", replace(SIZES["tiny"], revision=1)))


def colocated(model: Path) -> str:
    engine = LLMEngine.from_path(model, EngineConfig(
        dtype="float32", device="cpu", num_blocks=64, max_num_seqs=4,
        max_num_batched_tokens=512, max_model_len=1024))
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    return str(engine.generate([PROMPT], params)[0].text)


@pytest.fixture(scope="module")
def stack(versions: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    """Prefill: one worker of each revision. Decode: one worker of revision 1 only."""
    r0, r1 = versions
    logs = tmp_path_factory.mktemp("versions-logs")
    plan = parse_spec(spec_doc("versions", 2, 1, 4))
    workers = [Child(name, worker_args(plan, role, str(model)), logs / f"{name}.log",
                     "SPLITSERVE_WORKER_READY")
               for name, role, model in (("prefill-r0", "prefill", r0),
                                         ("prefill-r1", "prefill", r1),
                                         ("decode-r1", "decode", r1))]
    router: Child | None = None
    try:
        for child in workers:
            child.start()
        for child in workers:
            child.wait_ready(READY_S)
        grpc = {c.name: c.ready_fields["grpc"] for c in workers}
        router = Child("router", router_args(
            plan, str(r1), [grpc["prefill-r0"], grpc["prefill-r1"]], [grpc["decode-r1"]], 0),
            logs / "router.log", "SPLITSERVE_ROUTER_READY")
        router.start()
        router.wait_ready(READY_S)
        digests = {str(r0): weights_digest(r0), str(r1): weights_digest(r1)}
        answers = {fingerprint(digests[str(m)]) or "": colocated(m) for m in (r0, r1)}
        yield Stack("http://" + router.ready_fields["http"],
                    {workers[0].ready_fields["http"]: digests[str(r0)],
                     workers[1].ready_fields["http"]: digests[str(r1)]},
                    {workers[2].ready_fields["http"]: digests[str(r1)]}, answers)
    finally:
        for child in ([router] if router else []) + workers:
            child.stop(30)


def kv_sent(http: str) -> float:
    return counter_sum(get(f"http://{http}/metrics"), names.KV_TRANSFER_BYTES.series,
                       direction="sent")


def test_revisions_differ(stack: Stack) -> None:
    assert len(set(stack.answers.values())) == 2, stack.answers  # else mixing is invisible


def test_prefill_pairs_only_with_its_own_checkpoint(stack: Stack) -> None:
    client = OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    wait_for(lambda: '"prefill": {"known": 2, "ready": 2' in get(stack.url + "/status")
             .replace("\n", ""), 60, "the router to poll both prefill workers")
    before = {http: kv_sent(http) for http in stack.prefill}

    def one(i: int) -> tuple[str, str | None]:
        done = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=MAX_TOKENS,
                                         temperature=0, extra_body={"ignore_eos": True})
        return done.choices[0].text, done.system_fingerprint

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(12)))
    decode_digest = next(iter(stack.decode.values()))
    want_fp = fingerprint(decode_digest)
    assert all(fp == want_fp for _, fp in results), results
    assert all(text == stack.answers[want_fp or ""] for text, _ in results), results
    sent = {http: kv_sent(http) - before[http] for http in stack.prefill}
    for http, digest in stack.prefill.items():
        if digest == decode_digest:
            assert sent[http] > 0, sent  # the matching prefill worker did the prefills
        else:
            assert sent[http] == 0, sent  # KV never crossed versions

    parts = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": PROMPT}], max_tokens=MAX_TOKENS,
        temperature=0, stream=True, extra_body={"ignore_eos": True}))
    assert parts[-1].system_fingerprint == want_fp or any(
        p.system_fingerprint == want_fp for p in parts), parts[-3:]
