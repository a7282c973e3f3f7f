"""Trigger matching and weighted version choice (pure functions over a routing snapshot).

A trigger links an event-type pattern to a service: an exact type (``orders.created``) or a
glob (``orders.*``, ``*.failed``), with optional filters on attributes or data fields (each a
glob on the value's string form: ``{"source": "shop/*", "data.country": "CH"}``). One event
may match many triggers; a service may have many triggers.

The version is chosen by weights (``{"svc@a1": 90, "svc@b2": 10}``; none means the latest
version), from a hash of the event id and trigger id, so a redelivered event always goes to
the same version.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fxray.store.records import RoutingSnapshot, TriggerRecord

_GLOB_CHARS = re.compile(r"[*?\[]")


def is_glob(pattern: str) -> bool:
    return bool(_GLOB_CHARS.search(pattern))


def validate_pattern(pattern: str) -> str:
    """The pattern, or ValueError saying what is wrong with it."""
    if not pattern or not pattern.strip():
        raise ValueError("a trigger pattern cannot be empty")
    if len(pattern) > 255:
        raise ValueError("a trigger pattern is at most 255 characters")
    if any(ch.isspace() for ch in pattern):
        raise ValueError(f"trigger pattern {pattern!r} contains white space")
    return pattern


def validate_weights(weights: Mapping[str, Any]) -> dict[str, int]:
    problems = []
    clean: dict[str, int] = {}
    for version, weight in weights.items():
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            problems.append(f"weight of {version!r} must be a whole number >= 0, got {weight!r}")
        else:
            clean[version] = weight
    if weights and not problems and sum(clean.values()) == 0:
        problems.append("at least one version needs a weight above 0")
    if problems:
        raise ValueError("; ".join(problems))
    return clean


@dataclass(frozen=True, slots=True)
class Match:
    trigger: TriggerRecord
    version_id: str


class TriggerTable:
    """Triggers indexed for matching: a dict for exact types, a list for globs."""

    def __init__(self, snapshot: RoutingSnapshot) -> None:
        self.snapshot = snapshot
        self.exact: dict[str, list[TriggerRecord]] = {}
        self.globs: list[tuple[re.Pattern[str], TriggerRecord]] = []
        for trigger in snapshot.triggers:
            if not trigger.active:
                continue
            if is_glob(trigger.pattern):
                regex = re.compile(fnmatch.translate(trigger.pattern))
                self.globs.append((regex, trigger))
            else:
                self.exact.setdefault(trigger.pattern, []).append(trigger)

    @property
    def revision(self) -> int:
        return self.snapshot.revision

    def match(self, event: Mapping[str, Any]) -> list[Match]:
        """Every (trigger, version) the event goes to; inactive services are skipped."""
        event_type = event.get("type", "")
        candidates = list(self.exact.get(event_type, ()))
        candidates.extend(t for regex, t in self.globs if regex.match(event_type))
        matches = []
        for trigger in candidates:
            service = self.snapshot.services.get(trigger.service)
            if service is None or not service.active:
                continue
            if trigger.filters and not filters_match(trigger.filters, event):
                continue
            version = choose_version(
                str(event.get("id", "")), trigger.id, trigger.weights, self.latest(trigger.service)
            )
            if version is not None and version in self.snapshot.versions:
                matches.append(Match(trigger, version))
        return matches

    def latest(self, service: str) -> str | None:
        return self.snapshot.latest.get(service)


def filters_match(filters: Mapping[str, str], event: Mapping[str, Any]) -> bool:
    for path, pattern in filters.items():
        value = lookup(event, path)
        if value is None or not fnmatch.fnmatchcase(_as_text(value), str(pattern)):
            return False
    return True


def lookup(event: Mapping[str, Any], path: str) -> Any:
    """An attribute (``source``) or a data field (``data.customer.country``)."""
    if not path.startswith("data."):
        return event.get(path)
    value: Any = event.get("data")
    for part in path.split(".")[1:]:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def choose_version(
    event_id: str, trigger_id: str, weights: Mapping[str, int], latest: str | None
) -> str | None:
    """The version for this event, by weight; deterministic in (event id, trigger id)."""
    live = [(version, weight) for version, weight in sorted(weights.items()) if weight > 0]
    if not live:
        return latest
    if len(live) == 1:
        return live[0][0]
    total = sum(weight for _, weight in live)
    digest = hashlib.blake2b(f"{event_id}\x00{trigger_id}".encode(), digest_size=8).digest()
    point = int.from_bytes(digest, "big") % total
    for version, weight in live:
        if point < weight:
            return version
        point -= weight
    return live[-1][0]
