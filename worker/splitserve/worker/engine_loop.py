"""The one thread that owns an LLMEngine: every engine call runs here, in order.

Other threads hand work over with `call` (wait for the result) or `call_soon` (fire and forget);
outputs go to a per-request sink; a per-request layer hook sees each layer of each step that
computes part of that request's prompt (the prefill side streams KV from it).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TypeVar

from splitserve.engine.llm_engine import LLMEngine, RequestOutput
from splitserve.engine.sampling_params import SamplingParams
from splitserve.engine.sequence import Sequence

T = TypeVar("T")
Sink = Callable[[RequestOutput | BaseException], None]
LayerHook = Callable[[int, Sequence, int, int], None]  # layer, seq, first token, end token

log = logging.getLogger(__name__)


class EngineStopped(RuntimeError):
    pass


class EngineLoop:
    def __init__(self, engine: LLMEngine, idle_wake_s: float = 0.05) -> None:
        self.engine = engine
        self._cv = threading.Condition()
        self._calls: deque[tuple[Callable[[], object], Future[object] | None]] = deque()
        self._sinks: dict[str, Sink] = {}
        self._hooks: dict[str, LayerHook] = {}
        self._periodic: list[Callable[[], None]] = []
        self._idle_wake_s = idle_wake_s
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify()
        self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopped

    def every_iteration(self, task: Callable[[], None]) -> None:
        """Runs `task` on the loop thread on every iteration (at least every idle wake)."""
        self._periodic.append(task)

    # ---- handing work to the loop ---------------------------------------------------------

    def call(self, fn: Callable[[], T], timeout_s: float | None = 30.0) -> T:
        fut: Future[object] = Future()
        self._enqueue(fn, fut)
        return fut.result(timeout_s)  # type: ignore[return-value]

    def call_soon(self, fn: Callable[[], object]) -> None:
        self._enqueue(fn, None)

    def _enqueue(self, fn: Callable[[], object], fut: Future[object] | None) -> None:
        with self._cv:
            if self._stopped:
                raise EngineStopped("the engine loop has stopped")
            self._calls.append((fn, fut))
            self._cv.notify()

    def submit(self, request_id: str, prompt: list[int], params: SamplingParams, sink: Sink,
               hold_kv: bool = False, hook: LayerHook | None = None) -> None:
        """Adds a request; raises ValueError (bad input) in the caller's thread."""
        def add() -> None:
            self.engine.add_request(request_id, prompt, params, hold_kv=hold_kv)
            self._sinks[request_id] = sink
            if hook is not None:
                self._hooks[request_id] = hook
        self.call(add)

    def commit(self, request_id: str, first_token: int, sink: Sink) -> None:
        """Continues a reserved request whose KV arrived; its first token goes to `sink`."""
        def go() -> None:
            out = self.engine.commit(request_id, first_token)
            if not out.finished:
                self._sinks[request_id] = sink
            sink(out)
        self.call(go)

    def abort(self, request_id: str) -> None:
        """Stops a request and frees its blocks (also held ones); safe to call twice."""
        def go() -> None:
            self._sinks.pop(request_id, None)
            self._hooks.pop(request_id, None)
            self.engine.abort(request_id)
        if self.alive:
            self.call_soon(go)

    # ---- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cv:
                if not (self._calls or self._stopped or self.engine.has_unfinished()):
                    self._cv.wait(self._idle_wake_s)
                if self._stopped:
                    break
                calls = list(self._calls)
                self._calls.clear()
            for fn, fut in calls:
                self._run_call(fn, fut)
            for task in self._periodic:
                self._guard(task)
            if self.engine.has_unfinished():
                self._step()
        self._fail_all(EngineStopped("the worker is shutting down"))

    def _run_call(self, fn: Callable[[], object], fut: Future[object] | None) -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the caller, who decides
            if fut is not None:
                fut.set_exception(exc)
            else:
                log.exception("engine call failed")
            return
        if fut is not None:
            fut.set_result(result)

    def _guard(self, task: Callable[[], None]) -> None:
        try:
            task()
        except Exception:
            log.exception("periodic engine task failed")

    def _on_layer(self, layer: int) -> None:
        for item in self.engine.in_flight.scheduled:
            hook = self._hooks.get(item.seq.seq_id)
            if hook is not None:
                start = item.seq.num_computed_tokens
                hook(layer, item.seq, start, start + item.num_tokens)

    def _step(self) -> None:
        try:
            outputs = self.engine.step(self._on_layer if self._hooks else None)
        except Exception as exc:
            log.exception("engine step failed; failing its requests")
            for item in self.engine.in_flight.scheduled:
                self._finish_with_error(item.seq.seq_id, exc)
            return
        if not self.engine.in_flight.scheduled:
            with self._cv:  # nothing could run (no free blocks): wait for a call to change that
                if not self._calls and not self._stopped:
                    self._cv.wait(self._idle_wake_s)
        for out in outputs:
            sink = self._sinks.get(out.request_id)
            if out.finished:
                self._sinks.pop(out.request_id, None)
                self._hooks.pop(out.request_id, None)
            if sink is not None:
                sink(out)

    def _finish_with_error(self, request_id: str, exc: BaseException) -> None:
        sink = self._sinks.pop(request_id, None)
        self._hooks.pop(request_id, None)
        self.engine.abort(request_id)
        if sink is not None:
            sink(exc)

    def _fail_all(self, exc: BaseException) -> None:
        for request_id in list(self._sinks):
            self._finish_with_error(request_id, exc)
        with self._cv:
            calls = list(self._calls)
            self._calls.clear()
        for _, fut in calls:
            if fut is not None:
                fut.set_exception(exc)
