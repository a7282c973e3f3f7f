"""Cron ticks: the router side of schedules (see :mod:`fxray.events.schedules`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

from fxray.bus import EventBus, OutgoingRecord
from fxray.events import cloudevent as ev
from fxray.events.schedules import tick_event
from fxray.settings import Settings
from fxray.store import RoutingSnapshot, ScheduleRecord, StateStore, describe_error

CHECK_EVERY_S = 0.5


async def publish_ticks(
    settings: Settings,
    bus: EventBus,
    store: StateStore,
    snapshot: Callable[[], RoutingSnapshot],
    counters: Counter[str],
    note_error: Callable[[str], None],
    running: Callable[[], bool],
) -> None:
    """Every 0.5 s, claim the due schedule ticks in the database and publish them.

    The claim is a conditional UPDATE, so with several platform processes on one database
    each tick goes to one of them. Ticks of inactive services are consumed without firing;
    ticks claimed but not yet taken by the bus are kept and sent again on the next turn (the
    newest one per schedule: like ticks missed while down, older ones are not back-filled).
    One schedule's trouble is its own: a cron that cannot be read, or params that make no
    event within the event limits, are counted (``schedule_errors``: each failed tick, each
    unreadable cron once) and reported once per schedule and cron, and every other schedule
    goes on ticking. Ends when ``running()`` turns False.
    """
    limits = ev.EventLimits.from_settings(settings)
    unsent: dict[str, OutgoingRecord] = {}  # schedule id -> its newest tick, not yet sent
    reported: set[tuple[str, str]] = set()  # (schedule id, cron) whose trouble was reported

    def trouble(schedule: ScheduleRecord, what: str, *, per_tick: bool) -> None:
        """Count it (a tick that failed each time; a cron that cannot be read, which shows
        on every turn, once) and report it once per schedule and cron."""
        first = (schedule.id, schedule.cron) not in reported
        if per_tick or first:
            counters["schedule_errors"] += 1
        if first and len(reported) < 10_000:
            reported.add((schedule.id, schedule.cron))
            note_error(f"schedule {schedule.id} of {schedule.service}: {what}")

    while running():
        try:
            broken: list[tuple[ScheduleRecord, str]] = []
            claimed = await asyncio.to_thread(store.claim_due_ticks, time.time(), broken)
            for schedule, why in broken:
                why = f"its cron {schedule.cron[:64]!r} cannot be read ({why})"
                trouble(schedule, why, per_tick=False)
            services = snapshot().services
            for schedule, fire_at in claimed:
                service = services.get(schedule.service)
                if service is not None and not service.active:
                    counters["schedule_ticks_skipped"] += 1
                    continue
                try:
                    record = _tick_record(settings, limits, schedule, fire_at)
                except Exception as exc:  # params that make no event (within the limits)
                    trouble(
                        schedule, f"its tick is not a valid event, not sent: {exc}", per_tick=True
                    )
                    continue
                if unsent.pop(schedule.id, None) is not None:
                    counters["schedule_ticks_superseded"] += 1
                unsent[schedule.id] = record
            if unsent:
                await bus.produce_async(settings.events_topic, list(unsent.values()))
                counters["schedule_ticks"] += len(unsent)
                unsent = {}
        except Exception as exc:  # the database or the bus is away: try again shortly
            note_error(f"schedules: {describe_error(exc)}")
        await asyncio.sleep(CHECK_EVERY_S)


def _tick_record(
    settings: Settings, limits: ev.EventLimits, schedule: ScheduleRecord, fire_at: float
) -> OutgoingRecord:
    if not isinstance(schedule.params, dict):
        raise ev.InvalidEvent(f"params must be a JSON object, not {type(schedule.params).__name__}")
    tick = tick_event(schedule.service, fire_at, schedule_id=schedule.id, params=schedule.params)
    return ev.to_outgoing(tick, settings.event_output_mode, limits, "the tick")
