"""CloudEvents helpers: building, serialising, lineage, and parsing bus records."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, to_binary, to_structured
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from fxray.events import cloudevent as ev
from fxray.events.cloudevent import InvalidEvent

Headers = list[tuple[str, bytes]]


def valid_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "shop/eu",
        "type": "orders.created",
        "data": {"order": 7},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def without(name: str) -> dict[str, Any]:
    body = valid_body()
    del body[name]
    return body


def raw(body: Any) -> bytes:
    return json.dumps(body).encode()


def binary_headers(**attrs: str) -> Headers:
    values = {"specversion": "1.0", "id": "evt-1", "source": "shop/eu", "type": "orders.created"}
    values.update(attrs)
    return [(f"ce_{k}", v.encode()) for k, v in values.items()] + [
        ("content-type", b"application/json")
    ]


def message_parts(message: KafkaMessage) -> tuple[bytes, Headers]:
    return message.value, list(message.headers.items())


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --------------------------------------------------------------------------- building


def test_new_event_is_valid_cloudevent() -> None:
    before = datetime.now(UTC)
    event = ev.new_event("orders.created", {"order": 7})
    after = datetime.now(UTC)
    assert event["specversion"] == "1.0"
    assert event["type"] == "orders.created"
    assert event["source"] == ev.DEFAULT_SOURCE
    assert uuid.UUID(event["id"])
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"order": 7}
    assert event["time"].endswith("Z")
    assert before <= parse_time(event["time"]) <= after
    assert json.loads(json.dumps(event)) == event  # plain JSON types only
    assert ev.from_dict(event) == event


def test_new_event_ids_are_unique() -> None:
    assert len({ev.new_event("a.b")["id"] for _ in range(100)}) == 100


def test_new_event_keeps_given_attributes() -> None:
    event = ev.new_event(
        "a.b", [1, 2], source="my/source", id="fixed", subject="s1", fxtarget="svc"
    )
    assert event["id"] == "fixed"
    assert event["source"] == "my/source"
    assert event["subject"] == "s1"
    assert event[ev.TARGET] == "svc"
    assert event["data"] == [1, 2]


def test_new_event_without_data_or_with_text_or_bytes() -> None:
    empty = ev.new_event("a.b")
    assert "data" not in empty
    assert "datacontenttype" not in empty
    text = ev.new_event("a.b", "hello")
    assert text["data"] == "hello"
    assert "datacontenttype" not in text
    blob = ev.new_event("a.b", b"\x00\xff")
    assert base64.b64decode(blob["data_base64"]) == b"\x00\xff"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": ""}, "type"),
        ({"type": "a.b", "source": ""}, "source"),
        ({"type": "a.b", "Bad": "x"}, "Bad"),
    ],
)
def test_new_event_invalid(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match=message):
        ev.new_event(**kwargs)


def test_json_round_trip() -> None:
    event = ev.new_event("a.b", {"nested": {"list": [1, "two", None, True]}, "é": "ü"}, x1="y")
    raw_bytes = ev.to_json(event)
    assert isinstance(raw_bytes, bytes)
    assert ev.from_json(raw_bytes) == event
    assert ev.from_json(raw_bytes.decode()) == event


def test_to_json_renders_datetimes_and_bytes() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = json.loads(ev.to_json({"time": when, "blob": b"hi"}))
    assert out == {"time": "2024-01-02T03:04:05Z", "blob": "hi"}
    with pytest.raises(TypeError):
        ev.to_json({"x": object()})


# --------------------------------------------------------------------------- lineage


def test_child_event_of_a_root_event() -> None:
    parent = ev.new_event("orders.created", {"order": 7})
    child = ev.child_event(parent, "run-1", "orders.billed", {"ok": True}, source="svc/billing")
    assert child[ev.PARENT_ID] == parent["id"]
    assert child[ev.RUN_ID] == "run-1"
    assert child[ev.CORRELATION_ID] == parent["id"]  # a root's correlation id is its own id
    assert child["type"] == "orders.billed"
    assert child["source"] == "svc/billing"
    assert child["data"] == {"ok": True}
    assert child["id"] != parent["id"]


def test_child_event_inherits_correlation_id() -> None:
    root = ev.new_event("a.root")
    middle = ev.child_event(root, "run-1", "a.middle", source="s")
    leaf = ev.child_event(middle, "run-2", "a.leaf", source="s")
    assert leaf[ev.CORRELATION_ID] == root["id"]
    assert leaf[ev.PARENT_ID] == middle["id"]
    assert leaf[ev.RUN_ID] == "run-2"
    explicit = ev.new_event("a.b", fxcorrelationid="flow-42")
    assert ev.child_event(explicit, "r", "c.d", source="s")[ev.CORRELATION_ID] == "flow-42"


def test_child_event_propagates_shadow_flag() -> None:
    parent = ev.new_event("a.b", fxshadow="true")
    assert ev.child_event(parent, "r", "c.d", source="s")[ev.SHADOW] == "true"
    assert ev.SHADOW not in ev.child_event(ev.new_event("a.b"), "r", "c.d", source="s")


def test_correlation_id() -> None:
    assert ev.correlation_id({"id": "e1"}) == "e1"
    assert ev.correlation_id({"id": "e1", ev.CORRELATION_ID: "c9"}) == "c9"


# --------------------------------------------------------------------------- records


def test_from_record_structured() -> None:
    event = ev.from_record(raw(valid_body()))
    assert event["id"] == "evt-1"
    assert event["type"] == "orders.created"
    assert event["data"] == {"order": 7}
    body = valid_body(time="2024-05-06T07:08:09Z")
    with_ct = ev.from_record(raw(body), [("content-type", b"application/cloudevents+json")])
    assert with_ct == ev.from_record(raw(body))


def test_from_record_structured_keeps_extensions_and_time() -> None:
    body = valid_body(time="2024-05-06T07:08:09Z", tenant="acme", fxcorrelationid="c1")
    event = ev.from_record(raw(body))
    assert event["time"] == "2024-05-06T07:08:09Z"
    assert event["tenant"] == "acme"
    assert event[ev.CORRELATION_ID] == "c1"


def test_from_record_binary() -> None:
    headers = binary_headers(time="2024-05-06T07:08:09Z", tenant="acme")
    event = ev.from_record(b'{"order": 7}', headers)
    assert event["id"] == "evt-1"
    assert event["source"] == "shop/eu"
    assert event["type"] == "orders.created"
    assert event["specversion"] == "1.0"
    assert event["tenant"] == "acme"
    assert event["time"] == "2024-05-06T07:08:09Z"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"order": 7}


def test_from_record_binary_json_with_charset_and_without_content_type() -> None:
    headers = binary_headers()[:-1]
    assert ev.from_record(b"[1, 2]", headers)["data"] == [1, 2]
    charset = [*headers, ("content-type", b"application/json; charset=utf-8")]
    assert ev.from_record(b'{"a": 1}', charset)["data"] == {"a": 1}


def test_from_record_binary_non_json_data_kept_as_bytes() -> None:
    headers = [*binary_headers()[:-1], ("content-type", b"application/octet-stream")]
    event = ev.from_record(b"\x00\xff", headers)
    assert event["datacontenttype"] == "application/octet-stream"
    assert base64.b64decode(event["data_base64"]) == b"\x00\xff"


def test_from_record_binary_without_value() -> None:
    event = ev.from_record(b"", binary_headers())
    assert event["id"] == "evt-1"
    assert "data" not in event


# --------------------------------------------------------------------------- malformed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"{not json", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"a string"', "JSON object"),
        (b"null", "JSON object"),
        (raw(valid_body(specversion="0.3")), "specversion must be '1.0', got '0.3'"),
        (raw(without("specversion")), "specversion must be '1.0', got None"),
        (raw(valid_body(specversion=1.0)), "specversion"),
        (raw(without("source")), "source"),
        (raw(without("type")), "type"),
        (raw(valid_body(id="")), "id"),
        (raw(valid_body(id=5)), "id"),
        (raw(valid_body(type="")), "type"),
        (raw(valid_body(time="yesterday")), "invalid attribute"),
    ],
)
def test_malformed_structured(value: bytes, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        ev.from_record(value)
    assert message in str(info.value)


def test_missing_id_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="id"):
        ev.from_record(raw(without("id")))
    headers = [(name, value) for name, value in binary_headers() if name != "ce_id"]
    with pytest.raises(InvalidEvent, match="id"):
        ev.from_record(b"{}", headers)


def test_oversized_event_rejected() -> None:
    big = raw(valid_body(data="x" * ev.MAX_EVENT_BYTES))
    with pytest.raises(InvalidEvent, match=f"over the {ev.MAX_EVENT_BYTES} limit"):
        ev.from_record(big)
    with pytest.raises(InvalidEvent, match="limit"):
        ev.from_record(b'"' + b"x" * ev.MAX_EVENT_BYTES + b'"', binary_headers())


def test_event_at_the_size_limit_accepted() -> None:
    body = valid_body(data="")
    padding = ev.MAX_EVENT_BYTES - len(raw(body))
    body["data"] = "x" * padding
    assert len(raw(body)) == ev.MAX_EVENT_BYTES
    assert ev.from_record(raw(body))["id"] == "evt-1"


def test_non_utf8_ce_header_rejected() -> None:
    headers = [*binary_headers(), ("ce_tenant", b"\xff\xfe")]
    with pytest.raises(InvalidEvent, match="UTF-8"):
        ev.from_record(b"{}", headers)


def test_non_utf8_unrelated_header_is_ignored() -> None:
    headers = [*binary_headers(), ("x-trace-bin", b"\xff\xfe\x00")]
    assert ev.from_record(b'{"order": 7}', headers)["data"] == {"order": 7}


@pytest.mark.parametrize("value", [b"not json", b"{", b"\xff\xfe"])
def test_binary_data_not_json_rejected(value: bytes) -> None:
    with pytest.raises(InvalidEvent, match="data is not JSON"):
        ev.from_record(value, binary_headers())


@pytest.mark.parametrize(("drop", "message"), [("ce_source", "source"), ("ce_type", "type")])
def test_binary_missing_attribute_rejected(drop: str, message: str) -> None:
    headers = [(name, value) for name, value in binary_headers() if name != drop]
    with pytest.raises(InvalidEvent, match=message):
        ev.from_record(b"{}", headers)


def test_binary_wrong_specversion_rejected() -> None:
    with pytest.raises(InvalidEvent, match=r"got '0\.3'"):
        ev.from_record(b"{}", binary_headers(specversion="0.3"))


def test_invalid_event_is_a_value_error() -> None:
    assert issubclass(InvalidEvent, ValueError)


# --------------------------------------------------------------------------- official SDK


def sdk_event(data: Any = None, **attrs: Any) -> CloudEvent:
    attributes = {"type": "com.example.order", "source": "/shop", "id": "sdk-1", **attrs}
    return CloudEvent(attributes, data)


@pytest.mark.parametrize("binding", [to_structured, to_binary])
def test_sdk_events_parse(binding: Any) -> None:
    message = binding(
        sdk_event({"order": 7}, datacontenttype="application/json", tenant="acme"), JSONFormat()
    )
    event = ev.from_record(*message_parts(message))
    assert event["type"] == "com.example.order"
    assert event["id"] == "sdk-1"
    assert event["source"] == "/shop"
    assert event["data"] == {"order": 7}
    assert event["tenant"] == "acme"


@pytest.mark.parametrize("binding", [to_structured, to_binary])
def test_sdk_events_without_content_type_parse(binding: Any) -> None:
    message = binding(sdk_event({"n": [1, 2]}), JSONFormat())
    event = ev.from_record(*message_parts(message))
    assert (event["type"], event["id"], event["data"]) == (
        "com.example.order",
        "sdk-1",
        {"n": [1, 2]},
    )


@pytest.mark.parametrize("binding", [to_structured, to_binary])
def test_sdk_binary_data_parses(binding: Any) -> None:
    message = binding(
        sdk_event(b"\x00\x01\xff", datacontenttype="application/octet-stream"), JSONFormat()
    )
    event = ev.from_record(*message_parts(message))
    assert event["id"] == "sdk-1"
    assert base64.b64decode(event["data_base64"]) == b"\x00\x01\xff"


@pytest.mark.parametrize("binding", [to_structured, to_binary])
def test_sdk_time_preserved(binding: Any) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    message = binding(sdk_event({"a": 1}, time=when), JSONFormat())
    event = ev.from_record(*message_parts(message))
    assert parse_time(event["time"]) == when


def test_fxray_events_round_trip_through_the_sdk() -> None:
    ours = ev.new_event("a.b", {"x": 1}, fxcorrelationid="c1")
    sdk = JSONFormat().read(None, ev.to_json(ours))
    assert sdk.get_id() == ours["id"]
    assert sdk.get_extension("fxcorrelationid") == "c1"
    back = ev.from_record(*message_parts(to_binary(sdk, JSONFormat())))
    assert back == ours


_VALID = {"specversion": "1.0", "id": "e-1", "source": "shop", "type": "orders.created"}
_VARIANTS: list[dict[str, Any]] = [
    {},
    {"time": "2026-11-22T08:31:00Z"},
    {"time": "2026-11-22T08:31:00.123456+01:00"},
    {"time": "2026-11-22T08:31:00.5-05:30"},
    {"time": "2026-11-22T08:31:00"},  # naive: refused
    {"time": "2026-02-30T08:31:00Z"},  # no such day
    {"time": "2026-11-22T24:00:00Z"},  # dateutil's midnight
    {"time": "2026-11-22 08:31:00Z"},
    {"time": "20261122T083100Z"},
    {"time": "2026-11-22T08:31:00.1234567Z"},
    {"time": "2026-11-22T08:31:00+25:00"},
    {"time": 1700000000},
    {"time": ""},
    {"subject": "s"},
    {"subject": ""},
    {"subject": 5},
    {"datacontenttype": "application/json", "data": {"a": 1}},
    {"dataschema": ""},
    {"fxparentid": "p", "partitionkey": "k", "x1": 3, "flag": True},
    {"Upper": "x"},
    {"with_underscore": "x"},
    {"ext\n": "x"},
    {"": "x"},
    {"data_base64": "aGk="},
    {"data_base64": "not base64!"},
    {"data": None, "data_base64": "aGk="},
    {"id": ""},
    {"id": 5},
    {"source": None},
    {"type": ["a"]},
    {"specversion": "0.3"},
    {"specversion": 1.0},
]


def _sdk_verdict(body: dict[str, Any]) -> str | None:
    try:
        ev._validated_by_sdk(body)
    except ev.InvalidEvent as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("variant", _VARIANTS, ids=range(len(_VARIANTS)))
def test_the_fast_check_never_accepts_what_the_sdk_refuses(variant: dict[str, Any]) -> None:
    body = {**_VALID, **variant}
    verdict = _sdk_verdict(dict(body))
    if ev._plainly_valid(body):
        assert verdict is None
    # whichever path decides, from_dict says what the SDK says
    try:
        ev.from_dict(body)
        outcome = None
    except ev.InvalidEvent as exc:
        outcome = str(exc)
    assert outcome == verdict


def test_the_fast_check_takes_the_common_events() -> None:
    assert ev._plainly_valid(dict(_VALID))
    assert ev._plainly_valid(ev.new_event("orders.created", {"n": 1}, source="shop"))
    parent = ev.new_event("a.b", {}, source="shop")
    assert ev._plainly_valid(
        ev.child_event(parent, "r", "c.d", {"x": [1]}, source="fxray/services/s")
    )
