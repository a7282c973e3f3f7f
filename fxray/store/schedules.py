"""Cron schedules in the database, and the exactly-once claim of their ticks.

Any number of schedulers (one per router or API process) may call :meth:`claim_due_ticks`: a
tick belongs to the caller whose conditional UPDATE moved ``next_fire_at`` past it.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, true, update

from fxray.events.schedules import next_fire_times
from fxray.store.common import Conflict, NotFound, StoreMixin, record
from fxray.store.models import ScheduleRow, ServiceRow

ORIGINS = ("manifest", "api")
_CHANGEABLE = {"cron", "params", "active", "skip_next"}


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    id: str
    service: str
    cron: str
    params: dict[str, Any]
    origin: str  # manifest | api
    active: bool
    next_fire_at: float
    skip_next: bool
    last_fired_at: float | None
    created_at: float
    updated_at: float


def next_fire_at(cron: str, after: float) -> float:
    """The first tick of ``cron`` after ``after``; ValueError for a bad expression."""
    try:
        return next_fire_times(cron, after, 1)[0]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"bad cron expression {cron!r}: {exc}") from exc


def latest_tick(cron: str, since: float, now: float) -> float:
    """The latest tick of ``cron`` in [since, now], ``since`` being a tick itself."""
    from croniter import croniter

    before = croniter(cron, datetime.fromtimestamp(math.floor(now) + 1, UTC)).get_prev(float)
    return max(since, before)


def _manifest_schedule_id(service: str) -> str:
    return "m" + hashlib.sha256(service.encode()).hexdigest()[:31]


class ScheduleStore(StoreMixin):
    """Schedules of services: from manifests (one per service) and from the API."""

    def upsert_schedule(
        self,
        service: str,
        cron: str,
        *,
        params: dict[str, Any] | None = None,
        origin: str = "api",
        schedule_id: str | None = None,
        now: float | None = None,
    ) -> ScheduleRecord:
        """Create a schedule, or replace the cron (and params, if given) of ``schedule_id``."""
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(ORIGINS)}, not {origin!r}")
        next_at = next_fire_at(cron, time.time() if now is None else now)
        stamp = time.time()
        with self.session() as s:
            if s.get(ServiceRow, service) is None:
                raise NotFound(f"no service {service!r}")
            row = s.get(ScheduleRow, schedule_id) if schedule_id else None
            if row is None:
                row = ScheduleRow(
                    id=schedule_id or uuid.uuid4().hex[:12],
                    service=service,
                    cron=cron,
                    params=dict(params or {}),
                    origin=origin,
                    active=True,
                    next_fire_at=next_at,
                    skip_next=False,
                    last_fired_at=None,
                    created_at=stamp,
                    updated_at=stamp,
                )
                s.add(row)
            else:
                if row.service != service:
                    raise Conflict(f"schedule {schedule_id!r} belongs to {row.service!r}")
                if row.cron != cron:
                    row.cron, row.next_fire_at, row.skip_next = cron, next_at, False
                if params is not None:
                    row.params = dict(params)
                row.origin = origin
                row.updated_at = stamp
            s.flush()
            return record(ScheduleRecord, row)

    def get_schedule(self, schedule_id: str) -> ScheduleRecord:
        with self.session() as s:
            row = s.get(ScheduleRow, schedule_id)
            if row is None:
                raise NotFound(f"no schedule {schedule_id!r}")
            return record(ScheduleRecord, row)

    def list_schedules(self, service: str | None = None) -> list[ScheduleRecord]:
        query = select(ScheduleRow).order_by(
            ScheduleRow.service, ScheduleRow.created_at, ScheduleRow.id
        )
        if service is not None:
            query = query.where(ScheduleRow.service == service)
        with self.session() as s:
            return [record(ScheduleRecord, r) for r in s.scalars(query)]

    def update_schedule(
        self, schedule_id: str, *, now: float | None = None, **changes: Any
    ) -> ScheduleRecord:
        """Change ``cron``, ``params``, ``active`` or ``skip_next``.

        A new cron, or re-activation, moves ``next_fire_at`` to the first tick after ``now``.
        """
        unknown = set(changes) - _CHANGEABLE
        if unknown:
            raise ValueError(f"cannot change {sorted(unknown)} of a schedule")
        now = time.time() if now is None else now
        with self.session() as s:
            row = s.get(ScheduleRow, schedule_id)
            if row is None:
                raise NotFound(f"no schedule {schedule_id!r}")
            cron = changes.get("cron", row.cron)
            restart = cron != row.cron or (changes.get("active") and not row.active)
            if restart:
                row.next_fire_at = next_fire_at(cron, now)
                row.skip_next = False
            for key, value in changes.items():
                setattr(row, key, dict(value) if key == "params" else value)
            row.updated_at = time.time()
            s.flush()
            return record(ScheduleRecord, row)

    def remove_schedule(self, schedule_id: str) -> None:
        with self.session() as s:
            if s.execute(delete(ScheduleRow).where(ScheduleRow.id == schedule_id)).rowcount == 0:
                raise NotFound(f"no schedule {schedule_id!r}")

    def skip_next_tick(self, schedule_id: str) -> ScheduleRecord:
        """The next due tick is consumed without firing."""
        return self.update_schedule(schedule_id, skip_next=True)

    def claim_due_ticks(
        self, now: float, broken: list[tuple[ScheduleRecord, str]] | None = None
    ) -> list[tuple[ScheduleRecord, float]]:
        """Claim the due ticks of active schedules; each tick is returned to one caller only.

        A schedule's ``next_fire_at`` moves past ``now`` by a conditional UPDATE; the caller
        whose UPDATE hit the row owns the tick. Ticks missed while down are not back-filled:
        only the latest due one fires. A tick marked ``skip_next`` is consumed, not returned.
        A schedule whose cron fires no more (a year field now past) fires its last tick and
        turns inactive. A schedule whose stored cron cannot be read is left as it is, and
        appended to ``broken`` with the reason: the others are claimed all the same.
        """
        with self.session() as s:
            query = (
                select(ScheduleRow)
                .where(ScheduleRow.active.is_(True), ScheduleRow.next_fire_at <= now)
                .order_by(ScheduleRow.id)  # one lock order for every caller
            )
            due = [record(ScheduleRecord, r) for r in s.scalars(query)]
        if not due:
            return []
        table = ScheduleRow.__table__
        owned: list[tuple[ScheduleRecord, float]] = []
        # A new transaction that starts by writing: SQLite takes the write lock at once (with
        # its busy timeout); PostgreSQL re-checks the WHERE of a row another claimer updated.
        with self.session() as s:
            for schedule in due:
                try:
                    fire_at = latest_tick(schedule.cron, schedule.next_fire_at, now)
                except Exception as exc:  # croniter's errors, on whatever the row holds
                    if broken is not None:
                        broken.append((schedule, f"{type(exc).__name__}: {exc}"))
                    continue
                values: dict[str, Any] = {"skip_next": False}
                try:
                    values["next_fire_at"] = new_next = next_fire_at(schedule.cron, now)
                except ValueError:  # the cron's last tick: fire it, then rest
                    values["active"], new_next = False, schedule.next_fire_at
                if not schedule.skip_next:
                    values["last_fired_at"] = fire_at
                result = s.execute(
                    update(table)
                    .where(
                        table.c.id == schedule.id,
                        table.c.next_fire_at == schedule.next_fire_at,
                        table.c.skip_next == schedule.skip_next,
                        table.c.active == true(),
                    )
                    .values(values)
                )
                if result.rowcount == 1 and not schedule.skip_next:
                    claimed = replace(
                        schedule,
                        next_fire_at=new_next,
                        last_fired_at=fire_at,
                        skip_next=False,
                        active=values.get("active", True),
                    )
                    owned.append((claimed, fire_at))
        return owned

    def sync_manifest_schedule(
        self, service: str, cron: str | None, *, now: float | None = None
    ) -> ScheduleRecord | None:
        """Keep the service's one ``origin="manifest"`` schedule in line with its manifest."""
        cron = cron or None
        with self.session() as s:
            if s.get(ServiceRow, service) is None:
                raise NotFound(f"no service {service!r}")
            rows = list(
                s.scalars(
                    select(ScheduleRow)
                    .where(ScheduleRow.service == service, ScheduleRow.origin == "manifest")
                    .order_by(ScheduleRow.created_at, ScheduleRow.id)
                )
            )
            for extra in rows[1:] if cron else rows:
                s.delete(extra)
            current = record(ScheduleRecord, rows[0]) if rows and cron else None
        if cron is None:
            return None
        if current is not None and current.cron == cron:
            return current
        return self.upsert_schedule(
            service,
            cron,
            origin="manifest",
            schedule_id=current.id if current else _manifest_schedule_id(service),
            now=now,
        )
