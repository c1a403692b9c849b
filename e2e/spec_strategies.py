"""Hypothesis strategies for `SplitService` specs, generated from the pydantic models' JSON schema:
valid specs, and specs with one field spoiled (wrong type, out of range, unknown field, missing
required field) that say which field they spoiled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

Schema = dict[str, Any]
QUANTITIES = ["10m", "100m", "1", "2", "500m", "16Mi", "1Gi", "2Gi", "1.5", "1e3", 1, 4]
UNKNOWN = "fuzzUnknownField"


@dataclass(frozen=True)
class Spoiled:
    spec: dict[str, Any]
    path: tuple[str, ...]  # where the spoiled field is, its name last
    how: str

    @property
    def field(self) -> str:
        return self.path[-1]


class SpecStrategies:
    def __init__(self, root: Schema) -> None:
        self.root = root
        self.defs: dict[str, Schema] = root.get("$defs", {})

    def resolve(self, schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = self.defs[schema["$ref"].rsplit("/", 1)[-1]]
        branches = [b for b in schema.get("anyOf", []) if b.get("type") != "null"]
        if len(branches) == 1 and "x-kubernetes-preserve-unknown-fields" not in schema:
            return self.resolve(branches[0])  # an optional field: the value's own schema
        return schema

    # ---- valid ----------------------------------------------------------------------------

    def valid(self, schema: Schema) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if schema.get("x-kubernetes-int-or-string"):
            return st.sampled_from(QUANTITIES)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return st.sampled_from([{}, {"metadata": {"labels": {"fuzz": "yes"}}},
                                    {"metadata": {"annotations": {"fuzz": "yes"}}}])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        kind = schema.get("type")
        if kind == "boolean":
            return st.booleans()
        if kind == "integer":
            lo, hi = schema.get("minimum", -10), schema.get("maximum", 10**6)
            return st.one_of(st.integers(lo, min(hi, lo + 4)), st.integers(max(lo, hi - 2), hi),
                             st.integers(lo, hi))
        if kind == "number":
            lo = schema.get("minimum", schema.get("exclusiveMinimum", -1e6))
            hi = schema.get("maximum", 1e6)
            return st.floats(lo, hi, exclude_min="exclusiveMinimum" in schema,
                             allow_nan=False, allow_infinity=False)
        if kind == "string":
            lo, hi = schema.get("minLength", 0), schema.get("maxLength", 64)
            if "pattern" in schema:
                return st.from_regex(schema["pattern"], fullmatch=True).filter(
                    lambda s: lo <= len(s) <= hi)
            return st.text(min_size=lo, max_size=min(hi, 16))
        if kind == "array":
            return st.lists(self.valid(schema["items"]), max_size=min(schema.get("maxItems", 2),
                                                                      2))
        if kind == "object":
            if "properties" in schema:
                return self.object(schema)
            values = schema.get("additionalProperties", {"type": "string"})
            return st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                                   self.valid(values), max_size=2)
        raise ValueError(f"schema {schema}: not covered by this generator")

    def object(self, schema: Schema) -> st.SearchStrategy[dict[str, Any]]:
        props: dict[str, Schema] = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {n: self.valid(s) for n, s in props.items() if n in required},
            optional={n: self.valid(s) for n, s in props.items() if n not in required})

    # ---- invalid --------------------------------------------------------------------------

    def bad_values(self, schema: Schema) -> st.SearchStrategy[Any]:
        """Values `schema` refuses: of another type, or of its type but out of bounds."""
        schema = self.resolve(schema)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return st.sampled_from([7, "text", [1]])
        if schema.get("x-kubernetes-int-or-string"):
            return st.sampled_from(["two", "1.2.3", "-1", True, [1], {"a": 1}, 0.5, "1\n",
                                    " 1", "1 "])
        kind = schema.get("type")
        bad: list[Any] = []
        if "enum" in schema:
            bad += ["NotAnEnumValue", ""]
        if kind == "integer":
            lo, hi = schema.get("minimum"), schema.get("maximum")
            bad += [v for v in (lo - 1 if lo is not None else None,
                                hi + 1 if hi is not None else None) if v is not None]
            bad += [2**53, -(2**53), 1.5, "3", True]
        elif kind == "number":
            if "minimum" in schema:
                bad.append(schema["minimum"] - 0.5)
            if "exclusiveMinimum" in schema:
                bad.append(schema["exclusiveMinimum"])
            if "maximum" in schema:
                bad.append(schema["maximum"] + 0.5)
            bad += [1e300, "1.5", False]
        elif kind == "string":
            if schema.get("minLength", 0) > 0:
                bad.append("")
            if "maxLength" in schema:
                bad.append("a" * (schema["maxLength"] + 1))
            bad += [42, False, ["a"]]
            if "pattern" in schema:  # a valid value spoiled at its end, as regex engines differ
                lo, hi = schema.get("minLength", 0), schema.get("maxLength", 64)
                edges = st.tuples(
                    st.from_regex(schema["pattern"], fullmatch=True).filter(
                        lambda s: lo <= len(s) < hi),
                    st.sampled_from(["\n", " ", "\u00a0", "\x0b", "\x85", "\u2028", "_", "!"]),
                ).map(lambda pair: str(pair[0]) + pair[1])
                return st.one_of(st.sampled_from([*bad, "Not_Valid name!", "-x-"]), edges)
        elif kind == "boolean":
            bad += ["true", 1, None]
        elif kind == "array":
            bad += ["not a list", {"a": 1}]
        elif kind == "object":
            bad += ["not an object", [1], 5]
        return st.sampled_from(bad)

    def positions(self, schema: Schema, value: dict[str, Any], path: tuple[str, ...] = ()
                  ) -> list[tuple[tuple[str, ...], Schema]]:
        """(path of a property, the object schema holding it) for every property of every
        object present in `value`."""
        schema = self.resolve(schema)
        out: list[tuple[tuple[str, ...], Schema]] = []
        for name, prop in schema.get("properties", {}).items():
            out.append(((*path, name), schema))
            child = value.get(name)
            inner = self.resolve(prop)
            if isinstance(child, dict) and "properties" in inner:
                out += self.positions(inner, child, (*path, name))
        return out


def _parent(spec: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = spec
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def spoiled(draw: st.DrawFn, gen: SpecStrategies) -> Spoiled:
    """A valid spec with one field spoiled."""
    spec: dict[str, Any] = draw(gen.object(gen.root))
    path, holder = draw(st.sampled_from(gen.positions(gen.root, spec)))
    required = set(holder.get("required", []))
    how = draw(st.sampled_from(["bad value", "bad value", "unknown field"]
                               + (["missing required"] if required else [])))
    parent = _parent(spec, path)
    if how == "unknown field":
        parent[UNKNOWN] = draw(st.one_of(st.integers(), st.text(max_size=4), st.booleans()))
        return Spoiled(spec, (*path[:-1], UNKNOWN), how)
    if how == "missing required":
        name = draw(st.sampled_from(sorted(required)))
        parent.pop(name, None)
        return Spoiled(spec, (*path[:-1], name), how)
    parent[path[-1]] = draw(gen.bad_values(holder["properties"][path[-1]]))
    return Spoiled(spec, path, how)
