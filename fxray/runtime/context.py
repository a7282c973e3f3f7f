"""The script API: ``from fxray import context``.

Shaped like StreamZero FX's ``context`` so its services port by changing one import::

    from fxray import context

    name = context.params.get("name", "world")
    context.log.info("greeting %s", name)
    greeted = context.state.get("greeted", 0)
    context.state.put("greeted", greeted + 1)
    context.events.send("demo.greeted", {"name": name})

``context`` is a proxy: each attribute reads the run that is executing in the current thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fxray.events import cloudevent as ev


class ContextError(RuntimeError):
    """``context`` was used outside a running service script."""


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
    """``context.events``: emit events that carry this run's causation and correlation ids."""

    def __init__(
        self,
        parent: dict[str, Any],
        run_id: str,
        source: str,
        shadow: bool,
        limits: ev.EventLimits = ev.DEFAULT_LIMITS,
    ) -> None:
        self._parent = parent
        self._run_id = run_id
        self._source = source
        self._shadow = shadow
        self._limits = limits
        self.emitted: list[dict[str, Any]] = []

    def send(
        self,
        type: str,
        data: Any = None,
        *legacy: Any,
        source: str | None = None,
        **attributes: Any,
    ) -> str:
        """Emit an event of ``type`` with ``data``; returns its id.

        StreamZero's positional form ``send(type, source, data)`` is accepted too. An event
        that is not JSON data, or breaks the platform's size or nesting limit, raises
        :class:`~fxray.events.cloudevent.InvalidEvent`.
        """
        if legacy:
            source, data = data, legacy[0]
        if self._shadow:
            attributes[ev.SHADOW] = "true"
        event = ev.child_event(
            self._parent, self._run_id, type, data, source=source or self._source, **attributes
        )
        ev.checked_json(event, self._limits)  # InvalidEvent here, in the script, saying why
        self.emitted.append(event)
        return str(event["id"])


class StateView:
    """``context.state``: persistent per-service key/value (``get``, ``put``, ``delete``)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def get(self, key: str | None = None, default: Any = None) -> Any:
        """The value under ``key``; with no key, all of the service's state as a dict."""
        if key is None:
            names = self._backend.keys()
            return {k: self._backend.get(k) for k in names}
        return self._backend.get(key, default)

    def put(self, key: str, value: Any) -> None:
        self._backend.put(key, value)

    def delete(self, key: str) -> None:
        self._backend.delete(key)

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Atomically replace the value with ``fn(old)``; safe across concurrent runs."""
        return self._backend.update(key, fn, default=default)

    def keys(self) -> list[str]:
        return list(self._backend.keys())


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
        if self.event.get("type") == ev.SCHEDULE_TICK and isinstance(data, dict):
            # a schedule's parameters, over the tick's service, scheduled_for and schedule_id
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
