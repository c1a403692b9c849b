"""The router's OpenAPI 3 description, served at /openapi.json (pure: built from the tables).

Request bodies come from `openai_params.PARAMETERS`: honoured parameters carry their type and
bounds; refused ones are listed without a type (only their neutral value is accepted); any other
field is refused (`additionalProperties: false`). Every 4xx answer is an `Error`.
"""

from __future__ import annotations

from typing import Any

from splitserve.router.openai_params import MAX_INT32, MAX_STOP, PARAMETERS, Endpoint

OPENAPI_VERSION = "3.0.3"
JSON = "application/json"

_TOKEN_ID = {"type": "integer", "minimum": 0, "maximum": MAX_INT32}
_TOKEN_IDS = {"type": "array", "items": _TOKEN_ID, "minItems": 1}
_TEXT = {"type": "string", "minLength": 1}
_HONOURED: dict[str, dict[str, Any]] = {
    "model": {"type": "string", "minLength": 1},
    "prompt": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "minItems": 1, "maxItems": 1},
                         _TOKEN_IDS]},
    "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
    "max_tokens": {"type": "integer", "minimum": 1},
    "max_completion_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
    "stop": {"oneOf": [_TEXT, {"type": "array", "items": _TEXT, "maxItems": MAX_STOP}]},
    "stop_token_ids": {"type": "array", "items": _TOKEN_ID},
    "ignore_eos": {"type": "boolean"},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "additionalProperties": False,
                       "properties": {"include_usage": {"type": "boolean"}}},
    "user": {"type": "string"},
}
_REQUIRED: dict[Endpoint, list[str]] = {"completions": ["model", "prompt"],
                                        "chat": ["model", "messages"]}


def request_schema(endpoint: Endpoint) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, param in PARAMETERS.items():
        if endpoint not in param.endpoints:
            continue
        if param.honoured:
            props[name] = {**_HONOURED[name], "description": param.note}
        else:
            props[name] = {"description": f"not served: {param.note}; only its neutral value "
                                          "is accepted", "nullable": True}
    return {"type": "object", "required": _REQUIRED[endpoint], "properties": props,
            "additionalProperties": False}


def _error_schema() -> dict[str, Any]:
    nullable = {"type": "string", "nullable": True}
    return {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {**nullable, "description": "the parameter at fault"},
                       "code": nullable}}}}


def _message_schema() -> dict[str, Any]:
    part = {"type": "object", "required": ["type", "text"],
            "properties": {"type": {"type": "string", "enum": ["text"]},
                           "text": {"type": "string"}}}
    return {"type": "object", "required": ["role", "content"], "additionalProperties": False,
            "properties": {
                "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
                "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": part}]},
                "name": {"type": "string"}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "an OpenAI-style error",
                     "content": {JSON: {"schema": _ref("Error")}}} for c in codes}


def _json_ok(description: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {JSON: {"schema": {"type": "object"}}}}}


def _generation(endpoint: Endpoint, summary: str) -> dict[str, Any]:
    schema = "CompletionRequest" if endpoint == "completions" else "ChatCompletionRequest"
    return {"post": {
        "summary": summary, "operationId": endpoint,
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref(schema)}}},
        "responses": {
            "200": {"description": "the answer, or server-sent events when stream is true",
                    "content": {JSON: {"schema": {"type": "object"}},
                                "text/event-stream": {"schema": {"type": "string"}}}},
            **_errors(400, 404, 413, 503)}}}


def _get(summary: str, operation: str, *errors: int) -> dict[str, Any]:
    return {"summary": summary, "operationId": operation,
            "responses": {**_json_ok(summary), **_errors(*errors)}}


def document(version: str) -> dict[str, Any]:
    drain = _get("stop taking requests and wait for the running ones", "drain")
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "splitserve router", "version": version,
                 "description": "OpenAI-compatible completions and chat completions."},
        "paths": {
            "/v1/completions": _generation("completions", "create a completion"),
            "/v1/chat/completions": _generation("chat", "create a chat completion"),
            "/v1/models": {"get": _get("the served model", "listModels")},
            "/v1/models/{model}": {"get": {
                **_get("one model", "retrieveModel", 404),
                "parameters": [{"name": "model", "in": "path", "required": True,
                                "schema": {"type": "string"}}]}},
            "/health": {"get": _get("readiness with pool counts (503 when not ready)",
                                    "health", 503)},
            "/readyz": {"get": _get("readiness (503 when not ready)", "readyz", 503)},
            "/healthz": {"get": _get("liveness", "healthz")},
            "/status": {"get": _get("pools, queue and latency summary", "status")},
            "/drain": {"get": {**drain, "operationId": "drainGet"},
                       "post": {**drain, "operationId": "drainPost"}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics",
                                 "responses": {"200": {"description": "text exposition format",
                                                       "content": {"text/plain": {
                                                           "schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": _get("this document", "openapi")},
        },
        "components": {"schemas": {
            "CompletionRequest": request_schema("completions"),
            "ChatCompletionRequest": request_schema("chat"),
            "Message": _message_schema(),
            "Error": _error_schema(),
        }},
    }
