"""The router's HTTP side (aiohttp): OpenAI endpoints, SSE streaming, health, drain, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from splitserve.api import metrics as names
from splitserve.engine.tokenizer import Tokenizer
from splitserve.router import openapi, responses
from splitserve.router.admission import Admission
from splitserve.router.auth import OPEN_PATHS, ApiKeys
from splitserve.router.dispatch import Dispatcher, Finished, Tokens
from splitserve.router.errors import ApiError, bad_request
from splitserve.router.openai_params import Endpoint, GenerationRequest, completion_budget, parse
from splitserve.router.registry import Registry
from splitserve.router.responses import LatencyWindow
from splitserve.router.text_stream import TextStream
from splitserve.worker import worker_pb2 as pb
from splitserve.worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_BODY_BYTES = 64 << 20
VERSION = "0.1.0"
# (method, path, RouterApp handler); /openapi.json describes each of them
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/v1/completions", "completions"),
    ("POST", "/v1/chat/completions", "chat"),
    ("GET", "/v1/models", "models"),
    ("GET", "/v1/models/{model:.+}", "model_card"),
    ("GET", "/health", "health"),
    ("GET", "/healthz", "healthz"),
    ("GET", "/readyz", "health"),
    ("GET", "/drain", "drain"),
    ("POST", "/drain", "drain"),
    ("GET", "/status", "status"),
    ("GET", "/metrics", "metrics_handler"),
    ("GET", "/openapi.json", "openapi_doc"),
)
PREFIXES = {"completions": "cmpl-", "chat": "chatcmpl-"}
ENDPOINT_SETTLE_S = 3.0  # a drain lasts at least this long: endpoint removal reaching proxies
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    tokenizer: Tokenizer
    vocab_size: int
    max_context: int
    created: int


@dataclass
class _Outcome:
    text: str
    finish_reason: str
    completion_tokens: int
    model: str  # weights digest of the checkpoint that answered


class RouterApp:
    def __init__(self, model: ModelInfo, registry: Registry, dispatcher: Dispatcher,
                 admission: Admission, metrics: WorkerMetrics, drain_timeout_s: float,
                 api_keys: ApiKeys | None = None) -> None:
        self.model = model
        self.api_keys = api_keys
        self.registry = registry
        self.dispatcher = dispatcher
        self.admission = admission
        self.metrics = metrics
        self.drain_timeout_s = drain_timeout_s
        self.draining = False
        self.ttft = LatencyWindow()
        self.tpot = LatencyWindow()

    def app(self) -> web.Application:
        middlewares: list[Any] = [self._close_if_draining, _http_errors]  # outermost first
        if self.api_keys is not None:
            middlewares.append(self._authenticate)
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=middlewares)
        app.add_routes([web.route(method, path, getattr(self, handler))
                        for method, path, handler in ROUTES])
        return app

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """API keys on the OpenAI endpoints (and any unknown path); health, drain, status and
        metrics stay open."""
        if self.api_keys is not None and request.path not in OPEN_PATHS:
            err = self.api_keys.check(request.headers.get("Authorization"))
            if err is not None:
                self.metrics.inc(names.ROUTER_ERRORS, reason=err.code or err.type)
                log.info("%s %s: %d %s", request.method, request.path, err.status, err.message)
                refused = _error_response(err, _new_id("completions"))
                refused.headers["WWW-Authenticate"] = "Bearer"
                return refused
        return await handler(request)

    @web.middleware
    async def _close_if_draining(self, request: web.Request, handler: Handler
                                 ) -> web.StreamResponse:
        """A draining router still serves whatever reaches it (clients keep connections to
        it until its endpoint is gone everywhere), but closes each connection after its
        response, so the client's next request opens one to a replica that stays."""
        response = await handler(request)
        if self.draining and not response.prepared:
            response.force_close()
        return response

    # ---- plain endpoints ------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response(responses.models(self.model.name, self.model.created))

    async def model_card(self, request: web.Request) -> web.Response:
        name = request.match_info["model"]
        if name != self.model.name:
            return _error_response(_unknown_model(name), _new_id("chat"))
        return web.json_response(responses.model_card(name, self.model.created))

    async def openapi_doc(self, request: web.Request) -> web.Response:
        return web.json_response(openapi.document(VERSION))

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"alive": True})

    async def health(self, request: web.Request) -> web.Response:
        pools = self.registry.summary()
        # ready while some decode worker would be offered (a standby one included)
        ok = bool(self.registry.available("decode")) and not self.draining
        return web.json_response({"ready": ok, "draining": self.draining, "pools": pools},
                                 status=200 if ok else 503)

    async def drain(self, request: web.Request) -> web.Response:
        """Readiness turns false, then this returns once nothing is in flight and at least
        ENDPOINT_SETTLE_S have passed (the time for the endpoint's removal to reach every
        proxy), or after the drain timeout."""
        self.draining = True
        started = time.monotonic()
        deadline = started + self.drain_timeout_s
        settled = started + min(ENDPOINT_SETTLE_S, self.drain_timeout_s)
        while (self.admission.inflight or time.monotonic() < settled) and \
                time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return web.json_response({"drained": self.admission.inflight == 0,
                                  "inflight": self.admission.inflight})

    async def status(self, request: web.Request) -> web.Response:
        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 1)

        return web.json_response({
            "pools": self.registry.summary(), "inflight": self.admission.inflight,
            "queued": self.admission.queued, "draining": self.draining,
            "ttft_ms": {"p50": ms(self.ttft.quantile(0.5)), "p90": ms(self.ttft.quantile(0.9))},
            "tpot_ms": {"p50": ms(self.tpot.quantile(0.5)), "p90": ms(self.tpot.quantile(0.9))},
        })

    async def metrics_handler(self, request: web.Request) -> web.Response:
        for role, counts in self.registry.summary().items():
            self.metrics.set(names.ROUTER_WORKERS, counts["ready"], pool=role)
        self.metrics.set(names.ROUTER_INFLIGHT, self.admission.inflight)
        return web.Response(body=generate_latest(self.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    # ---- generation -----------------------------------------------------------------------

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completions")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def _generate(self, request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        arrived = time.monotonic()
        header = request.headers.get("x-request-id", "")
        rid = header if REQUEST_ID_RE.match(header) else _new_id(endpoint)
        path = "/v1/" + ("completions" if endpoint == "completions" else "chat/completions")
        try:
            req, prompt, max_tokens = self._prepare(await _json_body(request), endpoint)
            log.info("request %s: %s, %d prompt tokens, max_tokens %d, stream %s%s", rid,
                     endpoint, len(prompt), max_tokens, req.stream,
                     f", user {req.user!r}" if req.user else "")
            async with self.admission.slot():
                response = await self._serve(request, rid, req, prompt, max_tokens, arrived)
        except ApiError as err:
            self._count(path, err.status, err.code or err.type)
            log.info("request %s: %d %s", rid, err.status, err.message)
            return _error_response(err, rid)
        except (ConnectionResetError, asyncio.CancelledError):
            self._count(path, 499, "client_disconnected")
            log.info("request %s: the client went away; cancelled", rid)
            raise
        except Exception:
            log.exception("request %s: internal error", rid)
            self._count(path, 500, "internal")
            return _error_response(ApiError(500, f"internal error in request {rid}",
                                            type="server_error", code="internal"), rid)
        self._count(path, response.status, None)
        return response

    def _count(self, path: str, status: int, reason: str | None) -> None:
        self.metrics.inc(names.ROUTER_REQUESTS, endpoint=path, code=str(status))
        if reason is not None:
            self.metrics.inc(names.ROUTER_ERRORS, reason=reason)

    def _prepare(self, body: Any, endpoint: Endpoint
                 ) -> tuple[GenerationRequest, list[int], int]:
        req = parse(body, endpoint)
        if req.model != self.model.name:
            raise _unknown_model(req.model)
        tok = self.model.tokenizer
        try:
            if req.messages is not None:
                prompt = tok.encode_chat([{"role": r, "content": c} for r, c in req.messages])
            elif req.prompt_text is not None:
                prompt = tok.encode(req.prompt_text)
            else:
                prompt = list(req.prompt_token_ids or ())
        except ValueError as exc:
            raise bad_request(str(exc), "messages" if endpoint == "chat" else "prompt") from None
        bad = [t for t in prompt if t >= self.model.vocab_size]
        if bad:
            raise bad_request(f"prompt: token ids {bad[:5]} are outside the vocabulary "
                              f"[0, {self.model.vocab_size})", "prompt")
        if not prompt:
            raise bad_request("prompt: encodes to no tokens", "prompt")
        return req, prompt, completion_budget(req, len(prompt), self.model.max_context)

    def _sampling(self, req: GenerationRequest, max_tokens: int) -> pb.SamplingParams:
        s = pb.SamplingParams(max_tokens=max_tokens, temperature=req.temperature,
                              top_k=req.top_k, top_p=req.top_p, stop=list(req.stop),
                              stop_token_ids=list(req.stop_token_ids),
                              ignore_eos=req.ignore_eos)
        if req.seed is not None:
            s.seed = req.seed
        return s

    async def _serve(self, request: web.Request, rid: str, req: GenerationRequest,
                     prompt: list[int], max_tokens: int, arrived: float) -> web.StreamResponse:
        events = self.dispatcher.run(rid, prompt, self._sampling(req, max_tokens))
        try:
            return await self._respond(request, rid, req, prompt, events, arrived)
        finally:
            await events.aclose()  # cancels the gRPC calls of an unfinished request

    async def _respond(self, request: web.Request, rid: str, req: GenerationRequest,
                       prompt: list[int], events: AsyncIterator[Tokens | Finished],
                       arrived: float) -> web.StreamResponse:
        first = await anext(events)  # errors before the first token keep their HTTP status
        text = TextStream(self.model.tokenizer.decode, req.stop)
        timing = _Timing(arrived)
        if not req.stream:
            outcome = await self._collect(first, events, text, timing)
            self._observe(timing)
            log.info("request %s: done, %d tokens, %s", rid, outcome.completion_tokens,
                     outcome.finish_reason)
            return web.json_response(
                responses.body(req.endpoint, rid, int(time.time()), self.model.name,
                               outcome.text, outcome.finish_reason, len(prompt),
                               outcome.completion_tokens, responses.fingerprint(outcome.model)),
                headers={"x-request-id": rid})
        return await self._stream(request, rid, req, len(prompt), first, events, text, timing)

    async def _collect(self, first: Tokens | Finished, events: AsyncIterator[Tokens | Finished],
                       text: TextStream, timing: _Timing) -> _Outcome:
        item = first
        while True:
            if isinstance(item, Finished):
                final = item.text if item.text is not None else text.full_text()
                return _Outcome(final, item.finish_reason, len(text.token_ids), item.model)
            timing.tokens(len(item.token_ids))
            text.token_ids.extend(item.token_ids)
            item = await anext(events)

    async def _stream(self, request: web.Request, rid: str, req: GenerationRequest,
                      prompt_tokens: int, first: Tokens | Finished,
                      events: AsyncIterator[Tokens | Finished], text: TextStream,
                      timing: _Timing) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache", "x-request-id": rid})
        if self.draining:
            resp.force_close()
        await resp.prepare(request)
        created, model, ep = int(time.time()), self.model.name, req.endpoint

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(f"data: {json.dumps(obj)}\n\n".encode())

        if ep == "chat":
            await send(responses.chunk(ep, rid, created, model, "", role=True))
        item: Tokens | Finished = first
        try:
            while True:
                if isinstance(item, Finished):
                    final = item.text if item.text is not None else text.full_text()
                    rest = text.finish(final)
                    await send(responses.chunk(
                        ep, rid, created, model, rest or None if ep == "chat" else rest,
                        item.finish_reason,
                        system_fingerprint=responses.fingerprint(item.model)))
                    if req.include_usage:
                        await send(responses.usage_chunk(ep, rid, created, model,
                                                         prompt_tokens, len(text.token_ids)))
                    break
                timing.tokens(len(item.token_ids))
                delta = text.add(item.token_ids)
                if delta:
                    await send(responses.chunk(ep, rid, created, model, delta))
                item = await anext(events)
        except ApiError as err:
            log.info("request %s: failed mid-stream: %s", rid, err.message)
            self.metrics.inc(names.ROUTER_ERRORS, reason=err.code or err.type)
            await send(err.body())
        else:
            self._observe(timing)
            log.info("request %s: streamed %d tokens", rid, len(text.token_ids))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def _observe(self, timing: _Timing) -> None:
        if timing.first is not None:
            ttft = timing.first - timing.arrived
            self.ttft.add(ttft)
            self.metrics.observe(names.TTFT_SECONDS, ttft)
            self.metrics.observe(names.E2E_SECONDS, timing.last - timing.arrived)
        if timing.count > 1 and timing.first is not None:
            tpot = (timing.last - timing.first) / (timing.count - 1)
            self.tpot.add(tpot)
            self.metrics.observe(names.TPOT_SECONDS, tpot)


class _Timing:
    def __init__(self, arrived: float) -> None:
        self.arrived = arrived
        self.first: float | None = None
        self.last = arrived
        self.count = 0

    def tokens(self, n: int) -> None:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        self.last = now
        self.count += n


def _new_id(endpoint: Endpoint) -> str:
    return PREFIXES[endpoint] + uuid.uuid4().hex[:24]


def _unknown_model(name: str) -> ApiError:
    return ApiError(404, f"model {name!r} does not exist; see /v1/models", param="model",
                    code="model_not_found")


async def _json_body(request: web.Request) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"request body: larger than the limit of {MAX_BODY_BYTES} bytes",
                       code="request_too_large") from None
    try:
        return json.loads(raw)
    except RecursionError:
        raise bad_request("request body is not valid JSON: nested too deeply",
                          code="invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers too long to read
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") \
            from None


@web.middleware
async def _http_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """aiohttp's own 4xx answers (unknown path, wrong method) as OpenAI-style errors."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else \
            "method_not_allowed" if exc.status == 405 else None
        err = ApiError(exc.status, f"{request.method} {request.path}: {exc.reason}", code=code)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(err.body(), status=exc.status, headers=allow)


def _error_response(err: ApiError, rid: str) -> web.Response:
    headers = {"x-request-id": rid}
    if err.retry_after_s is not None:
        headers["Retry-After"] = str(err.retry_after_s)
    return web.json_response(err.body(), status=err.status, headers=headers)
