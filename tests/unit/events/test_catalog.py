"""Event catalog schemas: inference, merging (a semilattice), diffs and the caps."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from fxray.events import catalog
from fxray.events.catalog import (
    describe,
    diff,
    event_schema,
    infer,
    infer_many,
    is_date_time,
    merge,
)

OBJ = "object"


def obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    """An object schema; every property required unless ``required`` says otherwise."""
    keys = sorted(props) if required is None else sorted(required)
    return {"type": OBJ, "properties": dict(sorted(props.items())), "required": keys}


S = {"type": "string"}
I = {"type": "integer"}  # noqa: E741
N = {"type": "number"}
B = {"type": "boolean"}
NULL = {"type": "null"}
DT = {"type": "string", "format": "date-time"}
IS = {"type": ["integer", "string"]}
ARRAY_OF_INTS = {"type": "array", "items": I}


def nested(levels: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(levels):
        value = {"a": value}
    return value


def at(schema: dict[str, Any], levels: int) -> dict[str, Any]:
    for _ in range(levels):
        schema = schema["properties"]["a"]
    return schema


# ---------------------------------------------------------------------------- infer


@pytest.mark.parametrize(
    ("value", "schema"),
    [
        (None, NULL),
        (True, B),
        (False, B),
        (0, I),
        (-(10**30), I),
        (1.5, N),
        (1.0, N),
        ("", S),
        ("hello", S),
        ("2026-11-22T04:00:00Z", DT),
    ],
)
def test_infer_scalars(value: Any, schema: dict[str, Any]) -> None:
    assert infer(value) == schema


def test_bool_is_boolean_not_integer() -> None:
    assert infer(True) == {"type": "boolean"}
    assert infer([True, 1]) == {"type": "array", "items": {"type": ["boolean", "integer"]}}


def test_infer_object_sorts_properties_and_requires_every_key() -> None:
    schema = infer({"b": 1, "a": "x", "c": {"z": None, "y": 2.5}})
    assert schema == obj(a=S, b=I, c=obj(y=N, z=NULL))
    assert list(schema["properties"]) == ["a", "b", "c"]
    assert schema["required"] == ["a", "b", "c"]


def test_infer_empty_object() -> None:
    assert infer({}) == {"type": "object", "properties": {}, "required": []}


def test_infer_non_string_keys_as_their_json_text() -> None:
    assert infer({1: "x"}) == obj(**{"1": S})


def test_infer_empty_array_has_no_items() -> None:
    assert infer([]) == {"type": "array"}


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ([1, 2, 3], I),
        ([1, 2.5], N),
        (["a", None], {"type": ["string", "null"]}),
        ([None, None], NULL),
        (["2026-01-01T00:00:00Z", "2026-01-02T00:00:00+02:00"], DT),
        (["2026-01-01T00:00:00Z", "soon"], S),
        ([1, "a", None, True], {"type": ["boolean", "integer", "string", "null"]}),
        ([[1], [], ["x"]], {"type": "array", "items": {"type": ["integer", "string"]}}),
        ([{"a": 1}, {"a": 2, "b": "x"}], obj(["a"], a=I, b=S)),
        ([{"a": 1}, "x"], {**obj(a=I), "type": ["object", "string"]}),
        ((1, 2), I),
    ],
)
def test_infer_array_items_are_merged(value: Any, items: dict[str, Any]) -> None:
    assert infer(value) == {"type": "array", "items": items}


def test_infer_array_fast_path_agrees_with_merging_item_schemas() -> None:
    values = [1, 2.5, None, "2026-01-01T00:00:00Z", "x", True, {"a": 1}, [1]]
    assert infer(values)["items"] == infer_many(values)


def test_infer_rejects_non_json_values() -> None:
    with pytest.raises(TypeError, match="set is not a JSON value"):
        infer({"a": {1, 2}})


# ---------------------------------------------------------------------------- date-time


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T04:00:00Z",
        "2026-11-22T04:00:00.000000Z",
        "2026-11-22T04:00:00.123+05:30",
        "2026-11-22t04:00:00z",
        "2024-02-29T23:59:59-00:00",
        "0001-01-01T00:00:00Z",
    ],
)
def test_date_times(text: str) -> None:
    assert is_date_time(text)
    assert infer(text) == DT


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22",
        "2026-11-22T04:00:00",  # no offset
        "2026-11-22 04:00:00Z",  # space, not T
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-13-01T00:00:00Z",
        "2026-11-31T00:00:00Z",
        "2026-11-22T24:00:00Z",
        "2026-11-22T23:60:00Z",
        "2026-12-31T23:59:60Z",  # leap seconds are not accepted
        "2026-11-22T04:00:00+24:00",
        "2026-11-22T04:00:00Z\n",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-22T04:00:00Z",  # non-ASCII digits
        "2026-11-22T04:00:00.Z",
        "2026-11-22T04:00:00." + "1" * 50 + "Z",  # over the length cap
        "x" * 25,
        "",
    ],
)
def test_not_date_times(text: str) -> None:
    assert not is_date_time(text)
    assert infer(text) == S


def test_date_times_agree_with_the_jsonschema_format_checker() -> None:
    checker = Draft202012Validator.FORMAT_CHECKER
    for text in ["2026-11-22T04:00:00Z", "2026-11-22t04:00:00.5+01:00", "2024-02-29T00:00:00Z"]:
        assert is_date_time(text)
        assert checker.conforms(text, "date-time")


# ---------------------------------------------------------------------------- caps


def test_depth_cap_makes_deep_containers_opaque() -> None:
    schema = infer(nested(12, 1))
    assert at(schema, catalog.MAX_DEPTH - 1) == obj(a={"type": "object"})
    assert at(schema, catalog.MAX_DEPTH) == {"type": "object"}


def test_depth_cap_keeps_scalars_and_exactly_max_depth_levels() -> None:
    schema = infer(nested(catalog.MAX_DEPTH, "x"))
    assert at(schema, catalog.MAX_DEPTH) == S


def test_depth_cap_on_arrays() -> None:
    deep: Any = [1]
    for _ in range(20):
        deep = [deep]
    schema = infer(deep)
    for _ in range(catalog.MAX_DEPTH):
        assert schema["type"] == "array"
        schema = schema["items"]
    assert schema == {"type": "array", "items": {}}
    assert at(infer(nested(catalog.MAX_DEPTH, [])), catalog.MAX_DEPTH) == {"type": "array"}


def test_property_cap() -> None:
    at_cap = {f"k{i:03}": i for i in range(catalog.MAX_PROPERTIES)}
    assert len(infer(at_cap)["properties"]) == catalog.MAX_PROPERTIES
    assert infer({**at_cap, "one_more": 1}) == {"type": "object"}


def test_property_cap_over_merged_samples() -> None:
    half = catalog.MAX_PROPERTIES // 2 + 1
    first = infer({f"a{i}": i for i in range(half)})
    second = infer({f"b{i}": i for i in range(half)})
    assert merge(first, second) == {"type": "object"}
    assert merge(first, first) == first


def test_opaque_schemas_accept_what_they_replace() -> None:
    deep = nested(20, {"x": [1, {"y": None}]})
    wide = {str(i): i for i in range(catalog.MAX_PROPERTIES + 5)}
    validator = Draft202012Validator(infer_many([deep, wide]))
    assert validator.is_valid(deep)
    assert validator.is_valid(wide)


def nodes(schema: dict[str, Any]) -> int:
    """Property and item schemas in ``schema``, at every level."""
    children = list(schema.get("properties", {}).values())
    if schema.get("items"):
        children.append(schema["items"])
    return len(children) + sum(nodes(child) for child in children)


def test_many_samples_with_new_keys_stay_within_the_size_cap() -> None:
    # each sample is small and within the per-object caps, but each adds new keys deeper down:
    # without a whole-schema cap the merged schema grew by a node per sample (800 kB after
    # 20,000 samples, up to MAX_PROPERTIES ** 3 nodes)
    samples = [{f"a{i % 150}": {f"b{i % 190}": {f"c{i}": i}}} for i in range(6000)]
    schema = infer_many(samples)
    assert nodes(schema) <= catalog.MAX_SCHEMA_NODES
    assert sorted(schema["properties"]) == sorted({f"a{i}" for i in range(150)})
    check = validator(schema)
    assert all(check.is_valid(sample) for sample in samples)
    assert infer_many(reversed(samples)) == schema


def test_one_wide_sample_keeps_the_levels_that_fit() -> None:
    wide = {f"o{i:02}": {f"k{j:03}": j for j in range(150)} for i in range(30)}  # 4,530 nodes
    schema = infer(wide)
    assert sorted(schema["properties"]) == sorted(wide)
    assert all(child == {"type": "object"} for child in schema["properties"].values())
    assert validator(schema).is_valid(wide)
    arrays = {f"o{i:02}": [{f"k{j:03}": j} for j in range(150)] for i in range(30)}
    opaque_items = {"type": "array", "items": {"type": "object"}}  # a level of items fits
    assert infer(arrays)["properties"]["o00"] == opaque_items


def test_schemas_within_the_size_cap_are_left_whole() -> None:
    levels = catalog.MAX_SCHEMA_NODES // 100
    value = {f"k{i:02}": {f"j{j:02}": j for j in range(99)} for i in range(levels - 1)}
    schema = infer(value)  # (levels - 1) * 100 nodes: under the cap
    assert nodes(schema) == (levels - 1) * 100
    assert schema["properties"]["k00"]["properties"]["j00"] == I


def test_inference_does_not_recurse_into_data_nested_past_the_parser() -> None:
    deep: Any = 1
    for _ in range(200_000):  # json.loads could not even read this: built by hand
        deep = {"a": [deep]}
    schema = infer(deep)
    assert nodes(schema) <= 2 * catalog.MAX_DEPTH
    assert merge(schema, infer({"a": "x"}))["properties"]["a"]["type"] == ["array", "string"]


def test_huge_arrays_of_mixed_items_give_one_small_schema() -> None:
    items: list[Any] = [{"id": i, "tag": "x" if i % 2 else None} for i in range(50_000)]
    items += [1, 2.5, "s", None, [1, 2], {"other": True}]
    schema = infer(items)
    assert schema["type"] == "array"
    assert schema["items"]["type"] == ["array", "number", "object", "string", "null"]
    assert sorted(schema["items"]["properties"]) == ["id", "other", "tag"]
    assert schema["items"]["required"] == []
    assert validator(schema).is_valid(items)


# ---------------------------------------------------------------------------- merge


@pytest.mark.parametrize("schema", [S, DT, NULL, obj(a=I), {"type": "array"}, {}])
def test_empty_schema_is_the_identity(schema: dict[str, Any]) -> None:
    assert merge({}, schema) == schema
    assert merge(schema, {}) == schema


@pytest.mark.parametrize(
    ("a", "b", "merged"),
    [
        (NULL, S, {"type": ["string", "null"]}),
        (I, NULL, {"type": ["integer", "null"]}),
        (I, N, N),
        ({"type": ["integer", "null"]}, N, {"type": ["number", "null"]}),
        ({"type": ["integer", "string"]}, N, {"type": ["number", "string"]}),
        (S, I, {"type": ["integer", "string"]}),
        (B, S, {"type": ["boolean", "string"]}),
        ({"type": ["string", "null"]}, I, {"type": ["integer", "string", "null"]}),
        (DT, DT, DT),
        (DT, S, S),
        (DT, I, {"type": ["integer", "string"], "format": "date-time"}),
        ({"type": ["integer", "string"], "format": "date-time"}, S, IS),
        ({"type": "array"}, {"type": "array", "items": I}, {"type": "array", "items": I}),
        ({"type": "array", "items": I}, {"type": "array", "items": S},
         {"type": "array", "items": {"type": ["integer", "string"]}}),
        ({"type": "array", "items": {}}, ARRAY_OF_INTS, {"type": "array", "items": {}}),
        ({"type": "array", "items": I}, NULL, {"type": ["array", "null"], "items": I}),
        (obj(a=I), NULL, {**obj(a=I), "type": ["object", "null"]}),
        (obj(a=I), {"type": "object"}, {"type": "object"}),
        (obj(a=I), S, {**obj(a=I), "type": ["object", "string"]}),
    ],
)  # fmt: skip
def test_merge(a: dict[str, Any], b: dict[str, Any], merged: dict[str, Any]) -> None:
    assert merge(a, b) == merged
    assert merge(b, a) == merged


def test_merge_objects_unions_properties_and_missing_ones_become_optional() -> None:
    a = infer({"id": 1, "note": "x", "both": None})
    b = infer({"id": 2.5, "both": "y", "extra": True})
    assert merge(a, b) == obj(
        ["both", "id"],
        both={"type": ["string", "null"]},
        extra=B,
        id=N,
        note=S,
    )


def test_merge_nested_objects_and_arrays_recursively() -> None:
    a = infer({"order": {"lines": [{"sku": "a", "qty": 1}]}})
    b = infer({"order": {"lines": [{"sku": "b", "qty": 1.5, "gift": True}], "vip": True}})
    assert merge(a, b) == obj(
        order=obj(
            ["lines"],
            lines={"type": "array", "items": obj(["qty", "sku"], gift=B, qty=N, sku=S)},
            vip=B,
        )
    )


def test_merge_keeps_a_property_optional_once_it_was() -> None:
    schema = infer_many([{"a": 1}, {}, {"a": 2}])
    assert schema == obj([], a=I)


def test_type_lists_are_sorted_with_null_last() -> None:
    schema = infer_many([None, "x", 1, True, [], {}])
    assert schema["type"] == ["array", "boolean", "integer", "object", "string", "null"]


def test_merge_does_not_modify_its_arguments() -> None:
    a = infer({"a": 1, "l": [1]})
    b = infer({"b": "x", "l": ["y"]})
    a_before, b_before = repr(a), repr(b)
    merge(a, b)
    assert (repr(a), repr(b)) == (a_before, b_before)


def test_infer_many() -> None:
    assert infer_many([]) == {}
    assert infer_many([1]) == I
    assert infer_many(iter([1, None, 2.5])) == {"type": ["number", "null"]}


# ---------------------------------------------------------------------------- event_schema


def test_event_schema_is_the_schema_of_data() -> None:
    event = {"id": "1", "type": "t", "source": "s", "data": {"amount": 1.5}}
    assert event_schema(event) == obj(amount=N)


def test_event_schema_without_data_is_null() -> None:
    assert event_schema({"id": "1", "type": "t", "source": "s"}) == NULL
    assert event_schema({"id": "1", "type": "t", "source": "s", "data": None}) == NULL


def test_event_schema_of_non_object_data() -> None:
    assert event_schema({"data": [1, 2]}) == {"type": "array", "items": I}
    assert event_schema({"data": "<xml/>"}) == S


# ---------------------------------------------------------------------------- diff


def test_diff_equal_schemas_is_empty() -> None:
    schema = infer({"a": [1, {"b": None}]})
    assert diff(schema, schema, "data") == []
    assert diff({}, {}) == []


def test_diff_messages() -> None:
    old = infer({"id": 1, "note": "x", "x": 1, "gone": True, "ts": "2026-01-01T00:00:00Z"})
    new = merge(old, infer({"id": 1.5, "x": None, "gone": True, "ts": "later", "amount": 2.5}))
    new["properties"].pop("gone")
    new["required"].remove("gone")
    assert diff(old, new, "data") == [
        "added optional field data.amount (number)",
        "removed field data.gone",
        "field data.id type integer -> number",
        "field data.note became optional",
        "field data.ts is no longer date-time",
        "field data.x became nullable",
    ]


def test_diff_added_required_field() -> None:
    assert diff(obj(a=I), obj(a=I, amount=N), "data") == ["added field data.amount (number)"]


def test_diff_reverse_messages() -> None:
    old = obj(["a"], a={"type": ["integer", "null"]}, b=S, c=S)
    new = obj(a=I, b=DT, c={"type": "null"})
    assert diff(old, new, "data") == [
        "field data.a is no longer nullable",
        "field data.b became required",
        "field data.b became date-time",
        "field data.c became required",
        "field data.c type string -> null",
    ]


def test_diff_null_only_fields() -> None:
    assert diff(NULL, {"type": ["integer", "null"]}, "x") == ["field x type null -> integer|null"]
    assert diff(NULL, I, "x") == ["field x type null -> integer"]


def test_diff_nested_paths_and_array_items() -> None:
    old = infer({"order": {"lines": [{"sku": "a"}], "tags": []}})
    new = infer({"order": {"lines": [{"sku": 1, "qty": 2}], "tags": ["x"]}})
    assert diff(old, new, "data") == [
        "added field data.order.lines[].qty (integer)",
        "field data.order.lines[].sku type string -> integer",
        "added field data.order.tags[] (string)",
    ]
    assert diff(new, old, "data") == [
        "removed field data.order.lines[].qty",
        "field data.order.lines[].sku type integer -> string",
        "removed field data.order.tags[]",
    ]


def test_diff_without_a_path_names_the_root() -> None:
    assert diff(I, S) == ["schema type integer -> string"]
    assert diff({}, obj(a=I)) == ["added schema (object)"]
    assert diff(S, {}) == ["removed schema"]
    assert diff(obj(a=I), obj(a=I, b=S)) == ["added field b (string)"]


def test_diff_opaque_schemas() -> None:
    assert diff(obj(a=I), {"type": "object"}, "data") == [
        "field data is now any object (over the catalog's caps)"
    ]
    assert diff({"type": "object"}, obj(a=I), "data") == ["field data has known properties again"]
    assert diff({"type": "array", "items": I}, {"type": "array", "items": {}}, "data") == [
        "field data[] type integer -> any"
    ]


def test_diff_type_change_and_object_changes_together() -> None:
    old = obj(a=I)
    new = merge(obj(a=I, b=S), S)
    assert diff(old, new, "data") == [
        "field data type object -> object|string",
        "added field data.b (string)",
    ]


def test_describe() -> None:
    assert describe({"type": ["string", "null"], "format": "date-time"}) == (
        "string date-time|null"
    )
    assert describe({"type": ["integer", "string"]}) == "integer|string"
    assert describe({}) == "any"


# ---------------------------------------------------------------------------- properties

KEYS = st.sampled_from(["a", "b", "c", "id", "ts"])
DATE_TIMES = st.datetimes().map(lambda moment: moment.isoformat() + "Z")
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4)
    | DATE_TIMES
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=16,
)
SAMPLES = st.lists(JSON, max_size=4)
SCHEMAS = SAMPLES.map(infer_many)


def validator(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@settings(database=None, deadline=None)
@given(SCHEMAS, SCHEMAS)
def test_merge_is_commutative(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert merge(a, b) == merge(b, a)


@settings(database=None, deadline=None)
@given(SCHEMAS, SCHEMAS, SCHEMAS)
def test_merge_is_associative(a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    assert merge(merge(a, b), c) == merge(a, merge(b, c))


@settings(database=None, deadline=None)
@given(SCHEMAS, SCHEMAS)
def test_merge_is_idempotent(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert merge(a, a) == a
    assert merge({}, a) == a == merge(a, {})
    ab = merge(a, b)
    assert merge(ab, b) == ab == merge(a, ab)


@settings(database=None, deadline=None)
@given(SAMPLES)
def test_every_sample_validates_against_the_merged_schema(samples: list[Any]) -> None:
    schema = infer_many(samples)
    if not samples:
        assert schema == {}
        return
    check = validator(schema)
    for sample in samples:
        assert check.is_valid(sample), (sample, schema)


@settings(database=None, deadline=None)
@given(SAMPLES, st.randoms(use_true_random=False))
def test_infer_many_does_not_depend_on_order(samples: list[Any], random: Any) -> None:
    shuffled = list(samples)
    random.shuffle(shuffled)
    assert infer_many(shuffled) == infer_many(samples)


@settings(database=None, deadline=None)
@given(SAMPLES, SAMPLES)
def test_merge_is_the_schema_of_all_samples(a: list[Any], b: list[Any]) -> None:
    assert merge(infer_many(a), infer_many(b)) == infer_many(a + b)


@settings(database=None, deadline=None)
@given(SCHEMAS, SCHEMAS)
def test_diff_is_empty_exactly_when_equal(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert diff(a, a, "data") == []
    changes = diff(a, b, "data")
    assert (changes == []) == (a == b)
    assert changes == diff(a, b, "data")


@settings(database=None, deadline=None, max_examples=200)
@given(st.lists(JSON, min_size=1, max_size=4), SCHEMAS, SCHEMAS)
def test_laws_hold_under_small_caps(samples: list[Any], a: Any, b: Any) -> None:
    with (
        mock.patch.object(catalog, "MAX_DEPTH", 2),
        mock.patch.object(catalog, "MAX_PROPERTIES", 2),
    ):
        capped = [infer(sample) for sample in samples]
        schema = infer_many(samples)
        check = validator(schema)
        for sample in samples:
            assert check.is_valid(sample), (sample, schema)
        x, y, z = capped[0], merge(a, b), capped[-1]
        assert merge(x, y) == merge(y, x)
        assert merge(merge(x, y), z) == merge(x, merge(y, z))
        assert merge(schema, schema) == schema
