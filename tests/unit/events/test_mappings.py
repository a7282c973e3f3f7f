"""Event mapping rules: models, validation, cycle detection, data mapping, mapped events."""

from __future__ import annotations

import base64
import copy
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fxray.events import cloudevent as ev
from fxray.events.mappings import (
    MAPPING_ID,
    FieldMap,
    MappingRule,
    find_cycle,
    map_data,
    mapped_event,
    mapped_event_id,
    validate_rule,
)


def rule(
    source: str = "a",
    target: str = "b",
    *fields: tuple[str, str, str],
    id: str | None = None,
    map_all: bool = True,
) -> MappingRule:
    return MappingRule(
        id=id or f"{source}->{target}",
        source_type=source,
        target_type=target,
        fields=[FieldMap(from_path=f, to_path=t, op=op) for f, t, op in fields],  # type: ignore[arg-type]
        map_all=map_all,
    )


# ---------------------------------------------------------------------------- models


def test_field_map_from_its_json_form() -> None:
    field = FieldMap.model_validate({"from": "order.id", "to": "id", "op": "copy"})
    assert (field.from_path, field.to_path, field.op) == ("order.id", "id", "copy")
    assert field.to_dict() == {"from": "order.id", "to": "id", "op": "copy"}
    assert field.model_dump(by_alias=True) == field.to_dict()
    assert FieldMap(from_path="a", to_path="b") == FieldMap.model_validate({"from": "a", "to": "b"})


def test_field_map_op_defaults_to_rename() -> None:
    assert FieldMap.model_validate({"from": "a", "to": "b"}).op == "rename"


@pytest.mark.parametrize(
    "raw",
    [
        {"from": "a", "to": "b", "op": "move"},
        {"from": "a"},
        {"to": "b"},
        {"from": "a", "to": "b", "extra": 1},
        {"from": 1, "to": "b"},
    ],
)
def test_field_map_rejects_bad_json(raw: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FieldMap.model_validate(raw)


def test_mapping_rule_from_its_json_form() -> None:
    raw = {
        "id": "r1",
        "source_type": "shop.order.placed",
        "target_type": "billing.order",
        "fields": [{"from": "order.id", "to": "id", "op": "rename"}],
        "map_all": False,
    }
    parsed = MappingRule.model_validate(raw)
    assert parsed.fields == [FieldMap(from_path="order.id", to_path="id", op="rename")]
    assert parsed.map_all is False
    assert parsed.to_dict() == raw
    assert MappingRule.model_validate(parsed.to_dict()) == parsed


def test_mapping_rule_defaults_and_is_frozen() -> None:
    parsed = MappingRule.model_validate({"id": "r", "source_type": "a", "target_type": "b"})
    assert parsed.fields == []
    assert parsed.map_all is True
    with pytest.raises(ValidationError):
        parsed.target_type = "c"  # type: ignore[misc]


# ---------------------------------------------------------------------------- validate_rule


def test_a_valid_rule_has_no_problems() -> None:
    fields = [
        FieldMap(from_path="order.id", to_path="id"),
        {"from": "order.total", "to": "amount.value", "op": "copy"},
        {"from": "order.currency", "to": "amount.currency"},
    ]
    assert validate_rule("shop.order.placed", "billing.invoice.requested", fields) == []
    assert validate_rule("a", "b", []) == []


@pytest.mark.parametrize(
    ("source", "target", "problem"),
    [
        ("", "b", "source type cannot be empty"),
        ("  ", "b", "source type cannot be empty"),
        ("a", "", "target type cannot be empty"),
        ("shop.*", "b", "source type 'shop.*' cannot be a glob (use an exact event type)"),
        ("a", "b?", "target type 'b?' cannot be a glob (use an exact event type)"),
        ("a", "b[0]", "target type 'b[0]' cannot be a glob (use an exact event type)"),
        ("shop order", "b", "source type 'shop order' contains white space"),
        ("a", "b\t", "target type 'b\\t' contains white space"),
        ("a" * 256, "b", "source type is at most 255 characters"),
        ("a", "a", "a rule cannot map a type onto itself"),
        ("a", ev.MANUAL_RUN, "target type 'fxray.run.manual' is a platform event type"),
    ],
)
def test_type_problems(source: str, target: str, problem: str) -> None:
    assert validate_rule(source, target, []) == [problem]


def test_platform_types_may_be_mapped_from() -> None:
    assert validate_rule(ev.SCHEDULE_TICK, "reports.due", []) == []


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        ({"from": "", "to": "x"}, "field 1: from path cannot be empty"),
        ({"from": "a", "to": " "}, "field 1: to path cannot be empty"),
        ({"from": "a b", "to": "x"}, "field 1: from path 'a b' contains white space"),
        ({"from": "a..b", "to": "x"}, "field 1: from path 'a..b' has an empty segment"),
        ({"from": "a", "to": ".x"}, "field 1: to path '.x' has an empty segment"),
        ({"from": "a.", "to": "x"}, "field 1: from path 'a.' has an empty segment"),
        ({"to": "x"}, "field 1: from: Field required"),
        ({"from": "a", "to": "x", "op": "move"}, "field 1: op: Input should be 'rename' or 'copy'"),
        ({"from": "a", "to": "x", "x": 1}, "field 1: x: Extra inputs are not permitted"),
    ],
)
def test_field_problems(field: dict[str, Any], problem: str) -> None:
    assert validate_rule("a", "b", [field]) == [problem]


def test_duplicate_and_overlapping_targets() -> None:
    fields = [
        {"from": "a", "to": "x"},
        {"from": "b", "to": "y.z"},
        FieldMap(from_path="c", to_path="x", op="copy"),
        {"from": "d", "to": "y"},
        {"from": "e", "to": "y.z.w"},
        {"from": "f", "to": "xy"},
    ]
    assert validate_rule("a", "b", fields) == [
        "field 3: to path 'x' is already the target of field 1",
        "field 4: to path 'y' overlaps the target 'y.z' of field 2",
        "field 5: to path 'y.z.w' overlaps the target 'y.z' of field 2",
        "field 5: to path 'y.z.w' overlaps the target 'y' of field 4",
    ]


def test_every_problem_is_listed_at_once() -> None:
    problems = validate_rule(
        "x*",
        "x*",
        [{"from": "", "to": "t"}, {"from": "a", "to": "t"}, {"op": "bad"}],
    )
    assert problems == [
        "source type 'x*' cannot be a glob (use an exact event type)",
        "target type 'x*' cannot be a glob (use an exact event type)",
        "a rule cannot map a type onto itself",
        "field 1: from path cannot be empty",
        "field 2: to path 't' is already the target of field 1",
        "field 3: from: Field required",
        "field 3: to: Field required",
        "field 3: op: Input should be 'rename' or 'copy'",
    ]


# ---------------------------------------------------------------------------- find_cycle


def test_no_rules_no_cycle() -> None:
    assert find_cycle([], rule("a", "b")) is None


def test_self_map_is_a_cycle() -> None:
    assert find_cycle([], rule("a", "a")) == ["a", "a"]


def test_two_cycle() -> None:
    assert find_cycle([rule("b", "a")], rule("a", "b")) == ["a", "b", "a"]


def test_three_cycle() -> None:
    existing = [rule("b", "c"), rule("c", "a")]
    assert find_cycle(existing, rule("a", "b")) == ["a", "b", "c", "a"]
    assert find_cycle(iter(existing), rule("a", "b")) == ["a", "b", "c", "a"]


def test_a_chain_is_not_a_cycle() -> None:
    assert find_cycle([rule("b", "c"), rule("c", "d")], rule("a", "b")) is None


def test_replacing_a_rule_removes_its_old_edge() -> None:
    existing = [rule("b", "a", id="r1")]
    assert find_cycle(existing, rule("a", "b", id="r1")) is None
    assert find_cycle(existing, rule("a", "b", id="r2")) == ["a", "b", "a"]


def test_changing_a_rule_can_form_a_cycle() -> None:
    existing = [rule("a", "b", id="r1"), rule("b", "c", id="r2")]
    assert find_cycle(existing, rule("b", "d", id="r2")) is None
    assert find_cycle(existing, rule("b", "a", id="r2")) == ["b", "a", "b"]


def test_diamond_is_not_a_cycle() -> None:
    diamond = [rule("a", "b"), rule("a", "c"), rule("b", "d")]
    assert find_cycle(diamond, rule("c", "d")) is None
    assert find_cycle([*diamond, rule("c", "d")], rule("d", "e")) is None


def test_closing_a_diamond_gives_the_shortest_cycle_deterministically() -> None:
    diamond = [rule("a", "c"), rule("a", "b"), rule("c", "d"), rule("b", "d")]
    assert find_cycle(diamond, rule("d", "a")) == ["d", "a", "b", "d"]
    assert find_cycle(reversed(diamond), rule("d", "a")) == ["d", "a", "b", "d"]


def test_the_shortest_cycle_is_reported() -> None:
    existing = [rule("b", "c"), rule("c", "d"), rule("d", "a"), rule("b", "a")]
    assert find_cycle(existing, rule("a", "b")) == ["a", "b", "a"]


def test_older_cycles_not_through_the_new_rule_are_not_reported() -> None:
    existing = [rule("x", "y"), rule("y", "x")]
    assert find_cycle(existing, rule("a", "b")) is None


def test_parallel_rules_between_the_same_types() -> None:
    existing = [rule("b", "a", id="r1"), rule("b", "a", id="r2")]
    assert find_cycle(existing, rule("a", "b", id="r1")) == ["a", "b", "a"]


# ---------------------------------------------------------------------------- map_data

ORDER = {"order": {"id": 7, "total": 12.5, "lines": [{"sku": "x"}]}, "note": None, "n": 1}


def test_map_all_rename_moves_a_nested_value() -> None:
    mapped = map_data(rule("a", "b", ("order.id", "id", "rename")), ORDER)
    assert mapped == {
        "order": {"total": 12.5, "lines": [{"sku": "x"}]},
        "note": None,
        "n": 1,
        "id": 7,
    }


def test_map_all_copy_duplicates_a_value() -> None:
    mapped = map_data(rule("a", "b", ("order.lines", "lines", "copy")), ORDER)
    assert mapped == {**ORDER, "lines": [{"sku": "x"}]}
    mapped["lines"][0]["sku"] = "changed"
    assert mapped["order"]["lines"] == [{"sku": "x"}]


def test_map_all_does_not_modify_the_source_data() -> None:
    before = copy.deepcopy(ORDER)
    mapped = map_data(rule("a", "b", ("order.id", "id", "rename")), ORDER)
    mapped["order"]["lines"].append("new")
    assert before == ORDER


def test_map_all_without_fields_copies_the_data() -> None:
    mapped = map_data(rule("a", "b"), ORDER)
    assert mapped == ORDER
    assert mapped is not ORDER


def test_missing_source_paths_are_skipped() -> None:
    fields = [("missing", "x", "rename"), ("order.nope", "y", "copy"), ("n.deeper", "z", "copy")]
    assert map_data(rule("a", "b", *fields), ORDER) == ORDER
    assert map_data(rule("a", "b", *fields, map_all=False), ORDER) == {}


def test_null_values_are_present_and_mapped() -> None:
    assert map_data(rule("a", "b", ("note", "memo", "copy"), map_all=False), ORDER) == {
        "memo": None
    }


def test_without_map_all_only_the_mapped_fields_are_kept() -> None:
    fields = [("order.id", "id", "rename"), ("order.total", "amount.value", "copy")]
    mapped = map_data(rule("a", "b", *fields, map_all=False), ORDER)
    assert mapped == {"id": 7, "amount": {"value": 12.5}}


def test_two_renames_can_swap_fields() -> None:
    swap = rule("a", "b", ("x", "y", "rename"), ("y", "x", "rename"))
    assert map_data(swap, {"x": 1, "y": 2, "z": 3}) == {"x": 2, "y": 1, "z": 3}


def test_field_order_does_not_matter() -> None:
    fields = [("order.id", "id", "rename"), ("order", "copy_of_order", "copy")]
    forward = map_data(rule("a", "b", *fields), ORDER)
    backward = map_data(rule("a", "b", *reversed(fields)), ORDER)
    assert forward == backward
    assert forward["copy_of_order"]["id"] == 7  # read from the original data
    assert "id" not in forward["order"]


def test_rename_into_its_own_child_and_out_of_it() -> None:
    assert map_data(rule("a", "b", ("x", "x.y", "rename")), {"x": 1}) == {"x": {"y": 1}}
    assert map_data(rule("a", "b", ("x.y", "x", "rename")), {"x": {"y": 1}}) == {"x": 1}


def test_a_target_under_a_scalar_replaces_the_scalar() -> None:
    assert map_data(rule("a", "b", ("n", "note.count", "copy")), {"n": 1, "note": "hi"}) == {
        "n": 1,
        "note": {"count": 1},
    }


def test_rename_overwrites_an_existing_target() -> None:
    assert map_data(rule("a", "b", ("x", "y", "rename")), {"x": 1, "y": 2}) == {"y": 1}


@pytest.mark.parametrize("data", [None, "text", 5, [1, {"a": 2}], True])
def test_non_object_data(data: Any) -> None:
    fields = [("a", "b", "rename")]
    assert map_data(rule("a", "b", *fields), data) == data
    assert map_data(rule("a", "b", *fields, map_all=False), data) == {}


def test_non_object_data_is_copied() -> None:
    data = [{"a": 1}]
    mapped = map_data(rule("a", "b"), data)
    mapped[0]["a"] = 2
    assert data == [{"a": 1}]


KEYS = st.sampled_from(["a", "b", "c"])
DATA = st.recursive(
    st.integers() | st.none() | st.text(max_size=3),
    lambda children: st.dictionaries(KEYS, children, max_size=3),
    max_leaves=10,
)
PATHS = st.lists(KEYS, min_size=1, max_size=3).map(".".join)


@settings(database=None, deadline=None)
@given(
    st.dictionaries(KEYS, DATA, max_size=3),
    st.lists(st.tuples(PATHS, PATHS, st.sampled_from(["rename", "copy"])), max_size=4),
    st.booleans(),
)
def test_mapping_never_modifies_its_input_and_fills_every_present_target(
    data: dict[str, Any], fields: list[tuple[str, str, str]], map_all: bool
) -> None:
    problems = validate_rule("a", "b", [{"from": f, "to": t, "op": o} for f, t, o in fields])
    before = copy.deepcopy(data)
    mapped = map_data(rule("a", "b", *fields, map_all=map_all), data)
    assert data == before
    if problems:
        return
    for source, target, _ in fields:
        value: Any = data
        for key in source.split("."):
            value = value.get(key, KeyError) if isinstance(value, dict) else KeyError
        if value is KeyError:
            continue
        node: Any = mapped
        for key in target.split("."):
            node = node[key]
        assert node == value


# ---------------------------------------------------------------------------- mapped_event


def source_event(**attributes: Any) -> dict[str, Any]:
    return ev.new_event("shop.order.placed", {"order": {"id": 7}, "n": 1}, **attributes)


ID_RULE = rule("shop.order.placed", "billing.order", ("order.id", "id", "rename"), id="r-billing")


def test_mapped_event_attributes() -> None:
    parent = source_event(source="shop", fxrunid="run-1", fxparentid="grandparent")
    mapped = mapped_event(ID_RULE, parent)
    assert mapped["type"] == "billing.order"
    assert mapped["source"] == "fxray/mappings/r-billing"
    assert mapped["data"] == {"order": {}, "n": 1, "id": 7}
    assert mapped["datacontenttype"] == "application/json"
    assert mapped[ev.PARENT_ID] == parent["id"]
    assert mapped[ev.CORRELATION_ID] == parent["id"]  # a root event's correlation id
    assert mapped[MAPPING_ID] == "r-billing"
    assert ev.RUN_ID not in mapped
    assert ev.from_json(ev.to_json(mapped)) == mapped


def test_mapped_event_keeps_the_flow_correlation_id() -> None:
    parent = source_event(fxcorrelationid="flow-1")
    assert mapped_event(ID_RULE, parent)[ev.CORRELATION_ID] == "flow-1"


def test_mapped_event_id_is_deterministic() -> None:
    parent = source_event()
    first, again = mapped_event(ID_RULE, parent), mapped_event(ID_RULE, copy.deepcopy(parent))
    assert first["id"] == again["id"] == mapped_event_id("r-billing", parent["id"])
    assert uuid.UUID(first["id"]).version == 5
    other_rule = ID_RULE.model_copy(update={"id": "r-other"})
    assert mapped_event(other_rule, parent)["id"] != first["id"]
    assert mapped_event(ID_RULE, source_event())["id"] != first["id"]


def test_mapped_event_ids_do_not_collide_on_separators() -> None:
    assert mapped_event_id("a:b", "c") != mapped_event_id("a", "b:c")
    assert mapped_event_id("a\nb", "c") != mapped_event_id("a", "b\nc")


def test_mapped_event_keeps_shadow_and_partition_key() -> None:
    parent = source_event(fxshadow="true", partitionkey="order-7")
    mapped = mapped_event(ID_RULE, parent)
    assert mapped[ev.SHADOW] == "true"
    assert mapped["partitionkey"] == "order-7"
    assert ev.SHADOW not in mapped_event(ID_RULE, source_event())


def test_mapped_event_without_map_all() -> None:
    narrow = ID_RULE.model_copy(update={"map_all": False})
    assert mapped_event(narrow, source_event())["data"] == {"id": 7}
    no_data = ev.new_event("shop.order.placed")
    assert mapped_event(narrow, no_data)["data"] == {}


def test_mapped_event_without_data() -> None:
    mapped = mapped_event(ID_RULE, ev.new_event("shop.order.placed"))
    assert "data" not in mapped
    assert "datacontenttype" not in mapped


def test_mapped_event_passes_text_data_with_its_content_type() -> None:
    parent = ev.new_event("shop.order.placed", "<order/>", datacontenttype="application/xml")
    mapped = mapped_event(ID_RULE, parent)
    assert mapped["data"] == "<order/>"
    assert mapped["datacontenttype"] == "application/xml"


def test_mapped_event_passes_binary_data() -> None:
    parent = ev.new_event(
        "shop.order.placed", b"\x00\x01", datacontenttype="application/octet-stream"
    )
    mapped = mapped_event(ID_RULE, parent)
    assert base64.b64decode(mapped["data_base64"]) == b"\x00\x01"
    assert mapped["datacontenttype"] == "application/octet-stream"
    narrow = ID_RULE.model_copy(update={"map_all": False})
    assert mapped_event(narrow, parent)["data"] == {}
