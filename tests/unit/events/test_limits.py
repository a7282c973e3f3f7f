"""The event limits: size, nesting depth and storable attributes, the same at every entry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxray.events import cloudevent as ev
from fxray.events.cloudevent import InvalidEvent
from fxray.runtime.context import EventSender

ENVELOPE = '{"specversion":"1.0","id":"e-1","source":"s","type":"t","data":%s}'


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_json_depth_measures_any_depth_without_recursion() -> None:
    value: Any = []
    for _ in range(100_000):
        value = [value]
    assert ev.json_depth(value) == 100_001
    assert ev.json_depth(value, limit=10) == 11  # stops once past the limit
    assert ev.json_depth({"a": [1, {"b": {}}]}) == 4
    assert ev.json_depth("text") == 0


@pytest.mark.parametrize("depth", [10_000, 200_000])
def test_a_deep_event_is_invalid_not_a_recursion_error(depth: int) -> None:
    for raw in (ENVELOPE % _nested(depth), _nested(depth)):
        with pytest.raises(InvalidEvent, match="nests deeper than the limit of 64"):
            ev.from_json(raw.encode(), max_bytes=10**7)


def test_the_depth_limit_counts_the_event_object() -> None:
    ev.from_json((ENVELOPE % _nested(63)).encode())  # 1 + 63 levels: the limit
    with pytest.raises(InvalidEvent, match="nests deeper"):
        ev.from_json((ENVELOPE % _nested(64)).encode())
    ev.from_json((ENVELOPE % _nested(99)).encode(), max_depth=100)


def test_binary_mode_data_has_the_same_limit() -> None:
    headers = [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_source", b"s")]
    headers += [("ce_type", b"t"), ("content-type", b"application/json")]
    ev.from_record(_nested(63).encode(), headers)
    with pytest.raises(InvalidEvent, match="data nests deeper"):
        ev.from_record(_nested(64).encode(), headers)
    with pytest.raises(InvalidEvent, match="data nests deeper"):
        ev.from_record(_nested(50_000).encode(), headers)


@pytest.mark.parametrize("name", ["id", "type", "source", "fxcorrelationid"])
def test_stored_attributes_are_at_most_255_characters(name: str) -> None:
    body = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", name: "x" * 255}
    ev.from_dict(body)
    body[name] = "x" * 256
    with pytest.raises(InvalidEvent, match=f"'{name}' is 256 characters"):
        ev.from_dict(body)


@pytest.mark.parametrize("name", ["id", "type", "source", "subject", "myext"])
def test_attributes_with_a_nul_character_are_refused(name: str) -> None:
    body = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", name: "a\x00b"}
    with pytest.raises(InvalidEvent, match="NUL"):
        ev.from_dict(body)
    body = {"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": "a\x00b"}
    assert ev.from_dict(body)["data"] == "a\x00b"  # data is JSON: a NUL is stored escaped


def test_nan_and_infinity_are_not_json() -> None:
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(InvalidEvent, match=f"{constant} is not JSON"):
            ev.from_json((ENVELOPE % f'{{"x": {constant}}}').encode())
    with pytest.raises(InvalidEvent, match="cannot be written as JSON"):
        ev.checked_json(ev.new_event("t", {"x": float("nan")}))


def test_checked_json_refuses_what_cannot_be_stored() -> None:
    event = ev.new_event("t", {"a": 1})
    assert json.loads(ev.checked_json(event)) == event
    with pytest.raises(InvalidEvent, match="cannot be written as JSON"):
        ev.checked_json({**event, "data": {1, 2}})
    with pytest.raises(InvalidEvent, match="over the 1024 limit"):
        ev.checked_json({**event, "data": "x" * 2000}, ev.EventLimits(max_bytes=1024))
    deep: Any = 1
    for _ in range(64):
        deep = [deep]
    with pytest.raises(InvalidEvent, match="nests deeper"):
        ev.checked_json({**event, "data": deep})


def test_a_script_cannot_send_an_event_over_the_limits() -> None:
    parent = ev.new_event("t", {})
    sender = EventSender(parent, "run-1", "fxray/services/s", False, ev.EventLimits(2048, 8))
    sender.send("ok", {"a": [1]})
    with pytest.raises(InvalidEvent, match="nests deeper than the limit of 8"):
        sender.send("deep", {"a": [[[[[[[[1]]]]]]]]})
    with pytest.raises(InvalidEvent, match="over the 2048 limit"):
        sender.send("big", "x" * 3000)
    with pytest.raises(InvalidEvent, match="cannot be written as JSON"):
        sender.send("odd", {"a": object()})
    assert [e["type"] for e in sender.emitted] == ["ok"]


headers = st.lists(
    st.tuples(
        st.sampled_from(["ce_id", "ce_type", "ce_source", "ce_specversion", "content-type", "x"]),
        st.binary(max_size=40),
    ),
    max_size=6,
)
values = st.one_of(
    st.binary(max_size=300),
    st.integers(0, 3_000).map(lambda n: _nested(n).encode()),
    st.integers(0, 3_000).map(lambda n: (ENVELOPE % _nested(n)).encode()),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=15,
    ).map(lambda v: json.dumps(v).encode()),
)


@settings(max_examples=300, deadline=None)
@given(values, headers)
def test_any_record_decodes_or_is_invalid_nothing_else(value: bytes, hdrs: Any) -> None:
    try:
        event = ev.from_record(value, hdrs)
    except InvalidEvent:
        return
    assert isinstance(event, dict)
    assert ev.json_depth(event) <= ev.MAX_EVENT_DEPTH
    ev.checked_json(event)  # whatever decodes can be written back within the limits
