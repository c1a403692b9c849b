"""Hypothesis strategies generated from an OpenAPI 3 schema: valid values, and bodies with one
field spoiled (wrong type, out of range, too long, unknown field, missing required field).

Covers the subset of JSON Schema the router's description uses: $ref, oneOf, enum, type,
minimum/maximum, minLength, minItems/maxItems, required, properties, additionalProperties.
Integers without an upper bound are drawn small (plus one huge value), so valid generation
requests stay short.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Schema = dict[str, Any]
HUGE = 10**30


@dataclass(frozen=True)
class Spoiled:
    """A body whose `field` was made invalid by `how`."""

    body: dict[str, Any]
    field: str
    how: str


class SchemaStrategies:
    def __init__(self, components: dict[str, Schema],
                 overrides: dict[str, st.SearchStrategy[Any]] | None = None) -> None:
        self.components = components
        self.overrides = overrides or {}

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    # ---- valid ----------------------------------------------------------------------------

    def valid(self, schema: Schema) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if "oneOf" in schema:
            return st.one_of([self.valid(s) for s in schema["oneOf"]])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kind = schema.get("type")
        if kind is None:  # a parameter that is only accepted with its neutral value
            return st.none()
        if kind == "boolean":
            return st.booleans()
        if kind == "integer":
            lo = schema.get("minimum", -8)
            hi = schema.get("maximum")
            if hi is not None:
                return st.one_of(st.integers(lo, min(hi, lo + 8)), st.just(hi))
            return st.one_of(st.integers(lo, lo + 8), st.just(HUGE))
        if kind == "number":
            return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6))
        if kind == "string":
            return st.text(min_size=schema.get("minLength", 0), max_size=24)
        if kind == "array":
            lo = schema.get("minItems", 0)
            return st.lists(self.valid(schema["items"]), min_size=lo,
                            max_size=min(schema.get("maxItems", lo + 4), lo + 4))
        if kind == "object":
            return self.object(schema)
        raise ValueError(f"type={kind!r}: not covered by this generator")

    def property(self, name: str, schema: Schema) -> st.SearchStrategy[Any]:
        return self.overrides[name] if name in self.overrides else self.valid(schema)

    def object(self, schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
        props: dict[str, Schema] = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {n: self.property(n, s) for n, s in props.items() if n in required},
            optional={n: self.property(n, s) for n, s in props.items() if n not in required})

    # ---- invalid --------------------------------------------------------------------------

    def wrong_type(self, schema: Schema) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        kinds = {s.get("type") for s in schema.get("oneOf", [schema])}
        candidates: list[st.SearchStrategy[Any]] = []
        if "string" not in kinds:
            candidates.append(st.text(max_size=8))
        if "integer" not in kinds and "number" not in kinds:
            candidates.append(st.integers(-5, 5))
        if "number" not in kinds:
            candidates.append(st.floats(allow_nan=False).filter(lambda f: not f.is_integer()))
        if "boolean" not in kinds:
            candidates.append(st.booleans())
        if "array" not in kinds:
            candidates.append(st.lists(st.integers(), max_size=2))
        if "object" not in kinds:
            candidates.append(st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
        return st.one_of(candidates)

    def out_of_range(self, schema: Schema) -> st.SearchStrategy[Any] | None:
        schema = self.resolve(schema)
        kind = schema.get("type")
        bad: list[Any] = []
        if kind in ("integer", "number"):
            if "minimum" in schema:
                bad += [schema["minimum"] - 1, -HUGE]
            if "maximum" in schema:
                bad += [schema["maximum"] + 1, HUGE, 2**64]
            if kind == "number":
                bad += [float("nan"), float("inf"), -float("inf")]
        if kind == "string" and schema.get("minLength", 0) > 0:
            bad.append("")
        if kind == "array":
            if schema.get("minItems", 0) > 0:
                bad.append([])
            if "maxItems" in schema:
                return st.lists(self.valid(schema["items"]),
                                min_size=schema["maxItems"] + 1, max_size=schema["maxItems"] + 3)
        return st.sampled_from(bad) if bad else None


def _typed(schema: Schema) -> bool:
    return "type" in schema or "oneOf" in schema


@st.composite
def spoiled(draw: st.DrawFn, gen: SchemaStrategies, schema: Schema) -> Spoiled:
    """A valid body of `schema` with one field spoiled."""
    body: dict[str, Any] = draw(gen.object(schema))
    props: dict[str, Schema] = schema["properties"]
    how = draw(st.sampled_from(["wrong type", "out of range", "unknown field",
                                "missing required", "refused value"]))
    if how == "unknown field":
        name = draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in props))
        body[name] = draw(st.one_of(st.none(), st.integers(), st.text(max_size=4)))
        return Spoiled(body, name, how)
    if how == "refused value":
        refused = sorted(n for n, s in props.items() if not _typed(gen.resolve(s)))
        name = draw(st.sampled_from(refused))
        body[name] = draw(st.sampled_from([5, "x", [1], {"a": 1}]))
        return Spoiled(body, name, how)
    if how == "missing required":
        name = draw(st.sampled_from(sorted(schema["required"])))
        del body[name]
        return Spoiled(body, name, how)
    if how == "out of range":
        ranged = {n: s for n, s in props.items() if gen.out_of_range(s) is not None}
        name = draw(st.sampled_from(sorted(ranged)))
        bad = gen.out_of_range(ranged[name])
        assert bad is not None
        body[name] = draw(bad)
        return Spoiled(body, name, how)
    typed = sorted(n for n, s in props.items() if _typed(gen.resolve(s)))
    name = draw(st.sampled_from(typed))
    body[name] = draw(gen.wrong_type(props[name]))
    return Spoiled(body, name, how)
