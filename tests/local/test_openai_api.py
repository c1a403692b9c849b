"""The official OpenAI client against a `splitserve run` stack (1 prefill + 1 decode worker,
built-in tiny model): answers equal a colocated engine's, they come through the KV transfer,
errors are OpenAI-shaped, and Ctrl-C stops every process."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from openai import OpenAI
from stackutil import descendants, get, reference_text, spec_doc, start_run, stats, wait_for

from splitserve.api import metrics as names
from splitserve.local.processes import Child
from splitserve.local.stack import ROUTER_READY

THRESHOLD = 16
PROMPTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Prefill computes the prompt; decode generates tokens one at a time. " * 4,
    "A long prompt that crosses several KV cache blocks on its way to the decode worker. " * 9,
]
IGNORE_EOS = {"ignore_eos": True}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    handle = start_run(spec_doc("api", 1, 1, THRESHOLD), tmp_path_factory.mktemp("run"))
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def client(run) -> OpenAI:
    return OpenAI(base_url=run.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def local_prefills(run, reason: str) -> float:
    return run.metric(names.ROUTER_LOCAL_PREFILL.series, run.url, reason=reason)


def test_models(client: OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"


@pytest.mark.parametrize("prompt", PROMPTS, ids=["short", "medium", "long"])
def test_completion_equals_colocated(client: OpenAI, reference, prompt: str) -> None:
    want, n = reference_text(reference, prompt, 24)
    raw = client.completions.with_raw_response.create(
        model="tiny", prompt=prompt, max_tokens=24, temperature=0, extra_body=IGNORE_EOS)
    done = raw.parse()
    assert done.choices[0].text == want
    assert done.usage is not None and done.usage.completion_tokens == n == 24
    assert done.usage.prompt_tokens == len(reference.tokenizer.encode(prompt))
    assert raw.headers["x-request-id"] == done.id
    assert done.choices[0].finish_reason == "length"


def test_token_id_prompt_and_stop(client: OpenAI, reference) -> None:
    ids = reference.tokenizer.encode(PROMPTS[1])
    full, _ = reference_text(reference, ids, 24)
    stop = full[5:8]
    want, _ = reference_text(reference, ids, 24, stop=(stop,))
    done = client.completions.create(model="tiny", prompt=ids, max_tokens=24, temperature=0,
                                     stop=[stop], extra_body=IGNORE_EOS)
    assert done.choices[0].text == want == full[:full.find(stop)]
    assert done.choices[0].finish_reason == "stop"


def test_chat_equals_colocated(client: OpenAI, reference) -> None:
    messages: list[Any] = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "Why split prefill from decode? " * 3}]
    ids = reference.tokenizer.encode_chat(messages)
    want, n = reference_text(reference, ids, 20)
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=20,
                                          temperature=0, extra_body=IGNORE_EOS)
    assert chat.choices[0].message.content == want
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage is not None and chat.usage.prompt_tokens == len(ids)
    assert chat.usage.completion_tokens == n


def test_streaming_equals_colocated(client: OpenAI, reference) -> None:
    want, n = reference_text(reference, PROMPTS[2], 30)
    parts, usage = [], None
    for event in client.completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=30,
                                           temperature=0, stream=True, extra_body=IGNORE_EOS,
                                           stream_options={"include_usage": True}):
        if event.usage is not None:
            usage = event.usage
        parts += [c.text for c in event.choices]
    assert "".join(parts) == want
    assert usage is not None and usage.completion_tokens == n
    messages: list[Any] = [{"role": "user", "content": PROMPTS[1]}]
    want_chat, _ = reference_text(reference, reference.tokenizer.encode_chat(messages), 30)
    stream: Any = client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=30, temperature=0, stream=True,
        extra_body=IGNORE_EOS)
    deltas = [e.choices[0].delta.content or "" for e in stream if e.choices]
    assert "".join(deltas) == want_chat
    assert len([d for d in deltas if d]) > 3  # really incremental


def test_answers_came_through_the_kv_transfer(run, client: OpenAI) -> None:
    client.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=4)
    prefill, decode = run.worker_http("prefill")[0], run.worker_http("decode")[0]
    sent = run.metric(names.KV_TRANSFER_BYTES.series, prefill, direction="sent")
    received = run.metric(names.KV_TRANSFER_BYTES.series, decode, direction="received")
    assert sent > 0 and received == sent
    assert local_prefills(run, "no_prefill_worker") == 0
    assert local_prefills(run, "prefill_failed") == 0


def test_short_prompt_is_prefilled_on_decode(run, client: OpenAI, reference) -> None:
    prompt = "Hi there"
    assert len(reference.tokenizer.encode(prompt)) < THRESHOLD
    before = local_prefills(run, "short_prompt")
    sent = run.metric(names.KV_TRANSFER_BYTES.series, run.worker_http("prefill")[0])
    want, _ = reference_text(reference, prompt, 10)
    done = client.completions.create(model="tiny", prompt=prompt, max_tokens=10,
                                     temperature=0, extra_body=IGNORE_EOS)
    assert done.choices[0].text == want
    assert local_prefills(run, "short_prompt") == before + 1
    assert run.metric(names.KV_TRANSFER_BYTES.series, run.worker_http("prefill")[0]) == sent


def post_raw(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_invalid_json(run) -> None:
    code, body = post_raw(run.url + "/v1/completions", b'{"model": "tiny", "prompt": ')
    assert code == 400 and "not valid JSON" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("kwargs,status,param", [
    ({"model": "gpt-9"}, 404, "model"),
    ({"max_tokens": -5}, 400, "max_tokens"),
    ({"prompt": "word " * 1200}, 400, "prompt"),
    ({"max_tokens": 1000, "prompt": "word " * 100}, 400, "max_tokens"),
    ({"temperature": "warm"}, 400, "temperature"),
    ({"prompt": {"text": "x"}}, 400, "prompt"),
    ({"n": 2}, 400, "n"),
    ({"logprobs": 3}, 400, "logprobs"),
    ({"extra_body": {"frobnicate": True}}, 400, "frobnicate"),
    ({"prompt": [99999]}, 400, "prompt"),
])
def test_bad_completion_requests(client: OpenAI, kwargs: dict, status: int, param: str) -> None:
    args = {"model": "tiny", "prompt": "hello", "max_tokens": 4, **kwargs}
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(**args)
    err = info.value
    assert err.status_code == status
    assert isinstance(err.body, dict) and err.body.get("param") == param
    assert param in err.body["message"]
    assert err.response.headers.get("x-request-id")


def test_bad_chat_requests(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    with pytest.raises(openai.BadRequestError, match=r"messages\[0\]\.role"):
        robot: Any = {"role": "robot", "content": "x"}
        client.chat.completions.create(model="tiny", messages=[robot])


def test_request_id_in_router_and_worker_logs(run, client: OpenAI) -> None:
    rid = f"test-{time.monotonic_ns()}"
    raw = client.completions.with_raw_response.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=3, extra_headers={"x-request-id": rid})
    assert raw.headers["x-request-id"] == rid and raw.parse().id == rid
    for name in ("router", "prefill-0", "decode-0"):
        wait_for(lambda n=name: rid in (run.log_dir / f"{n}.log").read_text(), 10,
                 f"{rid} in {name}.log")


def test_client_disconnect_frees_kv_blocks(run) -> None:
    decode = run.worker_http("decode")[0]
    wait_for(lambda: stats(decode).get("kvBlocksUsed", 0) == 0, 10, "an idle decode worker")
    u = urlsplit(run.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    body = {"model": "tiny", "prompt": PROMPTS[2], "max_tokens": 400, "stream": True,
            "ignore_eos": True}
    conn.request("POST", "/v1/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()  # first event: generation is under way
    wait_for(lambda: stats(decode).get("running", 0) == 1, 10, "the request running")
    conn.sock.close()
    conn.close()
    wait_for(lambda: stats(decode).get("kvBlocksUsed", 0) == 0
             and stats(decode).get("running", 0) == 0, 15,
             "the decode worker to free the cancelled request's blocks")


def test_admission_refuses_with_429_and_retry_after(run, tmp_path) -> None:
    args = ["router", "--port", "0", "--model", "tiny", "--model-name", "tiny",
            "--decode", run.workers["decode-0"]["grpc"],
            "--prefill", run.workers["prefill-0"]["grpc"],
            "--max-inflight", "1", "--max-queue", "0"]
    router = Child("router-429", args, tmp_path / "router.log", ROUTER_READY)
    router.start()
    try:
        router.wait_ready(120)
        url = "http://" + router.ready_fields["http"]
        c = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
        stream = c.completions.create(model="tiny", prompt=PROMPTS[1], max_tokens=700,
                                      stream=True, extra_body=IGNORE_EOS)
        next(iter(stream))  # holds the one slot
        with pytest.raises(openai.RateLimitError) as info:
            c.completions.create(model="tiny", prompt="x", max_tokens=2)
        assert info.value.response.headers["retry-after"] == "1"
        assert "capacity" in info.value.message
        stream.close()
    finally:
        router.stop(15)


def test_health_and_metrics(run, client: OpenAI) -> None:
    client.completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=3)
    health = json.loads(get(run.url + "/health"))
    assert health["ready"] and health["pools"]["decode"]["ready"] == 1
    text = get(run.url + "/metrics")
    assert names.TTFT_SECONDS.name + "_bucket" in text
    assert names.ROUTER_REQUESTS.series in text


def test_ctrl_c_stops_every_process(run) -> None:
    children = descendants(run.proc.pid)
    assert len(children) >= 3  # router and both workers
    started = time.monotonic()
    assert run.stop() == 0
    gone = wait_for(lambda: all(not c.is_running() or c.status() == "zombie" for c in children),
                    10, "every child of splitserve run to exit")
    assert gone and time.monotonic() - started < 60
    assert any("stopped in" in line for line in run.lines)
