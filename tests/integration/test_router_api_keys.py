"""API keys on a real router process: /v1/* (and any path but the probes') answers 401 with an
OpenAI-style body without a key or with a wrong one, serves with an accepted key (raw HTTP and
the official `openai` client), keeps health and metrics open, and picks up a rotated key file
without a restart."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.sampling_params import SamplingParams
from splitserve.local.processes import Child
from splitserve.local.stack import ROUTER_READY
from splitserve.worker.process import WorkerProcess, wait_for

KEY = "sk-test-first"
OTHER_KEY = "sk-test-second"


def write_keys(path: Path, *keys: str) -> None:
    """Replace the file the way the kubelet updates a mounted Secret: write aside, rename."""
    aside = path.with_name(path.name + ".new")
    aside.write_text("# accepted API keys\n\n" + "".join(f"{k}\n" for k in keys))
    os.replace(aside, path)


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("api-keys") / "api-keys"
    write_keys(path, KEY)
    return path


@pytest.fixture(scope="module")
def router_url(pair: tuple[WorkerProcess, WorkerProcess], tiny_model: Path, log_dir: Path,
               keys_file: Path) -> Iterator[str]:
    prefill, decode = pair
    router = Child("router-keys", [
        "router", "--model", str(tiny_model), "--model-name", "tiny", "--port", "0",
        "--discovery", "static",
        "--prefill", prefill.grpc_address, "--decode", decode.grpc_address,
        "--short-prompt-threshold", "0", "--stats-interval", "0.2",
        "--api-keys-file", str(keys_file)], log_dir / "router-keys.log", ROUTER_READY)
    router.start()
    try:
        router.wait_ready(120)
        url = "http://" + router.ready_fields["http"]
        wait_for(lambda: get(url, "/readyz")[0] == 200, 30, "the router to see both workers")
        yield url
    finally:
        router.stop(15)


def get(url: str, path: str, key: str | None = None) -> tuple[int, dict[str, str], bytes]:
    return call(urllib.request.Request(url + path), key)


def call(request: urllib.request.Request, key: str | None) -> tuple[int, dict[str, str], bytes]:
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def completion(url: str, key: str | None, prompt: str = "Keys guard the router " * 4
               ) -> tuple[int, dict[str, str], Any]:
    body = json.dumps({"model": "tiny", "prompt": prompt, "max_tokens": 6, "temperature": 0,
                       "ignore_eos": True}).encode()
    status, headers, raw = call(urllib.request.Request(
        url + "/v1/completions", body, {"Content-Type": "application/json"}), key)
    return status, headers, json.loads(raw) if raw else None


@pytest.mark.parametrize("key", [None, "sk-wrong", ""], ids=["no-key", "wrong-key", "empty"])
def test_requests_without_an_accepted_key_get_401(router_url: str, key: str | None) -> None:
    for path in ("/v1/models", "/v1/chat/completions", "/v1/completions"):
        if path == "/v1/completions":
            status, headers, body = completion(router_url, key)
        else:
            status, headers, raw = get(router_url, path, key)
            body = json.loads(raw)
        assert status == 401, (path, status, body)
        assert headers.get("WWW-Authenticate") == "Bearer"
        error = body["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
        want = "missing API key" if not key else "invalid API key"
        assert error["message"].startswith(want), error
    # deny by default: a path the router does not serve answers 401 too, not 404
    assert get(router_url, "/v2/models", key)[0] == 401


def test_an_accepted_key_is_served(router_url: str, reference: LLMEngine) -> None:
    prompt = "Keys guard the router " * 4
    want = reference.generate([prompt], SamplingParams(max_tokens=6, ignore_eos=True))[0]
    status, _, body = completion(router_url, KEY, prompt)
    assert status == 200, body
    assert body["choices"][0]["text"] == want.text
    status, _, raw = get(router_url, "/v1/models", KEY)
    assert status == 200 and json.loads(raw)["data"][0]["id"] == "tiny"


def test_health_and_metrics_stay_open(router_url: str) -> None:
    for path in ("/healthz", "/readyz", "/health", "/status"):
        assert get(router_url, path)[0] == 200, path
    status, _, raw = get(router_url, "/metrics")
    assert status == 200
    assert 'reason="invalid_api_key"' in raw.decode()  # the refusals above are counted


def test_official_openai_client(router_url: str, reference: LLMEngine) -> None:
    refused = openai.OpenAI(base_url=router_url + "/v1", api_key="sk-wrong", max_retries=0,
                            timeout=30)
    with pytest.raises(openai.AuthenticationError) as err:
        refused.models.list()
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    client = openai.OpenAI(base_url=router_url + "/v1", api_key=KEY, max_retries=0,
                           timeout=60)
    messages: list[Any] = [{"role": "user", "content": "Which key opens this door?"}]
    want = reference.generate([reference.tokenizer.encode_chat(messages)],
                              SamplingParams(max_tokens=6, ignore_eos=True))[0]
    chat = client.chat.completions.create(model="tiny", messages=messages, max_tokens=6,
                                          temperature=0, extra_body={"ignore_eos": True})
    assert chat.choices[0].message.content == want.text


def test_a_rotated_key_file_applies_without_a_restart(router_url: str,
                                                      keys_file: Path) -> None:
    write_keys(keys_file, OTHER_KEY)
    try:
        wait_for(lambda: get(router_url, "/v1/models", OTHER_KEY)[0] == 200, 10,
                 "the router to accept the new key")
        assert get(router_url, "/v1/models", KEY)[0] == 401
        write_keys(keys_file)  # no key left: nothing is accepted
        wait_for(lambda: get(router_url, "/v1/models", OTHER_KEY)[0] == 401, 10,
                 "the router to drop the removed key")
    finally:
        write_keys(keys_file, KEY)
