"""The router's HTTP API fuzzed from the OpenAPI description it serves, against a real local
stack (router, one prefill and one decode worker, built-in tiny model).

Bodies valid by the schema, bodies with one field spoiled, bytes that are not JSON, other content
types and bodies over the size limit. Every answer arrives within a deadline and is never a 5xx;
every 4xx is an OpenAI-style error, naming the spoiled parameter where there is one; valid
generation requests are answered. Afterwards the stack serves a normal request and the router
logged no internal error.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitserve.local.spec import parse_spec
from splitserve.local.stack import LocalStack
from splitserve.router.server import MAX_BODY_BYTES
from tests.integration.openapi_fuzz import SchemaStrategies, Spoiled, spoiled

MODEL = "tiny"
TIMEOUT_S = 30.0
FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
GENERATION = {"/v1/completions": "CompletionRequest",
              "/v1/chat/completions": "ChatCompletionRequest"}


def spec() -> dict[str, Any]:
    engine = {"maxBatchTokens": 512, "maxRunningSeqs": 32, "kvCacheBlocks": 256}
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": "fuzz"},
            "spec": {"model": {"name": MODEL, "dtype": "float32", "maxContext": 1024},
                     "prefill": {"replicas": 1, "drainSeconds": 2, "engine": engine},
                     "decode": {"replicas": 1, "drainSeconds": 2, "engine": engine},
                     "router": {"shortPromptThreshold": 16, "maxRetries": 1}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(parse_spec(spec()), router_port=0,
                       log_dir=tmp_path_factory.mktemp("router-fuzz"), ready_timeout_s=300)
    local.start()
    yield local
    local.stop()


@dataclass(frozen=True)
class Answer:
    status_code: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Client:
    """Plain HTTP/1.1, one connection per request, every request under a deadline."""

    host: str
    port: int

    def request(self, method: str, path: str, content: bytes | None = None,
                content_type: str = "application/json") -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT_S)
        try:
            headers = {"Content-Type": content_type} if content is not None else {}
            conn.request(method, path, body=content, headers=headers)
            resp = conn.getresponse()
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                          resp.read())
        except TimeoutError as exc:
            raise AssertionError(f"{method} {path}: no answer within {TIMEOUT_S}s") from exc
        finally:
            conn.close()

    def get(self, path: str) -> Answer:
        return self.request("GET", path)


@pytest.fixture(scope="module")
def api(stack: LocalStack) -> Client:
    url = urlsplit(stack.url)
    assert url.hostname is not None and url.port is not None
    return Client(url.hostname, url.port)


class Document(dict[str, Any]):
    def __repr__(self) -> str:
        return "<the router's /openapi.json>"


@pytest.fixture(scope="module")
def doc(api: Client) -> dict[str, Any]:
    got = api.get("/openapi.json")
    assert got.status_code == 200
    document = Document(got.json())
    assert document["openapi"].startswith("3.")
    return document


def generator(doc: dict[str, Any]) -> SchemaStrategies:
    return SchemaStrategies(doc["components"]["schemas"], overrides={
        "model": st.just(MODEL),
        "prompt": st.one_of(st.text(min_size=1, max_size=40),
                            st.lists(st.integers(0, 600), min_size=1, max_size=12)),
    })


def consistent(body: dict[str, Any]) -> dict[str, Any]:
    """What the schema cannot say: stream_options only with stream, one max_tokens value."""
    if body.get("stream") is not True:
        body.pop("stream_options", None)
    if "max_tokens" in body and "max_completion_tokens" in body:
        body["max_completion_tokens"] = body["max_tokens"]
    return body


def send(api: Client, method: str, path: str, content: bytes | None = None,
         content_type: str = "application/json") -> Answer:
    return api.request(method, path, content, content_type)


def error_of(resp: Answer, what: str) -> dict[str, Any]:
    """The OpenAI-style error of a 4xx answer (fails on anything else)."""
    assert resp.status_code < 500, f"{what}: {resp.status_code} {resp.text[:500]}"
    assert 400 <= resp.status_code < 500, f"{what}: expected a 4xx, got {resp.status_code}"
    assert resp.headers["content-type"].startswith("application/json"), (what, resp.text[:200])
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    found: dict[str, Any] = err
    return found


def answered(resp: Answer, stream: bool, what: str) -> None:
    if stream:
        assert resp.headers["content-type"].startswith("text/event-stream"), what
        assert resp.text.rstrip().endswith("data: [DONE]"), (what, resp.text[-300:])
        assert '"error"' not in resp.text, (what, resp.text[-500:])
    else:
        assert resp.json()["choices"], what


def dumps(body: Any) -> bytes:
    return json.dumps(body).encode()  # NaN and Infinity as Python writes them


# ---- the description ----------------------------------------------------------------------

def test_every_documented_operation_answers(api: Client, doc: dict[str, Any]) -> None:
    for path, ops in doc["paths"].items():
        for method in ops:
            if path == "/drain" or method != "get":
                continue  # draining would stop the stack; POSTs are fuzzed below
            resp = send(api, "GET", path.replace("{model}", MODEL))
            assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])


# ---- bodies from the schema ---------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_schema_valid_bodies_are_answered(api: Client, doc: dict[str, Any],
                                          data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(GENERATION)), "path")
    gen = generator(doc)
    body = consistent(data.draw(gen.object(doc["components"]["schemas"][GENERATION[path]]),
                                "body"))
    resp = send(api, "POST", path, dumps(body))
    what = f"POST {path} {body}"
    if resp.status_code == 200:
        answered(resp, body.get("stream") is True, what)
        return
    err = error_of(resp, what)
    # valid by the schema but not by the model: too long, token ids outside the vocabulary,
    # a prompt of no tokens, or parameters that only take effect when combined
    assert err["param"] in {"prompt", "messages", "max_tokens", "max_completion_tokens"} \
        or (err["param"] or "").startswith("messages["), what + f" -> {err}"


@FUZZ
@given(data=st.data())
def test_spoiled_bodies_are_refused_naming_the_parameter(
        api: Client, doc: dict[str, Any], data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(sorted(GENERATION)), "path")
    schema = doc["components"]["schemas"][GENERATION[path]]
    bad: Spoiled = data.draw(spoiled(generator(doc), schema), "spoiled")
    body = consistent(bad.body) if bad.field not in ("stream_options", "max_completion_tokens") \
        else bad.body
    resp = send(api, "POST", path, dumps(body))
    what = f"POST {path} with {bad.field} {bad.how}: {body}"
    err = error_of(resp, what)
    param = err["param"] or ""
    names = {bad.field}
    if bad.field in ("stream", "stream_options"):
        names |= {"stream", "stream_options"}
    if bad.field in ("max_tokens", "max_completion_tokens"):
        names |= {"max_tokens", "max_completion_tokens"}
    assert param.split("[")[0] in names or param in names, what + f" -> {err}"


# ---- bytes that are not a JSON object -----------------------------------------------------

not_json = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=64).map(str.encode),
    st.sampled_from([b"", b"{", b"[" * 100_000 + b"]" * 100_000, b'{"model": "tiny",',
                     b'{"seed": ' + b"9" * 5000 + b"}", b"\xff\xfe{}", b"null", b"[]", b"42",
                     b'"a string"', b'{"model": NaN}', b'{"prompt": "\\ud800", "model": "tiny"}']),
)


@FUZZ
@given(path=st.sampled_from(sorted(GENERATION)), raw=not_json,
       content_type=st.sampled_from(["application/json", "text/plain",
                                     "application/x-www-form-urlencoded", "multipart/form-data",
                                     "", "application/json; charset=latin-1"]))
def test_bodies_that_are_not_json_objects_are_refused(
        api: Client, path: str, raw: bytes, content_type: str) -> None:
    resp = send(api, "POST", path, raw, content_type)
    what = f"POST {path} {content_type!r} {raw[:80]!r}"
    try:
        parsed = json.loads(raw)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict) and resp.status_code == 200:
        return  # a JSON object that happens to be a valid request
    err = error_of(resp, what)
    assert resp.status_code in (400, 404), what
    if not isinstance(parsed, dict):
        assert err["code"] == "invalid_json" or "expected a JSON object" in err["message"], \
            (what, err)


@FUZZ
@given(path=st.one_of(st.sampled_from(["/v1/models/", "/v1/", "/", "/v2/completions"]),
                      st.text(min_size=1, max_size=20).map(lambda t: "/v1/models/" + t)),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]))
def test_unknown_paths_and_methods_get_openai_style_errors(
        api: Client, path: str, method: str) -> None:
    resp = send(api, method, quote(path), b"{}" if method != "GET" else None)
    if resp.status_code == 200:
        return
    err = error_of(resp, f"{method} {path}")
    assert resp.status_code in (400, 404, 405), (method, path, resp.status_code)
    if resp.status_code == 404:  # an unknown model names it; an unknown path says so
        assert err["param"] == "model" or err["code"] == "not_found", (path, err)
    if resp.status_code == 405:
        assert err["code"] == "method_not_allowed" and "allow" in resp.headers, (path, err)


def test_a_body_over_the_limit_is_refused_with_413(api: Client) -> None:
    prompt = "x" * (MAX_BODY_BYTES + 1024)
    resp = send(api, "POST", "/v1/completions",
                dumps({"model": MODEL, "prompt": prompt, "max_tokens": 1}))
    assert resp.status_code == 413
    err = error_of(resp, "a body over the limit")
    assert err["code"] == "request_too_large" and str(MAX_BODY_BYTES) in err["message"]


def test_a_long_prompt_under_the_limit_is_refused_naming_the_prompt(api: Client) -> None:
    resp = send(api, "POST", "/v1/completions",
                dumps({"model": MODEL, "prompt": "word " * 200_000, "max_tokens": 1}))
    err = error_of(resp, "a long prompt")
    assert err["param"] == "prompt" and err["code"] == "context_length_exceeded", err


# ---- afterwards ---------------------------------------------------------------------------

def test_the_stack_still_serves_and_logged_no_internal_error(
        api: Client, stack: LocalStack) -> None:
    resp = send(api, "POST", "/v1/chat/completions", dumps({
        "model": MODEL, "messages": [{"role": "user", "content": "Still there?"}],
        "max_tokens": 4, "temperature": 0}))
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] >= 1
    status = send(api, "GET", "/status").json()
    assert status["inflight"] == 0 and status["queued"] == 0
    assert stack.router is not None and stack.router.alive
    log = Path(stack.log_dir / "router.log").read_text(errors="replace")
    assert "internal error" not in log and "Traceback" not in log, log[-4000:]
