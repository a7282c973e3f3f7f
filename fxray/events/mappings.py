"""Event mapping rules (pure functions, no I/O).

A mapping rule turns events of one type into events of another, renaming or copying fields of
``data``. Paths are dotted keys into nested objects (``order.id``); list items cannot be
addressed, nor keys that contain a dot.

- ``map_all`` rules start from a copy of the data and move (``rename``) or duplicate
  (``copy``) the listed fields; non-object data passes through unchanged.
- Other rules build new data holding only the listed fields, at their target paths.

Every source value is read from the *original* data, so the order of a rule's fields does not
matter and two renames can swap fields. Missing source paths are skipped. A target path whose
parent holds a non-object value replaces that value with an object.

The mapped event (:func:`mapped_event`) has a deterministic id (a UUID 5 of the rule id and the
source event id), so a redelivered source event maps to the same event id and the router's run
deduplication by event id still holds.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fxray.events import cloudevent as ev

MAPPING_ID = "fxmappingid"
"""Extension attribute naming the rule that produced a mapped event."""

MAX_TYPE_LENGTH = 255
_GLOB_CHARS = frozenset("*?[")
_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fxray.dev/mappings")
_MISSING = object()

Op = Literal["rename", "copy"]


class FieldMap(BaseModel):
    """One field of a rule: ``{"from": "order.id", "to": "id", "op": "rename"}``."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")

    from_path: str = Field(alias="from")
    to_path: str = Field(alias="to")
    op: Op = "rename"

    def to_dict(self) -> dict[str, str]:
        """The JSON form, with the ``from``/``to`` keys."""
        return {"from": self.from_path, "to": self.to_path, "op": self.op}


class MappingRule(BaseModel):
    """A rule mapping events of ``source_type`` to events of ``target_type``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    source_type: str
    target_type: str
    fields: list[FieldMap] = Field(default_factory=list)
    map_all: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, with each field's ``from``/``to`` keys."""
        return {
            "id": self.id,
            "source_type": self.source_type,
            "target_type": self.target_type,
            "fields": [f.to_dict() for f in self.fields],
            "map_all": self.map_all,
        }


def validate_rule(
    source_type: str,
    target_type: str,
    fields: Iterable[FieldMap | Mapping[str, Any]],
) -> list[str]:
    """Every problem of a rule, in words ([] for a valid rule).

    ``fields`` may be :class:`FieldMap` objects or their JSON dicts (checked too).
    """
    problems = _type_problems("source type", source_type)
    problems += _type_problems("target type", target_type)
    if target_type in ev.PLATFORM_TYPES:
        problems.append(f"target type {target_type!r} is a platform event type")
    if source_type and source_type == target_type:
        problems.append("a rule cannot map a type onto itself")
    targets: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(fields, start=1):
        where = f"field {number}"
        if isinstance(raw, FieldMap):
            field = raw
        else:
            try:
                field = FieldMap.model_validate(raw)
            except ValidationError as exc:
                problems += [f"{where}: {_pydantic_message(err)}" for err in exc.errors()]
                continue
        problems += _path_problems(f"{where}: from path", field.from_path)
        path_problems = _path_problems(f"{where}: to path", field.to_path)
        problems += path_problems
        if path_problems:
            continue
        target = tuple(field.to_path.split("."))
        for other, other_number in targets.items():
            if other == target:
                problems.append(
                    f"{where}: to path {field.to_path!r} is already the target of field "
                    f"{other_number}"
                )
            elif other[: len(target)] == target or target[: len(other)] == other:
                problems.append(
                    f"{where}: to path {field.to_path!r} overlaps the target "
                    f"{'.'.join(other)!r} of field {other_number}"
                )
        targets.setdefault(target, number)
    return problems


def _type_problems(what: str, value: str) -> list[str]:
    if not value or not value.strip():
        return [f"{what} cannot be empty"]
    problems = []
    if len(value) > MAX_TYPE_LENGTH:
        problems.append(f"{what} is at most {MAX_TYPE_LENGTH} characters")
    if any(ch.isspace() for ch in value):
        problems.append(f"{what} {value!r} contains white space")
    if any(ch in _GLOB_CHARS for ch in value):
        problems.append(f"{what} {value!r} cannot be a glob (use an exact event type)")
    return problems


def _path_problems(what: str, path: str) -> list[str]:
    if not path or not path.strip():
        return [f"{what} cannot be empty"]
    if any(ch.isspace() for ch in path):
        return [f"{what} {path!r} contains white space"]
    if "" in path.split("."):
        return [f"{what} {path!r} has an empty segment"]
    return []


def _pydantic_message(error: Any) -> str:
    location = ".".join(str(part) for part in error.get("loc", ())) or "value"
    return f"{location}: {error.get('msg', 'invalid')}"


def find_cycle(rules: Iterable[MappingRule], new: MappingRule) -> list[str] | None:
    """The cycle of event types that adding (or changing) ``new`` would form, else None.

    A rule in ``rules`` with ``new``'s id is replaced by it. Only cycles through ``new`` are
    reported (any other cycle existed before). The shortest one is given, starting and ending
    at ``new.source_type``: ``["a", "b", "c", "a"]``.
    """
    graph: dict[str, set[str]] = {}
    for rule in rules:
        if rule.id != new.id:
            graph.setdefault(rule.source_type, set()).add(rule.target_type)
    start, goal = new.target_type, new.source_type
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (before := previous[path[-1]]) is not None:
                path.append(before)
            return [goal, *reversed(path)]
        for successor in sorted(graph.get(node, ())):
            if successor not in previous:
                previous[successor] = node
                queue.append(successor)
    return None


def map_data(rule: MappingRule, data: Any) -> Any:
    """The data of the event ``rule`` makes from an event with ``data`` (see the module doc)."""
    if not isinstance(data, dict):
        return copy.deepcopy(data) if rule.map_all else {}
    values = [(field, _get(data, field.from_path)) for field in rule.fields]
    if rule.map_all:
        result = copy.deepcopy(data)
        for field in rule.fields:
            if field.op == "rename":
                _delete(result, field.from_path)
    else:
        result = {}
    for field, value in values:
        if value is not _MISSING:
            _set(result, field.to_path, copy.deepcopy(value))
    return result


def _get(data: dict[str, Any], path: str) -> Any:
    value: Any = data
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def _delete(data: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node: Any = data
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = value


def mapped_event_id(rule_id: str, event_id: str) -> str:
    """The id of the event a rule makes from an event: the same for every redelivery."""
    return str(uuid.uuid5(_ID_NAMESPACE, json.dumps([rule_id, event_id])))


def mapped_event(rule: MappingRule, event: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent ``rule`` makes from ``event``.

    It carries ``fxparentid`` (the source event), the flow's ``fxcorrelationid`` and
    ``fxmappingid`` (the rule), but no ``fxrunid`` (no run made it); ``fxshadow`` and
    ``partitionkey`` are kept from the source event. Data that passes through unchanged keeps
    its ``datacontenttype`` (binary ``data_base64`` data too, for ``map_all`` rules).
    """
    attributes: dict[str, Any] = {
        "id": mapped_event_id(rule.id, str(event["id"])),
        ev.PARENT_ID: event["id"],
        ev.CORRELATION_ID: ev.correlation_id(event),
        MAPPING_ID: rule.id,
    }
    for name in (ev.SHADOW, "partitionkey"):
        if name in event:
            attributes[name] = event[name]
    source_data = event.get("data")
    if source_data is None and "data_base64" in event and rule.map_all:
        data: Any = base64.b64decode(event["data_base64"])
    else:
        data = map_data(rule, source_data)
    if not isinstance(source_data, dict) and rule.map_all and "datacontenttype" in event:
        attributes["datacontenttype"] = event["datacontenttype"]
    return ev.new_event(rule.target_type, data, source=f"fxray/mappings/{rule.id}", **attributes)
