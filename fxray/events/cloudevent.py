"""CloudEvents 1.0 in JSON, built and parsed with the ``cloudevents`` SDK.

Inside the platform an event travels as its *structured* JSON form: a plain dict with the
context attributes, the extensions and ``data``. Every event fxray emits carries three
extension attributes linking it to what caused it:

``fxparentid``
    the id of the event that triggered the run which emitted this one;
``fxrunid``
    the id of that run;
``fxcorrelationid``
    an id shared by the whole flow (a root event's correlation id is its own id).

Platform event types (see ``docs/events.md``):

``fxray.run.manual``
    a manual run; ``fxtarget`` names the service, optional ``fxversion``/``fxpriority``;
    ``data`` holds the run's parameters.
``fxray.schedule.tick``
    a cron tick; ``fxtarget`` names the service; ``data`` has ``scheduled_for``.
``fxray.asset.uploaded``
    a file was stored as a project's asset; routed to the services linked to it; ``data`` has
    ``project``, ``path``, ``size``, ``sha256``, ``content_type`` and ``url``.

An event of any type with ``fxreplayof`` (a run id) and ``fxtarget`` replays that run: it runs
the target service only (``fxversion`` picks the version), never its linked triggers.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cloudevents.core.bindings import kafka as kafka_binding
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse

from fxray.bus import OutgoingRecord

PARENT_ID = "fxparentid"
RUN_ID = "fxrunid"
CORRELATION_ID = "fxcorrelationid"
TARGET = "fxtarget"
VERSION = "fxversion"
PRIORITY = "fxpriority"
SHADOW = "fxshadow"
REPLAY_OF = "fxreplayof"
REPLAY_TRIGGER = "replay"  # the trigger id of replayed runs

MANUAL_RUN = "fxray.run.manual"
SCHEDULE_TICK = "fxray.schedule.tick"
ASSET_UPLOADED = "fxray.asset.uploaded"  # routed by triggers like any event
PLATFORM_TYPES = frozenset({MANUAL_RUN, SCHEDULE_TICK})

DEFAULT_SOURCE = "fxray"
MAX_EVENT_BYTES = 1_000_000
MAX_EVENT_DEPTH = 64
"""How deep an event's JSON may nest (the event object is level 1). Far below what Python's
parser, pickler and the catalog's schema inference handle (~1,000 levels), and far above
what real events need."""

_FORMAT = JSONFormat()

EventDict = dict[str, Any]


class InvalidEvent(ValueError):
    """A record that is not a valid CloudEvents 1.0 JSON event; the message says why."""


@dataclass(frozen=True, slots=True)
class EventLimits:
    """The size and nesting limits of an event, the same at every entry to the platform."""

    max_bytes: int = MAX_EVENT_BYTES
    max_depth: int = MAX_EVENT_DEPTH

    @classmethod
    def from_settings(cls, settings: Any) -> EventLimits:
        return cls(settings.max_event_bytes, settings.max_event_depth)


DEFAULT_LIMITS = EventLimits()


def json_depth(value: Any, limit: int | None = None) -> int:
    """How deep ``value`` nests (a scalar is 0, ``[]`` is 1); without recursion, so any depth
    is measured safely. Stops early once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > deepest:
            deepest = depth
            if limit is not None and deepest > limit:
                return deepest
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # strict: no NaN or Infinity


class NestedTooDeeply(ValueError):
    """JSON nested past what Python's parser can follow."""


def strict_json(raw: bytes | str) -> Any:
    """The JSON value of UTF-8 bytes or text, without ``NaN`` or ``Infinity``; ``ValueError``
    saying why not (:class:`NestedTooDeeply` for nesting past the parser, never a
    ``RecursionError``)."""
    try:
        return _DECODER.decode(raw.decode() if isinstance(raw, bytes | bytearray) else raw)
    except RecursionError:
        raise NestedTooDeeply("nested too deeply") from None


def loads(raw: bytes | str, max_depth: int = MAX_EVENT_DEPTH, what: str = "event") -> Any:
    """:func:`strict_json` that refuses JSON nested deeper than ``max_depth``, however deep;
    :class:`InvalidEvent` saying why."""
    try:
        value = strict_json(raw)
    except NestedTooDeeply:
        raise InvalidEvent(f"{what} nests deeper than the limit of {max_depth} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise InvalidEvent(f"{what} is not JSON: {exc}") from exc
    # JSON cannot nest deeper than it has brackets: most events are checked by this count
    square, curly = (b"[", b"{") if isinstance(raw, bytes | bytearray) else ("[", "{")
    brackets = raw.count(square) + raw.count(curly)  # type: ignore[arg-type]
    if brackets > max_depth and json_depth(value, max_depth) > max_depth:
        raise InvalidEvent(f"{what} nests deeper than the limit of {max_depth} levels")
    return value


class EventTooLarge(InvalidEvent):
    """An event over the size limit (the HTTP API answers 413, not 422)."""


def checked_json(
    event: EventDict, limits: EventLimits = DEFAULT_LIMITS, what: str = "event"
) -> bytes:
    """The event's JSON bytes if it is within ``limits``; :class:`InvalidEvent` if not, or if
    it cannot be written as JSON (:class:`EventTooLarge` for its size). For events built in
    memory (scripts, mappings, the API); ``what`` names it in messages."""
    if json_depth(event, limits.max_depth) > limits.max_depth:
        raise InvalidEvent(f"{what} nests deeper than the limit of {limits.max_depth} levels")
    try:
        raw = to_json(event)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidEvent(f"{what} cannot be written as JSON: {exc}") from exc
    if len(raw) > limits.max_bytes:
        raise EventTooLarge(f"{what} is {len(raw)} bytes, over the {limits.max_bytes} limit")
    return raw


def new_event(
    type: str,
    data: Any = None,
    *,
    source: str = DEFAULT_SOURCE,
    **attributes: Any,
) -> EventDict:
    """Build a validated CloudEvent and return its structured dict form."""
    attrs: dict[str, Any] = {"type": type, "source": source, **attributes}
    attrs.setdefault("id", str(uuid.uuid4()))
    attrs.setdefault("time", datetime.now(UTC))
    if data is not None and not isinstance(data, bytes | str):
        attrs.setdefault("datacontenttype", "application/json")
    try:
        CloudEvent(attrs, data)
    except BaseCloudEventException as exc:
        raise InvalidEvent(_describe(exc)) from exc
    return _structured(attrs, data)


def child_event(
    parent: EventDict,
    run_id: str,
    type: str,
    data: Any = None,
    *,
    source: str,
    **attributes: Any,
) -> EventDict:
    """An event emitted by a run, carrying its causation and correlation attributes."""
    attributes[PARENT_ID] = parent["id"]
    attributes[RUN_ID] = run_id
    attributes[CORRELATION_ID] = correlation_id(parent)
    for name in (SHADOW,):
        if name in parent and name not in attributes:
            attributes[name] = parent[name]
    return new_event(type, data, source=source, **attributes)


def correlation_id(event: EventDict) -> str:
    return str(event.get(CORRELATION_ID) or event["id"])


def to_json(event: EventDict) -> bytes:
    """Serialise a structured event dict as CloudEvents JSON bytes."""
    return json.dumps(event, separators=(",", ":"), default=_json_default, allow_nan=False).encode()


STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


def to_record(event: EventDict, mode: str = "structured") -> tuple[bytes, list[tuple[str, bytes]]]:
    """An event as a bus record value and headers, in a CloudEvents Kafka content mode.

    ``structured`` puts the whole event in the value (self-contained: any consumer, log or
    search index gets every attribute); ``binary`` puts the attributes in ``ce_*`` headers and
    only the data in the value (via the SDK's Kafka binding).
    """
    if mode == "structured":
        return to_json(event), [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
    if mode != "binary":
        raise ValueError(f"unknown CloudEvents content mode {mode!r}")
    attributes = {k: v for k, v in event.items() if k not in ("data", "data_base64")}
    if "time" in attributes:
        attributes["time"] = isoparse(attributes["time"])
    data = event.get("data")
    if data is None and "data_base64" in event:
        data = base64.b64decode(event["data_base64"])
    message = kafka_binding.to_binary(CloudEvent(attributes, data), _FORMAT)
    return message.value or b"", [(k, bytes(v)) for k, v in message.headers.items()]


def partition_key(event: EventDict) -> bytes | None:
    """The record key of an event: its ``partitionkey`` extension, if any."""
    key = event.get("partitionkey")
    return str(key).encode() if key else None


def to_outgoing(
    event: EventDict,
    mode: str = "structured",
    limits: EventLimits | None = None,
    what: str = "event",
) -> OutgoingRecord:
    """An event as a record to produce, keyed by its partition key; checked against
    ``limits`` first if given (:func:`checked_json`, whose bytes a structured record reuses)."""
    if limits is not None:
        raw = checked_json(event, limits, what)
        if mode == "structured":
            headers = [("content-type", STRUCTURED_CONTENT_TYPE.encode())]
            return OutgoingRecord(raw, key=partition_key(event), headers=headers)
    value, headers = to_record(event, mode)
    return OutgoingRecord(value, key=partition_key(event), headers=headers)


def from_json(
    raw: bytes | str, max_bytes: int = MAX_EVENT_BYTES, max_depth: int = MAX_EVENT_DEPTH
) -> EventDict:
    """Parse and validate CloudEvents JSON; raises :class:`InvalidEvent` saying why."""
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes, over the {max_bytes} limit")
    return from_dict(loads(raw, max_depth))


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_EXTENSION_NAME = re.compile(r"[a-z0-9]+")
_REQUIRED = ("id", "source", "type")
_OPTIONAL_STRINGS = ("subject", "datacontenttype", "dataschema")
_NOT_EXTENSIONS = frozenset({"specversion", "time", "data", "data_base64"}).union(
    _REQUIRED, _OPTIONAL_STRINGS
)


def _plainly_valid(body: dict[str, Any]) -> bool:
    """True if ``body`` passes the SDK's checks for certain: the common case, decided in
    a few microseconds. False means "not sure", never "invalid": the SDK then decides."""
    if body.get("specversion") != "1.0":
        return False
    for name in _REQUIRED:
        value = body.get(name)
        if not value or type(value) is not str:
            return False
    for name in _OPTIONAL_STRINGS:
        if name in body:
            value = body[name]
            if not value or type(value) is not str:
                return False
    if "time" in body:
        stamp = body["time"]
        if type(stamp) is not str or not _RFC3339.fullmatch(stamp):
            return False
        try:
            datetime.fromisoformat(stamp)  # a real date and time (no 2024-02-30)
        except ValueError:
            return False
    if "data_base64" in body and body.get("data") is None:
        return False  # the SDK path decodes it strictly
    return all(
        name in _NOT_EXTENSIONS or _EXTENSION_NAME.fullmatch(name) is not None for name in body
    )


def from_dict(body: Any) -> EventDict:
    """Validate a decoded structured event; raises :class:`InvalidEvent` saying why.

    The SDK's ``CloudEvent`` does the validation, unless the event is plainly valid; the dict
    itself is returned unchanged.
    """
    if not isinstance(body, dict):
        raise InvalidEvent("a CloudEvent must be a JSON object")
    _check_storable(body)
    if _plainly_valid(body):
        return body
    return _validated_by_sdk(body)


MAX_ATTRIBUTE_LENGTH = 255
"""The longest id, type, source or causation attribute: the state store keeps them in
255-character columns (a longer one would fail the whole batch of rows it is written with)."""
_STORED_ATTRIBUTES = ("id", "type", "source", PARENT_ID, RUN_ID, CORRELATION_ID, TARGET, VERSION)


def _check_storable(body: dict[str, Any]) -> None:
    """Attributes the platform can store and index: no NUL characters (PostgreSQL text cannot
    hold them), and no stored attribute longer than :data:`MAX_ATTRIBUTE_LENGTH`."""
    for name in _STORED_ATTRIBUTES:
        value = body.get(name)
        if type(value) is str and len(value) > MAX_ATTRIBUTE_LENGTH:
            raise InvalidEvent(
                f"attribute {name!r} is {len(value)} characters, over the limit of "
                f"{MAX_ATTRIBUTE_LENGTH}"
            )
    for name, value in body.items():
        if "\x00" in name or (type(value) is str and "\x00" in value and name != "data"):
            raise InvalidEvent(f"attribute {name[:64]!r} contains a NUL character")


def _validated_by_sdk(body: dict[str, Any]) -> EventDict:
    version = body.get("specversion")
    if version != "1.0":
        raise InvalidEvent(f"specversion must be '1.0', got {version!r}")
    for name in ("id", "source", "type"):
        if name not in body:  # the SDK would invent an id
            raise InvalidEvent(f"invalid CloudEvent: missing required attribute {name!r}")
    attributes = {k: v for k, v in body.items() if k not in ("data", "data_base64")}
    data = body.get("data")
    try:
        if "time" in attributes:
            attributes["time"] = isoparse(attributes["time"])
        if data is None and "data_base64" in body:
            data = base64.b64decode(body["data_base64"], validate=True)
        CloudEvent(attributes, data)
    except BaseCloudEventException as exc:
        raise InvalidEvent(_describe(exc)) from exc
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidEvent(f"invalid attribute: {exc}") from exc
    return body


def _structured(attributes: dict[str, Any], data: Any) -> EventDict:
    body = {k: _json_default(v) if isinstance(v, datetime) else v for k, v in attributes.items()}
    if isinstance(data, bytes):
        body["data_base64"] = base64.b64encode(data).decode()
    elif data is not None:
        body["data"] = data
    return body


def _describe(exc: BaseCloudEventException) -> str:
    errors = getattr(exc, "errors", None)
    if isinstance(errors, dict) and errors:
        parts = [f"{name}: {errs[0]}" for name, errs in errors.items() if errs]
        return "invalid CloudEvent: " + ", ".join(parts)
    return f"invalid CloudEvent: {exc}"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def from_record(
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
    max_bytes: int = MAX_EVENT_BYTES,
    max_depth: int = MAX_EVENT_DEPTH,
) -> EventDict:
    """An event from a bus record, in either CloudEvents Kafka content mode.

    Binary mode carries the attributes in ``ce_*`` headers and the data as the value;
    structured mode carries the whole event as the JSON value.
    """
    if headers and any(name.startswith("ce_") for name, _ in headers):
        return _from_binary(value, headers, max_bytes, max_depth)
    return from_json(value, max_bytes, max_depth)


def _from_binary(
    value: bytes, headers: list[tuple[str, bytes]], max_bytes: int, max_depth: int
) -> EventDict:
    body: dict[str, Any] = {}
    content_type: str | None = None
    try:
        for name, raw in headers:
            if not name.startswith("ce_") and name.lower() != "content-type":
                continue  # other headers (tracing, ...) are not the event's business
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            if name.startswith("ce_"):
                body[name[3:]] = text
            elif name.lower() == "content-type":
                content_type = text
    except UnicodeDecodeError as exc:
        raise InvalidEvent(f"a ce_ header is not UTF-8: {exc}") from exc
    if content_type:
        body["datacontenttype"] = content_type
    if len(value or b"") > max_bytes:
        raise InvalidEvent(f"event is {len(value)} bytes, over the {max_bytes} limit")
    if value:
        if content_type is None or _FORMAT.JSON_CONTENT_TYPE_PATTERN.match(content_type):
            # the event object is one level above its data
            body["data"] = loads(value, max_depth - 1, "data")
        else:
            body["data_base64"] = base64.b64encode(value).decode()
    return from_dict(body)
