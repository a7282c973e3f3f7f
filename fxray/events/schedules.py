"""Cron schedules as events: each tick of a schedule becomes a ``fxray.schedule.tick`` event
targeted at the schedule's service.

Schedules live in the database (:mod:`fxray.store.schedules`): one per service from its
manifest's ``schedule``, and any number set through the API, each with run parameters. The
first router of each platform process claims due ticks there (a conditional UPDATE, so with
several processes on one database each tick fires exactly once) and publishes them with
:func:`tick_event`. A tick's id is fixed by (schedule, fire time): a redelivered tick maps to
the same run and never runs twice.

Expressions are croniter's: 5 fields (minute hour day-of-month month day-of-week), a sixth for
seconds (*last*: ``* * * * * */10`` fires every 10 s), an optional seventh for the year, or an
alias (``@hourly``, ``@daily``, ...). Times are UTC.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from fxray.events import cloudevent as ev

MAX_TICKS_PER_CHECK = 100
MAX_CRON_LENGTH = 128
SOURCE = "fxray/scheduler"


def validate_cron(expression: str) -> str:
    """The expression, stripped; ValueError saying what is wrong (same rules as manifests,
    and it must fire at least once in the future)."""
    value = expression.strip()
    if not value:
        raise ValueError("a cron expression cannot be empty")
    if len(value) > MAX_CRON_LENGTH:
        raise ValueError(f"a cron expression is at most {MAX_CRON_LENGTH} characters")
    try:
        valid = croniter.is_valid(value)
    except Exception:  # croniter raises on some malformed input instead of answering False
        valid = False
    if not valid:
        raise ValueError(
            f"{value!r} is not a valid cron expression: use 5 fields (minute hour day-of-month "
            "month day-of-week), 6 with seconds last, or an alias such as @hourly"
        )
    try:
        next_fire_times(value, datetime.now(UTC).timestamp(), 1)
    except Exception as exc:  # CroniterBadDateError (a ValueError), and whatever else
        raise ValueError(f"cron expression {value!r} never fires ({exc})") from exc
    return value


def fire_times(expression: str, after: float, until: float) -> list[float]:
    """Cron fire times in (after, until], at most :data:`MAX_TICKS_PER_CHECK`."""
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
    """The next ``count`` fire times strictly after ``after`` (whole seconds)."""
    cron = croniter(expression, datetime.fromtimestamp(math.floor(after), UTC))
    return [cron.get_next(float) for _ in range(count)]


def iso_utc(stamp: float) -> str:
    """A Unix time as ISO 8601 UTC with a ``Z``: ``2023-11-14T22:01:00Z``."""
    return datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z")


def tick_id(schedule_id: str, fire_at: float) -> str:
    """The id of a schedule's tick at ``fire_at``: the same in every process."""
    return f"tick:{schedule_id}:{int(fire_at)}"


def tick_event(
    service: str,
    fire_at: float,
    *,
    schedule_id: str,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``fxray.schedule.tick`` event of a schedule's tick; ``params`` reach the script as
    ``context.params`` (as a manual run's do)."""
    return ev.new_event(
        ev.SCHEDULE_TICK,
        {
            "service": service,
            "scheduled_for": iso_utc(fire_at),
            "schedule_id": schedule_id,
            "params": dict(params or {}),
        },
        source=SOURCE,
        id=tick_id(schedule_id, fire_at),
        **{ev.TARGET: service},
    )
