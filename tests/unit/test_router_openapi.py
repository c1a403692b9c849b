"""The router's OpenAPI description matches what it serves: every route and only those, every
request parameter of the parameter table, and references that resolve."""

from __future__ import annotations

import json
import re
from typing import Any

from splitserve.router.openai_params import PARAMETERS
from splitserve.router.openapi import document, request_schema
from splitserve.router.server import ROUTES, RouterApp

DOC = document("test")


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_paths_and_methods_are_exactly_the_routes() -> None:
    routed = {(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path), method.lower())
              for method, path, _ in ROUTES}
    documented = {(path, method) for path, ops in DOC["paths"].items() for method in ops}
    assert documented == routed


def test_the_served_application_has_exactly_the_documented_routes() -> None:
    # the app is built from ROUTES and the handlers only; no model or worker is needed
    router = RouterApp.__new__(RouterApp)
    router.api_keys = None
    app = router.app()
    served = {(re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical), route.method.lower())
              for route in app.router.routes()
              if route.method != "HEAD" and route.resource is not None}
    documented = {(path, method) for path, ops in DOC["paths"].items() for method in ops}
    assert served == documented


def test_request_bodies_list_every_parameter_of_their_endpoint() -> None:
    for endpoint in ("completions", "chat"):
        schema = request_schema(endpoint)
        want = {n for n, p in PARAMETERS.items() if endpoint in p.endpoints}
        assert set(schema["properties"]) == want
        assert set(schema["required"]) <= want and "model" in schema["required"]
        assert schema["additionalProperties"] is False
        for name, prop in schema["properties"].items():
            typed = "type" in prop or "oneOf" in prop or "$ref" in prop
            assert typed == PARAMETERS[name].honoured, name
            assert prop["description"], name


def test_every_operation_documents_its_answers_and_errors_are_the_error_schema() -> None:
    for path, ops in DOC["paths"].items():
        for method, op in ops.items():
            assert op["operationId"] and "200" in op["responses"], (path, method)
            for status, answer in op["responses"].items():
                if status.startswith("4") or status.startswith("5"):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    ids = [op["operationId"] for ops in DOC["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_references_resolve_and_the_document_is_json() -> None:
    names = set(DOC["components"]["schemas"])
    for ref in refs(DOC):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in names, ref
    assert json.loads(json.dumps(DOC)) == DOC
    assert DOC["openapi"].startswith("3.0")
