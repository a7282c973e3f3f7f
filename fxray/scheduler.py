"""Cron schedules as events: each tick of a service's ``schedule`` becomes a
``fxray.schedule.tick`` event targeted at that service.

Ticks are computed from the last time the scheduler looked, so none is fired twice by one
scheduler and none is back-filled for the time the platform was down. Several platform
processes each running a scheduler would each fire a tick (exactly-once across processes
needs the database; see the management API).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from fxray import events as ev
from fxray.store import ServiceRecord

MAX_TICKS_PER_CHECK = 100


class Scheduler:
    """Turns elapsed cron ticks into events."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[str, float]] = {}  # service -> (expression, last check)

    def due(self, services: Iterable[ServiceRecord], now: float) -> list[dict[str, Any]]:
        ticks: list[dict[str, Any]] = []
        for service in services:
            if not service.schedule or not service.active:
                self._last.pop(service.name, None)
                continue
            expression, since = self._last.get(service.name, (service.schedule, now))
            if expression != service.schedule:
                since = now
            self._last[service.name] = (service.schedule, now)
            for fire_at in fire_times(service.schedule, since, now):
                ticks.append(tick_event(service.name, fire_at))
        return ticks


def fire_times(expression: str, after: float, until: float) -> list[float]:
    """Cron fire times in (after, until]."""
    times: list[float] = []
    cron = croniter(expression, datetime.fromtimestamp(math.floor(after), UTC))
    while len(times) < MAX_TICKS_PER_CHECK:
        fire_at = cron.get_next(float)
        if fire_at > until:
            break
        if fire_at > after:
            times.append(fire_at)
    return times


def next_fire_times(expression: str, after: float, count: int = 5) -> list[float]:
    cron = croniter(expression, datetime.fromtimestamp(math.floor(after), UTC))
    return [cron.get_next(float) for _ in range(count)]


def tick_event(service: str, fire_at: float) -> dict[str, Any]:
    scheduled_for = datetime.fromtimestamp(fire_at, UTC).isoformat().replace("+00:00", "Z")
    return ev.new_event(
        ev.SCHEDULE_TICK,
        {"service": service, "scheduled_for": scheduled_for},
        source="fxray/scheduler",
        id=f"tick:{service}:{int(fire_at)}",
        **{ev.TARGET: service},
    )
