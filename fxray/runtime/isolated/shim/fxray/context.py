"""``fxray.context`` inside an isolated worker process: the script API, standard library only.

It behaves as the in-process ``fxray.runtime.context`` does. What a run was handed (``params``,
``event``, ``config``, ``secrets``, ``run``, ``package``, ``scratch``, ``log``, ``result``) is
answered here; what reaches the platform (``events.send`` and ``state``) is a call to the
executor, which applies it with the real objects: event limits, the KV store, ops records.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SCHEDULE_TICK = "fxray.schedule.tick"
UPDATE_RETRIES = 100

Call = Callable[[str, dict[str, Any]], Any]
"""Sends a call to the executor and returns its answer (or raises the error it reports)."""


class ContextError(RuntimeError):
    """``context`` was used outside a running service script."""


class InvalidEvent(ValueError):
    """An event the platform refuses (not JSON data, or over its size or nesting limit)."""


class EventTooLarge(InvalidEvent):
    """An event over the platform's size limit."""


class Params(Mapping[str, Any]):
    """Read-only, dict-like view of the triggering event's data (``context.params``)."""

    def __init__(self, data: Any) -> None:
        self._data: dict[str, Any] = data if isinstance(data, dict) else {"data": data}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Params({self._data!r})"

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)


@dataclass(frozen=True, slots=True)
class RunInfo:
    """Who is running: ``context.run``."""

    id: str
    service: str
    version: str
    step: str
    correlation_id: str
    attempt: int = 1
    service_name: str = ""  # the service's name in its project; ``service`` is its id

    @property
    def run_id(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """StreamZero FX compatibility: ``context.package.name`` / ``.id``."""

    name: str
    id: str


class EventSender:
    """``context.events``: the executor builds, checks and keeps each event."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def send(
        self,
        type: str,
        data: Any = None,
        *legacy: Any,
        source: str | None = None,
        **attributes: Any,
    ) -> str:
        """Emit an event of ``type`` with ``data``; returns its id (``send(type, source,
        data)`` works too). :class:`InvalidEvent` if the platform refuses it."""
        if legacy:
            source, data = data, legacy[0]
        args = {"type": type, "data": data, "source": source, "attributes": attributes}
        return str(self._call("events.send", args))


class StateView:
    """``context.state``: the service's persistent key/value state, kept by the executor."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def get(self, key: str | None = None, default: Any = None) -> Any:
        """The value under ``key``; with no key, all of the service's state as a dict."""
        if key is None:
            return self._call("state.all", {})
        found, value = self._call("state.get", {"key": key})
        return value if found else default

    def put(self, key: str, value: Any) -> None:
        self._call("state.put", {"key": key, "value": value})

    def delete(self, key: str) -> None:
        self._call("state.delete", {"key": key})

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value with ``fn(old)``; safe across concurrent runs (a
        check-and-set: ``fn`` runs again after a conflicting write)."""
        for attempt in range(UPDATE_RETRIES + 1):
            found, value, index = self._call("state.entry", {"key": key})
            new = fn(value if found else default)
            if self._call("state.cas", {"key": key, "value": new, "index": index}):
                return new
            if attempt < UPDATE_RETRIES:
                time.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
        raise RuntimeError(
            f"state key {key!r}: update gave up after {UPDATE_RETRIES + 1} attempts, each "
            "conflicting with a concurrent write"
        )

    def keys(self) -> list[str]:
        return list(self._call("state.keys", {}))


@dataclass
class RunContext:
    """Everything ``context`` exposes for one run."""

    event: dict[str, Any]
    run: RunInfo
    config: dict[str, Any]
    secrets: dict[str, Any]
    state: StateView
    events: EventSender
    log: logging.Logger
    scratch: dict[str, Any] = field(default_factory=dict)
    result: Any = None

    @property
    def params(self) -> Params:
        data = self.event.get("data")
        if self.event.get("type") == SCHEDULE_TICK and isinstance(data, dict):
            tick = {k: v for k, v in data.items() if k != "params"}
            return Params({**tick, **(data.get("params") or {})})
        return Params(data)

    @property
    def package(self) -> PackageInfo:
        return PackageInfo(name=self.run.service_name or self.run.service, id=self.run.version)


_current = threading.local()


def current() -> RunContext:
    ctx = getattr(_current, "ctx", None)
    if ctx is None:
        raise ContextError("fxray.context is only available inside a running service script")
    return ctx


def _activate(ctx: RunContext | None) -> None:
    _current.ctx = ctx


class _ContextProxy:
    """Module-level ``context`` object; forwards to the current thread's run."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(current(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "result":
            raise AttributeError(f"context.{name} cannot be set")
        current().result = value

    def __repr__(self) -> str:
        ctx = getattr(_current, "ctx", None)
        return "<fxray.context (no run)>" if ctx is None else f"<fxray.context run={ctx.run.id}>"


context = _ContextProxy()
