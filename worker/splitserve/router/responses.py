"""OpenAI response bodies and stream chunks (pure)."""

from __future__ import annotations

from collections import deque
from typing import Any

from splitserve.router.openai_params import Endpoint


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _object(endpoint: Endpoint, chunk: bool) -> str:
    if endpoint == "completions":
        return "text_completion"
    return "chat.completion.chunk" if chunk else "chat.completion"


def fingerprint(weights_digest: str) -> str | None:
    """`system_fingerprint`: names the checkpoint that generated an answer (None if unknown)."""
    return f"fp_{weights_digest[:16]}" if weights_digest else None


def body(endpoint: Endpoint, rid: str, created: int, model: str, text: str,
         finish_reason: str, prompt_tokens: int, completion_tokens: int,
         system_fingerprint: str | None = None) -> dict[str, Any]:
    if endpoint == "completions":
        choice: dict[str, Any] = {"index": 0, "text": text, "logprobs": None,
                                  "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "logprobs": None, "finish_reason": finish_reason}
    return {"id": rid, "object": _object(endpoint, False), "created": created, "model": model,
            "system_fingerprint": system_fingerprint, "choices": [choice],
            "usage": usage(prompt_tokens, completion_tokens)}


def chunk(endpoint: Endpoint, rid: str, created: int, model: str, text: str | None,
          finish_reason: str | None = None, role: bool = False,
          system_fingerprint: str | None = None) -> dict[str, Any]:
    """One streamed choice delta (`role=True` opens a chat stream with the assistant role); the
    finishing chunk carries the `system_fingerprint` of the checkpoint that answered."""
    if endpoint == "completions":
        choice: dict[str, Any] = {"index": 0, "text": text or "", "logprobs": None,
                                  "finish_reason": finish_reason}
    else:
        delta: dict[str, Any] = {}
        if role:
            delta["role"] = "assistant"
        if text is not None:
            delta["content"] = text
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    out = {"id": rid, "object": _object(endpoint, True), "created": created, "model": model,
           "choices": [choice]}
    if system_fingerprint is not None:
        out["system_fingerprint"] = system_fingerprint
    return out


def usage_chunk(endpoint: Endpoint, rid: str, created: int, model: str, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    return {"id": rid, "object": _object(endpoint, True), "created": created, "model": model,
            "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def models(model: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(model, created)]}


def model_card(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "splitserve"}


class LatencyWindow:
    """The most recent samples of one latency, for the status view."""

    def __init__(self, size: int = 512) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._samples.append(value)

    def quantile(self, q: float) -> float | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
