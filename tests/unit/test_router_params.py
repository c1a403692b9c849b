"""OpenAI request validation: every parameter honoured or refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from splitserve.router.errors import ApiError
from splitserve.router.openai_params import PARAMETERS, completion_budget, parse


def refused(body: dict, endpoint: str = "completions") -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body, endpoint)  # type: ignore[arg-type]
    assert info.value.status == 400
    return info.value


def test_completion_defaults_and_honoured_values() -> None:
    req = parse({"model": "m", "prompt": "hi", "temperature": 0, "top_p": 0.9, "seed": 7,
                 "stop": "x", "user": "u", "stream": True,
                 "stream_options": {"include_usage": True}, "n": 1, "logprobs": None,
                 "echo": False, "best_of": 1, "presence_penalty": 0}, "completions")
    assert (req.prompt_text, req.max_tokens, req.temperature, req.top_p, req.seed) == \
        ("hi", 16, 0.0, 0.9, 7)
    assert req.stop == ("x",) and req.stream and req.include_usage and req.user == "u"


def test_chat_max_tokens_default_is_open_and_aliases_agree() -> None:
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"},
                                         {"type": "text", "text": "b"}]}]
    assert parse({"model": "m", "messages": msgs}, "chat").max_tokens is None
    assert parse({"model": "m", "messages": msgs, "max_completion_tokens": 5},
                 "chat").max_tokens == 5
    assert parse({"model": "m", "messages": msgs}, "chat").messages == (("user", "ab"),)
    err = refused({"model": "m", "messages": msgs, "max_tokens": 3,
                   "max_completion_tokens": 4}, "chat")
    assert err.param == "max_completion_tokens"


@pytest.mark.parametrize("prompt,text,ids", [
    ("abc", "abc", None), (["abc"], "abc", None), ([1, 2, 3], None, (1, 2, 3)),
    ([[4, 5]], None, (4, 5)),
])
def test_prompt_shapes(prompt: object, text: str | None, ids: tuple[int, ...] | None) -> None:
    req = parse({"model": "m", "prompt": prompt}, "completions")
    assert (req.prompt_text, req.prompt_token_ids) == (text, ids)


@pytest.mark.parametrize("body,param", [
    ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ({"model": "m", "prompt": "x", "max_tokens": True}, "max_tokens"),
    ({"model": "m", "prompt": "x", "temperature": "hot"}, "temperature"),
    ({"model": "m", "prompt": "x", "temperature": 3}, "temperature"),
    ({"model": "m", "prompt": "x", "top_p": 1.5}, "top_p"),
    ({"model": "m", "prompt": "x", "seed": -1}, "seed"),
    ({"model": "m", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "m", "prompt": "x", "stop": [""]}, "stop"),
    ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
    ({"model": "m", "prompt": "x", "stream_options": {"include_usage": True}},
     "stream_options"),
    ({"model": "m", "prompt": ""}, "prompt"),
    ({"model": "m", "prompt": ["a", "b"]}, "prompt"),
    ({"model": "m", "prompt": 5}, "prompt"),
    ({"model": "m", "prompt": [1, -2]}, "prompt"),
    ({"model": "m"}, "prompt"),
    ({"prompt": "x"}, "model"),
    ({"model": 3, "prompt": "x"}, "model"),
    ({"model": "m", "prompt": "x", "n": 2}, "n"),
    ({"model": "m", "prompt": "x", "logprobs": 2}, "logprobs"),
    ({"model": "m", "prompt": "x", "echo": True}, "echo"),
    ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": "m", "prompt": "x", "suffix": "s"}, "suffix"),
    ({"model": "m", "prompt": "x", "logit_bias": {"1": 5}}, "logit_bias"),
    ({"model": "m", "prompt": "x", "frequency_penalty": 0.5}, "frequency_penalty"),
    ({"model": "m", "prompt": "x", "bogus": 1}, "bogus"),
    ({"model": "m", "prompt": "x", "messages": []}, "messages"),
    ({"model": "m", "prompt": "x", "user": 5}, "user"),
])
def test_completion_refusals_name_the_parameter(body: dict, param: str) -> None:
    err = refused(body)
    assert err.param == param
    assert param in err.message


@pytest.mark.parametrize("extra,param", [
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"logprobs": True}, "logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"audio": {"voice": "x"}}, "audio"),
    ({"store": True}, "store"),
    ({"prompt": "x"}, "prompt"),
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
     "messages[0].tool_calls"),
])
def test_chat_refusals_name_the_parameter(extra: dict, param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    assert refused(body, "chat").param == param


def test_every_refused_parameter_accepts_its_neutral_value() -> None:
    neutral = {"n": 1, "best_of": 1, "echo": False, "logprobs": None, "top_logprobs": 0,
               "logit_bias": {}, "presence_penalty": 0, "frequency_penalty": 0.0,
               "tools": [], "tool_choice": "none", "functions": None, "function_call": None,
               "response_format": {"type": "text"}, "modalities": ["text"], "store": False,
               "metadata": None, "service_tier": "auto", "suffix": None, "audio": None,
               "prediction": None, "reasoning_effort": None, "web_search_options": None,
               "parallel_tool_calls": None}
    assert set(neutral) == {k for k, p in PARAMETERS.items() if not p.honoured}
    for name, value in neutral.items():
        endpoint = "chat" if "chat" in PARAMETERS[name].endpoints else "completions"
        base = {"model": "m", "messages": [{"role": "user", "content": "x"}]} \
            if endpoint == "chat" else {"model": "m", "prompt": "x"}
        parse({**base, name: value}, endpoint)  # type: ignore[arg-type]


def test_non_object_body() -> None:
    assert refused([1, 2]).param is None  # type: ignore[arg-type]


def test_top_p_zero_means_greedy() -> None:
    req = parse({"model": "m", "prompt": "x", "top_p": 0}, "completions")
    assert (req.temperature, req.top_p) == (0.0, 1.0)


def test_completion_budget() -> None:
    chat = parse({"model": "m", "messages": [{"role": "user", "content": "x"}]}, "chat")
    assert completion_budget(chat, 10, 100) == 90
    comp = parse({"model": "m", "prompt": "x", "max_tokens": 50}, "completions")
    assert completion_budget(comp, 10, 100) == 50
    with pytest.raises(ApiError) as info:
        completion_budget(comp, 60, 100)
    assert info.value.param == "max_tokens" and info.value.code == "context_length_exceeded"
    with pytest.raises(ApiError) as info:
        completion_budget(comp, 100, 100)
    assert info.value.param == "prompt" and "context limit of 100" in info.value.message


@pytest.mark.parametrize("name,value", [("top_k", 2**31), ("top_k", 10**30),
                                        ("stop_token_ids", [2**31]), ("prompt", [2**40])])
def test_integers_beyond_32_bits_are_refused_naming_the_parameter(name: str, value: Any) -> None:
    body: dict[str, Any] = {"model": "m", "prompt": "hi", name: value}
    with pytest.raises(ApiError) as err:
        parse(body, "completions")
    assert err.value.status == 400 and err.value.param == name


@pytest.mark.parametrize("body,endpoint,param", [
    ({"prompt": "a\ud800b"}, "completions", "prompt"),
    ({"prompt": "ok", "stop": ["\udfff"]}, "completions", "stop"),
    ({"messages": [{"role": "user", "content": "\ud800"}]}, "chat", "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}]}, "chat",
     "messages[0].content"),
])
def test_lone_surrogates_are_refused_naming_the_parameter(body: dict[str, Any], endpoint: str,
                                                          param: str) -> None:
    err = refused({"model": "m", **body}, endpoint)
    assert err.status == 400 and err.param == param and "surrogate" in err.message
