"""Structured output: the JSON schema a request asks for and a small value valid for it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

_STRING_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "simulated@example.com",
    "uri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#/"):
        return {}
    node: Any = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, Mapping) else {}


def example_from_schema(schema: Mapping[str, Any]) -> Any:
    """Build a small value that validates against a JSON schema (best effort).

    Rules: ``$ref`` into ``$defs``/``definitions`` is followed; ``const``/``enum`` give their
    (first) value; ``anyOf``/``oneOf`` take the first non-null option; ``allOf`` is merged;
    objects get their required properties only (a top-level schema without properties gives
    ``{"simulated": true}``); the outermost array gets ``max(minItems, 1)`` items, nested
    arrays ``minItems``; strings are ``"simulated"`` (padded/cut to the length bounds, or a
    sample for known formats; ``pattern`` is not honoured); numbers take their lower bound or
    0; booleans are ``true``.

    Args:
        schema: A JSON schema (draft 2020-12 subset as produced by pydantic / OpenAI SDKs).

    Returns:
        A JSON-serialisable value.
    """
    return _example(schema, schema, depth=0, array_depth=0, index=0)


def _example(
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    *,
    depth: int,
    array_depth: int,
    index: int,
) -> Any:
    if depth > 32:
        return None
    if not isinstance(schema, Mapping):
        return None
    if "$ref" in schema:
        target = _resolve_ref(str(schema["$ref"]), root)
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _example(merged, root, depth=depth + 1, array_depth=array_depth, index=index)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            chosen = next((o for o in options if o.get("type") != "null"), options[0])
            rest = {k: v for k, v in schema.items() if k != key}
            merged = {**rest, **chosen}
            return _example(merged, root, depth=depth + 1, array_depth=array_depth, index=index)
    if schema.get("allOf"):
        combined: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            part = _resolve_ref(part["$ref"], root) if "$ref" in part else part
            for key, value in part.items():
                if key == "properties":
                    combined["properties"] = {**combined.get("properties", {}), **value}
                elif key == "required":
                    combined["required"] = [*combined.get("required", []), *value]
                else:
                    combined.setdefault(key, value)
        return _example(combined, root, depth=depth + 1, array_depth=array_depth, index=index)

    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        if "properties" in schema or depth == 0:
            kind = "object"
        elif "items" in schema or "prefixItems" in schema:
            kind = "array"
        else:
            kind = "string"

    if kind == "object":
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = list(dict.fromkeys(schema.get("required") or []))
        out = {
            name: _example(
                properties.get(name, {}),
                root,
                depth=depth + 1,
                array_depth=array_depth,
                index=0,
            )
            for name in required
        }
        if (
            not properties
            and not out
            and depth == 0
            and schema.get("additionalProperties") is not False
        ):
            out["simulated"] = True
        return out
    if kind == "array":
        count = int(schema.get("minItems", 0))
        if array_depth == 0:
            count = max(count, 1)
        if "maxItems" in schema:
            count = min(count, int(schema["maxItems"]))
        prefix = schema.get("prefixItems") or []
        items = schema.get("items")
        items_schema: Mapping[str, Any] = items if isinstance(items, Mapping) else {}
        return [
            _example(
                prefix[i] if i < len(prefix) else items_schema,
                root,
                depth=depth + 1,
                array_depth=array_depth + 1,
                index=i,
            )
            for i in range(count)
        ]
    if kind == "string":
        value = _STRING_FORMATS.get(str(schema.get("format")), "simulated")
        if index and value == "simulated":
            value = f"simulated-{index + 1}"
        min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
        if len(value) < min_len:
            value = value + "x" * (min_len - len(value))
        if max_len is not None:
            value = value[: int(max_len)]
        return value
    if kind in {"integer", "number"}:
        low: float = 0
        if "minimum" in schema:
            low = schema["minimum"]
        elif "exclusiveMinimum" in schema:
            low = schema["exclusiveMinimum"] + 1
        if "maximum" in schema and low > schema["maximum"]:
            low = schema["maximum"]
        if "exclusiveMaximum" in schema and low >= schema["exclusiveMaximum"]:
            low = schema["exclusiveMaximum"] - 1
        return math.ceil(low) if kind == "integer" else float(low)
    if kind == "boolean":
        return True
    return None


def response_schema(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The JSON schema a chat request constrains its output to, as llama.cpp reads it.

    Returns:
        ``None`` for free text; a schema (``{}`` = any JSON object) otherwise.
    """
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping):
        kind = fmt.get("type")
        if kind == "json_object":
            return fmt.get("schema") or {}
        if kind == "json_schema":
            wrapper = fmt.get("json_schema")
            return (wrapper.get("schema") if isinstance(wrapper, Mapping) else None) or {}
    if isinstance(body.get("json_schema"), Mapping):
        return body["json_schema"]
    return None
