"""Cron ticks: the router side of schedules (see :mod:`fxray.events.schedules`)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from fxray.bus import EventBus
from fxray.events import cloudevent as ev
from fxray.events.schedules import tick_event
from fxray.settings import Settings
from fxray.store import RoutingSnapshot, StateStore

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
    ticks claimed but not yet taken by the bus are kept and sent again on the next turn. Ends
    when ``running()`` turns False.
    """
    unsent: list[dict[str, Any]] = []
    while running():
        try:
            claimed = await asyncio.to_thread(store.claim_due_ticks, time.time())
            services = snapshot().services
            for schedule, fire_at in claimed:
                service = services.get(schedule.service)
                if service is not None and not service.active:
                    counters["schedule_ticks_skipped"] += 1
                    continue
                unsent.append(
                    tick_event(
                        schedule.service, fire_at, schedule_id=schedule.id, params=schedule.params
                    )
                )
            if unsent:
                mode = settings.event_output_mode
                records = [ev.to_outgoing(tick, mode) for tick in unsent]
                await bus.produce_async(settings.events_topic, records)
                counters["schedule_ticks"] += len(unsent)
                unsent = []
        except Exception as exc:  # the database or the bus is away: try again shortly
            note_error(f"schedules: {type(exc).__name__}: {exc}")
        await asyncio.sleep(CHECK_EVERY_S)
