"""OpenAI request bodies → one validated `GenerationRequest` (pure: no I/O, no tokenizer).

Every parameter of the OpenAI completions and chat completions APIs appears in `PARAMETERS`,
either honoured or refused with a 400 that names it unless it carries its neutral value; a
parameter not in the table is refused as unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from splitserve.router.errors import bad_request

Endpoint = Literal["completions", "chat"]
BOTH: frozenset[Endpoint] = frozenset({"completions", "chat"})
COMPLETIONS: frozenset[Endpoint] = frozenset({"completions"})
CHAT: frozenset[Endpoint] = frozenset({"chat"})
MAX_STOP = 4
MAX_INT32 = 2**31 - 1  # token ids and top_k travel to the workers as 32-bit integers
CHAT_ROLES = ("system", "developer", "user", "assistant")


def _none(v: Any) -> bool:
    return v is None


def _falsy(v: Any) -> bool:
    return v is None or v is False


def _zero(v: Any) -> bool:
    return v is None or (not isinstance(v, bool) and v == 0)


def _one(v: Any) -> bool:
    return v is None or (not isinstance(v, bool) and v == 1)


def _empty(v: Any) -> bool:
    return v is None or v == {} or v == []


def _text_format(v: Any) -> bool:
    return v is None or v == {"type": "text"}


def _text_only(v: Any) -> bool:
    return v is None or v == ["text"]


def _default_tier(v: Any) -> bool:
    return v in (None, "auto", "default")


@dataclass(frozen=True)
class Param:
    endpoints: frozenset[Endpoint]
    honoured: bool
    note: str
    neutral: Callable[[Any], bool] = _none  # for refused ones: values accepted as "not used"


PARAMETERS: dict[str, Param] = {
    "model": Param(BOTH, True, "must name the served model"),
    "prompt": Param(COMPLETIONS, True, "a string, one-element list of strings, or token ids"),
    "messages": Param(CHAT, True, "roles system/developer/user/assistant with text content"),
    "max_tokens": Param(BOTH, True, "integer >= 1; default 16 (completions) or the context"),
    "max_completion_tokens": Param(CHAT, True, "same as max_tokens"),
    "temperature": Param(BOTH, True, "number in [0, 2]; 0 is greedy"),
    "top_p": Param(BOTH, True, "number in [0, 1]; 0 is greedy"),
    "top_k": Param(BOTH, True, f"extension: integer in [0, {MAX_INT32}] (0 = off)"),
    "seed": Param(BOTH, True, "integer in [0, 2**63)"),
    "stop": Param(BOTH, True, f"a string or up to {MAX_STOP} strings"),
    "stop_token_ids": Param(BOTH, True, "extension: token ids that end generation"),
    "ignore_eos": Param(BOTH, True, "extension: keep generating past end-of-sequence"),
    "stream": Param(BOTH, True, "server-sent events"),
    "stream_options": Param(BOTH, True, "{include_usage: bool}; only with stream"),
    "user": Param(BOTH, True, "logged with the request id"),
    "n": Param(BOTH, False, "only n=1 is served", _one),
    "best_of": Param(COMPLETIONS, False, "only best_of=1 is served", _one),
    "echo": Param(COMPLETIONS, False, "echo is not served", _falsy),
    "suffix": Param(COMPLETIONS, False, "suffix (insertion) is not served"),
    "logprobs": Param(BOTH, False, "log probabilities are not served", _falsy),
    "top_logprobs": Param(CHAT, False, "log probabilities are not served", _zero),
    "logit_bias": Param(BOTH, False, "logit bias is not served", _empty),
    "presence_penalty": Param(BOTH, False, "penalties are not served", _zero),
    "frequency_penalty": Param(BOTH, False, "penalties are not served", _zero),
    "tools": Param(CHAT, False, "tool calling is not served", _empty),
    "tool_choice": Param(CHAT, False, "tool calling is not served", lambda v: v in (None, "none")),
    "parallel_tool_calls": Param(CHAT, False, "tool calling is not served"),
    "functions": Param(CHAT, False, "function calling is not served", _empty),
    "function_call": Param(CHAT, False, "function calling is not served",
                           lambda v: v in (None, "none")),
    "response_format": Param(CHAT, False, "only {type: text} is served", _text_format),
    "modalities": Param(CHAT, False, "only text output is served", _text_only),
    "audio": Param(CHAT, False, "audio output is not served"),
    "prediction": Param(CHAT, False, "predicted outputs are not served"),
    "reasoning_effort": Param(CHAT, False, "reasoning effort is not served"),
    "web_search_options": Param(CHAT, False, "web search is not served"),
    "store": Param(CHAT, False, "stored completions are not served", _falsy),
    "metadata": Param(CHAT, False, "metadata is only used with store, which is not served",
                      _empty),
    "service_tier": Param(BOTH, False, "only the default tier is served", _default_tier),
}


@dataclass(frozen=True)
class GenerationRequest:
    endpoint: Endpoint
    model: str
    prompt_text: str | None = None  # completions with a string prompt
    prompt_token_ids: tuple[int, ...] | None = None  # completions with token ids
    messages: tuple[tuple[str, str], ...] | None = None  # chat: (role, content)
    max_tokens: int | None = None  # None: up to the context limit
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _int(body: dict[str, Any], name: str, lo: int, hi: int | None = None) -> int | None:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise bad_request(f"{name}: expected an integer, got {_type_name(v)}", name)
    if v < lo or (hi is not None and v >= hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi})"
        raise bad_request(f"{name}={v}: expected an integer {bound}", name)
    return v


def _number(body: dict[str, Any], name: str, lo: float, hi: float, default: float) -> float:
    v = body.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise bad_request(f"{name}: expected a number, got {_type_name(v)}", name)
    if not lo <= v <= hi:
        raise bad_request(f"{name}={v}: expected a number in [{lo}, {hi}]", name)
    return float(v)


def _bool(body: dict[str, Any], name: str) -> bool:
    v = body.get(name)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise bad_request(f"{name}: expected a boolean, got {_type_name(v)}", name)
    return v


def _text(v: str, name: str) -> str:
    """`v` if it is valid Unicode (JSON lets a lone surrogate through as an escape)."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(f"{name}: not valid Unicode text (a lone surrogate at index "
                          f"{exc.start})", name) from None
    return v


def _token_ids(v: Any, name: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool)
                                          and 0 <= t <= MAX_INT32 for t in v):
        raise bad_request(f"{name}: expected a list of integers in [0, {MAX_INT32}]", name)
    return tuple(v)


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    v = body.get("stop")
    if v is None:
        return ()
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list) or not all(isinstance(s, str) and s for s in items):
        raise bad_request("stop: expected a non-empty string or a list of non-empty strings",
                          "stop")
    if len(items) > MAX_STOP:
        raise bad_request(f"stop: at most {MAX_STOP} sequences, got {len(items)}", "stop")
    return tuple(_text(s, "stop") for s in items)


def _prompt(v: Any) -> tuple[str | None, tuple[int, ...] | None]:
    if isinstance(v, list) and len(v) == 1 and isinstance(v[0], str | list):
        v = v[0]
    if isinstance(v, str):
        if not v:
            raise bad_request("prompt: expected a non-empty string", "prompt")
        return _text(v, "prompt"), None
    if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool)
                                         for t in v):
        return None, _token_ids(v, "prompt")
    if isinstance(v, list) and len(v) > 1 and all(isinstance(p, str | list) for p in v):
        raise bad_request(f"prompt: one prompt per request is served, got {len(v)}", "prompt")
    raise bad_request("prompt: expected a non-empty string or a non-empty list of token ids, "
                      f"got {_type_name(v)}", "prompt")


def _content(v: Any, i: int) -> str:
    if isinstance(v, str):
        return _text(v, f"messages[{i}].content")
    if isinstance(v, list):
        parts = []
        for part in v:
            if not isinstance(part, dict) or part.get("type") != "text" \
                    or not isinstance(part.get("text"), str):
                raise bad_request(f"messages[{i}].content: only text parts are served",
                                  f"messages[{i}].content")
            parts.append(part["text"])
        return _text("".join(parts), f"messages[{i}].content")
    raise bad_request(f"messages[{i}].content: expected a string or a list of text parts, got "
                      f"{_type_name(v)}", f"messages[{i}].content")


def _messages(v: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(v, list) or not v:
        raise bad_request("messages: expected a non-empty list of messages", "messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise bad_request(f"messages[{i}]: expected an object, got {_type_name(m)}",
                              f"messages[{i}]")
        role = m.get("role")
        if role not in CHAT_ROLES:
            raise bad_request(f"messages[{i}].role={role!r}: expected one of {list(CHAT_ROLES)}",
                              f"messages[{i}].role")
        extra = sorted(set(m) - {"role", "content", "name"})
        if extra:
            raise bad_request(f"messages[{i}].{extra[0]}: not served", f"messages[{i}].{extra[0]}")
        out.append((str(role), _content(m.get("content"), i)))
    return tuple(out)


def _check_table(body: dict[str, Any], endpoint: Endpoint) -> None:
    for name, value in body.items():
        param = PARAMETERS.get(name)
        if param is None or endpoint not in param.endpoints:
            raise bad_request(f"{name}: unrecognized request argument", name)
        if not param.honoured and not param.neutral(value):
            raise bad_request(f"{name}: {param.note}", name, "unsupported_parameter")


def parse(body: Any, endpoint: Endpoint) -> GenerationRequest:
    """Validates a decoded JSON body; raises ApiError(400) naming the first bad parameter."""
    if not isinstance(body, dict):
        raise bad_request(f"request body: expected a JSON object, got {_type_name(body)}")
    _check_table(body, endpoint)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: required, expected a string", "model")
    prompt_text, prompt_ids, messages = None, None, None
    if endpoint == "completions":
        if "prompt" not in body:
            raise bad_request("prompt: required", "prompt")
        prompt_text, prompt_ids = _prompt(body["prompt"])
    else:
        messages = _messages(body.get("messages"))
    max_tokens = _int(body, "max_tokens", 1)
    if endpoint == "chat":
        mct = _int(body, "max_completion_tokens", 1)
        if mct is not None and max_tokens is not None and mct != max_tokens:
            raise bad_request("max_completion_tokens and max_tokens disagree; set one",
                              "max_completion_tokens")
        max_tokens = mct if mct is not None else max_tokens
    elif max_tokens is None:
        max_tokens = 16
    temperature = _number(body, "temperature", 0.0, 2.0, 1.0)
    top_p = _number(body, "top_p", 0.0, 1.0, 1.0)
    if top_p == 0.0:
        temperature, top_p = 0.0, 1.0
    stream = _bool(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise bad_request("stream_options: only allowed when stream is true",
                              "stream_options")
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise bad_request("stream_options: expected {include_usage: bool}", "stream_options")
        include_usage = _bool(options, "include_usage")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request(f"user: expected a string, got {_type_name(user)}", "user")
    stop_ids = body.get("stop_token_ids")
    return GenerationRequest(
        endpoint=endpoint, model=model, prompt_text=prompt_text, prompt_token_ids=prompt_ids,
        messages=messages, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        top_k=_int(body, "top_k", 0, MAX_INT32 + 1) or 0, seed=_int(body, "seed", 0, 2**63),
        stop=_stop(body),
        stop_token_ids=() if stop_ids is None else _token_ids(stop_ids, "stop_token_ids"),
        ignore_eos=_bool(body, "ignore_eos"), stream=stream, include_usage=include_usage,
        user=user,
    )


def completion_budget(req: GenerationRequest, prompt_tokens: int, max_context: int) -> int:
    """max_tokens to ask the engine for; 400 when the prompt (plus max_tokens) exceeds the
    context limit."""
    param = "messages" if req.endpoint == "chat" else "prompt"
    room = max_context - prompt_tokens
    if room < 1:
        raise bad_request(
            f"{param}: {prompt_tokens} prompt tokens exceed the context limit of {max_context} "
            "tokens (prompt plus at least one generated token)", param,
            "context_length_exceeded")
    if req.max_tokens is None:
        return room
    if req.max_tokens > room:
        raise bad_request(
            f"max_tokens={req.max_tokens}: the context limit is {max_context} tokens and the "
            f"prompt has {prompt_tokens}, so at most {room} can be generated", "max_tokens",
            "context_length_exceeded")
    return req.max_tokens
