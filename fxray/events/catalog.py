"""JSON Schema inference for the event catalog (pure functions, no I/O).

The catalog keeps, for each event type, a JSON Schema (a draft 2020-12 subset) of the events'
``data``, inferred from samples: :func:`infer` gives the schema of one value, :func:`merge` the
least schema accepting what two schemas accept, :func:`diff` the changes between two schemas in
words. ``{}`` is "nothing seen yet": ``merge({}, s) == s``.

Schemas use only these keywords:

``type``
    a type name, or a list of them (sorted, ``"null"`` last): ``{"type": ["integer", "null"]}``;
    ``integer`` and ``number`` together become ``number``;
``format``
    ``"date-time"`` while every string seen was an RFC 3339 timestamp;
``properties`` / ``required``
    for objects: every key seen, and the keys present in every object seen (``required`` is
    always a sorted list). An object type without ``properties`` is an *opaque* object (any
    object: it was over a cap);
``items``
    for arrays: the merged schema of every item seen (absent while only empty arrays were seen;
    ``{}`` means any item: an array over the depth cap).

Each keyword applies to its own type only, so a schema with several types is a union of one
branch per type, and merging works branch by branch. Merge is commutative, associative and
idempotent, and every sample validates against the merge of its schemas.

Caps keep schemas small against hostile events: containers nested deeper than
:data:`MAX_DEPTH` levels, and objects with more than :data:`MAX_PROPERTIES` keys (in one sample
or over all samples merged), become opaque (``{"type": "object"}``,
``{"type": "array", "items": {}}``). Those two caps alone would still let a schema grow to
``MAX_PROPERTIES ** MAX_DEPTH`` nodes, a few new keys per sample, so a whole schema holds at
most :data:`MAX_SCHEMA_NODES` nodes (property and item schemas, at every level): over that,
it keeps the most levels from the top that fit, and the containers on the last level kept
become opaque. Every cap only makes a schema accept more, so every sample still validates.
Schemas are treated as immutable: results may share sub-dicts with the arguments. The
functions recurse no deeper than the schemas they read, which :data:`MAX_DEPTH` bounds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from typing import Any

MAX_DEPTH = 8
"""Containers at this level of nesting or deeper become opaque (the top value is level 0)."""

MAX_PROPERTIES = 200
"""Objects with more keys than this (in a sample or over all samples) become opaque."""

MAX_SCHEMA_NODES = 2000
"""The most property and item schemas in one schema, over all its levels."""

DATE_TIME = "date-time"
_NULL = "null"

Schema = dict[str, Any]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d+)?"
    r"(?:[Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)",
    re.ASCII,
)


def is_date_time(text: str) -> bool:
    """Whether ``text`` is an RFC 3339 ``date-time`` (leap seconds are not accepted)."""
    # Cheap pre-check first: most strings are not timestamps and never reach the regex.
    if not 20 <= len(text) <= 64 or text[4] != "-" or text[10] not in "Tt":
        return False
    match = _RFC3339.fullmatch(text)
    if match is None:
        return False
    try:
        date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return False
    return True


def infer(value: Any) -> Schema:
    """The schema of one JSON value."""
    return cap_size(_infer(value, 0))


def _infer(value: Any, depth: int) -> Schema:
    if value is None:
        return {"type": _NULL}
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, str):
        if is_date_time(value):
            return {"type": "string", "format": DATE_TIME}
        return {"type": "string"}
    if isinstance(value, dict):
        if depth >= MAX_DEPTH or len(value) > MAX_PROPERTIES:
            return {"type": "object"}
        keys = sorted(str(key) for key in value)
        props = {str(key): _infer(item, depth + 1) for key, item in value.items()}
        return {"type": "object", "properties": {k: props[k] for k in keys}, "required": keys}
    if isinstance(value, list | tuple):
        if not value:
            return {"type": "array"}
        if depth >= MAX_DEPTH:
            return {"type": "array", "items": {}}
        return {"type": "array", "items": _infer_items(value, depth + 1)}
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _infer_items(values: list[Any] | tuple[Any, ...], depth: int) -> Schema:
    """The merged schema of a list's items; scalars take a fast path (no merge per item)."""
    scalars: set[str] = set()
    all_date_times = True
    schema: Schema = {}
    for value in values:
        if value is None:
            scalars.add(_NULL)
        elif isinstance(value, bool):
            scalars.add("boolean")
        elif isinstance(value, int):
            scalars.add("integer")
        elif isinstance(value, float):
            scalars.add("number")
        elif isinstance(value, str):
            scalars.add("string")
            if all_date_times and not is_date_time(value):
                all_date_times = False
        else:
            schema = _merge(schema, _infer(value, depth))
    if scalars:
        scalar_schema: Schema = {"type": _type_value(_normalise(scalars))}
        if "string" in scalars and all_date_times:
            scalar_schema["format"] = DATE_TIME
        schema = _merge(schema, scalar_schema)
    return schema


def infer_many(values: Iterable[Any]) -> Schema:
    """The merged schema of many JSON values (``{}`` for none)."""
    schema: Schema = {}
    for value in values:
        schema = merge(schema, infer(value))
    return schema


def event_schema(event: dict[str, Any]) -> Schema:
    """The catalog schema of a CloudEvent: that of its ``data``.

    ``{"type": "null"}`` for an event without ``data`` (binary ``data_base64`` events too).
    """
    return infer(event.get("data"))


def merge(a: Schema, b: Schema) -> Schema:
    """The least schema (of this subset, within :data:`MAX_SCHEMA_NODES`) accepting every
    value ``a`` or ``b`` accepts."""
    return cap_size(_merge(a, b))


def cap_size(schema: Schema) -> Schema:
    """``schema`` if it has at most :data:`MAX_SCHEMA_NODES` nodes; else its top levels, as
    many as fit, with the containers of the last one opaque."""
    per_level = _nodes_per_level(schema)
    if sum(per_level) <= MAX_SCHEMA_NODES:
        return schema
    kept, levels = 0, 0
    while kept + per_level[levels] <= MAX_SCHEMA_NODES:
        kept += per_level[levels]
        levels += 1
    return _opaque_below(schema, levels)


def _children(schema: Schema) -> list[Schema]:
    children: list[Schema] = list(schema.get("properties", {}).values())
    items = schema.get("items")
    if items:
        children.append(items)
    return children


def _nodes_per_level(schema: Schema) -> list[int]:
    """How many property and item schemas ``schema`` has at each level below its top."""
    counts: list[int] = []
    level = _children(schema)
    while level:
        counts.append(len(level))
        level = [child for node in level for child in _children(node)]
    return counts


def _opaque_below(schema: Schema, levels: int) -> Schema:
    """``schema`` keeping ``levels`` levels of property and item schemas: the containers on
    the last level kept (the top one if 0) become opaque."""
    if levels == 0:
        out = {k: v for k, v in schema.items() if k not in ("properties", "required")}
        if "items" in out:
            out["items"] = {}
        return out
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {
            k: _opaque_below(v, levels - 1) for k, v in schema["properties"].items()
        }
    if schema.get("items"):
        out["items"] = _opaque_below(schema["items"], levels - 1)
    return out


def _merge(a: Schema, b: Schema) -> Schema:
    if not a.get("type"):
        return b
    if not b.get("type"):
        return a
    if a == b:
        return a
    types_a, types_b = _types(a), _types(b)
    types = _normalise(types_a | types_b)
    out: Schema = {"type": _type_value(types)}
    if "string" in types:
        fmt = _merge_format(a, b, "string" in types_a, "string" in types_b)
        if fmt is not None:
            out["format"] = fmt
    if "object" in types:
        out.update(
            _merge_object(a if "object" in types_a else None, b if "object" in types_b else None)
        )
    if "array" in types:
        items = _merge_items(a if "array" in types_a else None, b if "array" in types_b else None)
        if items is not None:
            out["items"] = items
    return out


def _types(schema: Schema) -> set[str]:
    kind = schema.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


def _normalise(types: set[str]) -> set[str]:
    if "integer" in types and "number" in types:
        return types - {"integer"}
    return types


def _type_value(types: set[str]) -> str | list[str]:
    if len(types) == 1:
        return next(iter(types))
    ordered = sorted(types - {_NULL})
    if _NULL in types:
        ordered.append(_NULL)
    return ordered


def _merge_format(a: Schema, b: Schema, in_a: bool, in_b: bool) -> str | None:
    if in_a and in_b:
        return a.get("format") if a.get("format") == b.get("format") else None
    return a.get("format") if in_a else b.get("format")


def _merge_object(a: Schema | None, b: Schema | None) -> Schema:
    """The ``properties``/``required`` of the merged object branch (``{}`` if opaque)."""
    if a is None or b is None:
        side = a if b is None else b
        assert side is not None
        if "properties" not in side:
            return {}
        return {"properties": side["properties"], "required": side.get("required", [])}
    if "properties" not in a or "properties" not in b:
        return {}
    props_a: dict[str, Schema] = a["properties"]
    props_b: dict[str, Schema] = b["properties"]
    keys = sorted(props_a.keys() | props_b.keys())
    if len(keys) > MAX_PROPERTIES:
        return {}
    props = {k: _merge(props_a.get(k, {}), props_b.get(k, {})) for k in keys}
    required = sorted(set(a.get("required", ())) & set(b.get("required", ())))
    return {"properties": props, "required": required}


def _merge_items(a: Schema | None, b: Schema | None) -> Schema | None:
    """The ``items`` of the merged array branch; None while no item was seen."""
    items_a = a.get("items") if a is not None else None
    items_b = b.get("items") if b is not None else None
    if items_a is None:
        return items_b
    if items_b is None:
        return items_a
    if items_a == {} or items_b == {}:
        return {}
    return _merge(items_a, items_b)


def diff(old: Schema, new: Schema, path: str = "") -> list[str]:
    """The changes from ``old`` to ``new`` in words, in a deterministic order ([] if equal).

    ``path`` names the schema's value in the messages (``"data"`` gives ``data.amount``).
    """
    if old == new:
        return []
    label = f"field {path}" if path else "schema"
    if not old.get("type"):
        return [f"added {label} ({describe(new)})"]
    if not new.get("type"):
        return [f"removed {label}"]
    changes: list[str] = []
    types_old, types_new = _types(old), _types(new)
    core_old, core_new = types_old - {_NULL}, types_new - {_NULL}
    if not core_old or not core_new:  # was or became always null
        if types_old != types_new:
            changes.append(
                f"{label} type {_describe_types(types_old)} -> {_describe_types(types_new)}"
            )
    else:
        if _NULL in types_new and _NULL not in types_old:
            changes.append(f"{label} became nullable")
        elif _NULL in types_old and _NULL not in types_new:
            changes.append(f"{label} is no longer nullable")
        if core_old != core_new:
            changes.append(
                f"{label} type {_describe_types(core_old)} -> {_describe_types(core_new)}"
            )
    if "string" in types_old and "string" in types_new:
        fmt_old, fmt_new = old.get("format"), new.get("format")
        if fmt_old != fmt_new:
            if fmt_new is None:
                changes.append(f"{label} is no longer {fmt_old}")
            elif fmt_old is None:
                changes.append(f"{label} became {fmt_new}")
            else:
                changes.append(f"{label} format {fmt_old} -> {fmt_new}")
    if "object" in types_old and "object" in types_new:
        changes.extend(_diff_object(old, new, path, label))
    if "array" in types_old and "array" in types_new:
        changes.extend(_diff_items(old.get("items"), new.get("items"), f"{path}[]"))
    return changes


def _diff_object(old: Schema, new: Schema, path: str, label: str) -> list[str]:
    if "properties" not in old or "properties" not in new:
        if "properties" in old:
            return [f"{label} is now any object (over the catalog's caps)"]
        if "properties" in new:
            return [f"{label} has known properties again"]
        return []
    changes: list[str] = []
    props_old: dict[str, Schema] = old["properties"]
    props_new: dict[str, Schema] = new["properties"]
    required_old, required_new = set(old.get("required", ())), set(new.get("required", ()))
    for key in sorted(props_old.keys() | props_new.keys()):
        child = f"{path}.{key}" if path else key
        if key not in props_old:
            optional = "" if key in required_new else "optional "
            changes.append(f"added {optional}field {child} ({describe(props_new[key])})")
            continue
        if key not in props_new:
            changes.append(f"removed field {child}")
            continue
        if key in required_old and key not in required_new:
            changes.append(f"field {child} became optional")
        elif key in required_new and key not in required_old:
            changes.append(f"field {child} became required")
        changes.extend(diff(props_old[key], props_new[key], child))
    return changes


def _diff_items(old: Schema | None, new: Schema | None, path: str) -> list[str]:
    if old == new:
        return []
    if old is None:
        return [f"added field {path} ({describe(new or {})})"]
    if new is None:
        return [f"removed field {path}"]
    if old == {} or new == {}:
        return [f"field {path} type {describe(old)} -> {describe(new)}"]
    return diff(old, new, path)


def describe(schema: Schema) -> str:
    """A short description of a schema's type: ``integer|null``, ``string date-time``, ``any``."""
    text = _describe_types(_types(schema))
    if schema.get("format") and "string" in _types(schema):
        text = text.replace("string", f"string {schema['format']}")
    return text


def _describe_types(types: set[str]) -> str:
    """Type names joined by ``|``, sorted with ``null`` last (``any`` for none)."""
    if not types:
        return "any"
    kind = _type_value(types)
    return kind if isinstance(kind, str) else "|".join(kind)
