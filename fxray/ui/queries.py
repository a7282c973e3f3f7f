"""Read queries of the UI's pages, each a fixed number of statements whatever the page shows
(no query per row): runs by keyset (the store's :class:`~fxray.store.queries.RunFilter` plus a
``(created_at, id)`` cursor), service summaries, the overview's rates and backlog, a run's
emitted events.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from fxray.store import ServiceRecord, StateStore, TriggerRecord
from fxray.store import queries as q
from fxray.store.models import EventRow, RunRow, ServiceRow, VersionRow
from fxray.store.records import RunRecord

FAILED = ("failed", "timed_out")
LIST_COLUMNS = tuple(
    name for name in RunRecord.__slots__ if name not in ("steps", "logs", "result")
)
"""What a list of runs reads of each: all but the bulky steps, logs and result."""
_CURSOR = re.compile(r"^(\d{1,12}(?:\.\d{1,9})?)_([A-Za-z0-9._:-]{1,64})$")


# -- runs, by keyset --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunCursor:
    """Where a page of runs (newest first) ends: the last run's creation time and id."""

    created_at: float
    run_id: str

    def token(self) -> str:
        return f"{self.created_at!r}_{self.run_id}"

    @classmethod
    def parse(cls, token: str) -> RunCursor:
        """The cursor in ``token``; ValueError if it is not one."""
        found = _CURSOR.match(token)
        if found is None:
            raise ValueError(f"{token!r} is not a page cursor")
        return cls(float(found.group(1)), found.group(2))


@dataclass(frozen=True, slots=True)
class RunSelection:
    """What the runs list filters on, beyond the store's :class:`RunFilter`."""

    filters: q.RunFilter
    statuses: Sequence[str] = ()
    event_type: str | None = None


def runs_page(
    store: StateStore, selection: RunSelection, *, before: RunCursor | None = None, limit: int = 50
) -> tuple[list[q.RunView], RunCursor | None]:
    """Up to ``limit`` runs, newest first, older than ``before``; and the cursor of the next
    page (None on the last). Two statements: the page, and its services' names. The runs
    come without steps, logs and result (see :data:`LIST_COLUMNS`)."""
    filters = selection.filters
    columns = [getattr(RunRow, name) for name in LIST_COLUMNS]
    query = filters.apply(
        filters.joins(select(*columns, VersionRow.label).select_from(RunRow), labels=True)
    )
    if selection.statuses:
        query = query.where(RunRow.status.in_(list(selection.statuses)))
    if selection.event_type:
        query = query.where(RunRow.event_type == selection.event_type)
    if before is not None:
        query = query.where(
            or_(
                RunRow.created_at < before.created_at,
                and_(RunRow.created_at == before.created_at, RunRow.id < before.run_id),
            )
        )
    query = query.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit + 1)
    with store.session() as s:
        rows = [(_list_record(found), found[-1]) for found in s.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    keys = q.service_keys(store, {run.service for run, _ in rows})
    views = [_view(run, label, keys.get(run.service)) for run, label in rows]
    last = rows[-1][0] if rows else None
    cursor = RunCursor(last.created_at, last.id) if more and last is not None else None
    return views, cursor


def _list_record(found: Any) -> RunRecord:
    """A run as a list shows it: without its steps, logs and result (not read)."""
    fields = dict(zip(LIST_COLUMNS, found, strict=False))
    return RunRecord(**fields, steps=[], logs=[], result=None)


def _view(run: RunRecord, label: str | None, key: q.ServiceKey | None) -> q.RunView:
    if key is None:
        return q.RunView(run, label, None, None)
    return q.RunView(run, label, key.project, key.name)


def emitted_events(store: StateStore, run: RunRecord) -> list[dict[str, Any]]:
    """The events ``run`` emitted that the platform recorded, oldest first."""
    query = (
        select(EventRow.body)
        .where(EventRow.correlation_id == run.correlation_id, EventRow.run_id == run.id)
        .order_by(EventRow.received_at, EventRow.id)
    )
    with store.session() as s:
        return [dict(body) for body in s.scalars(query)]


# -- services ---------------------------------------------------------------------------------


@dataclass(slots=True)
class ServiceSummary:
    """A service as the services list shows it."""

    service: ServiceRecord
    versions: int = 0
    latest_version: str | None = None
    latest_label: str | None = None
    triggers: list[TriggerRecord] = field(default_factory=list)
    last_run_at: float | None = None
    last_run_status: str | None = None


def service_summaries(store: StateStore, services: Sequence[ServiceRecord]) -> list[ServiceSummary]:
    """Versions, triggers and last run of ``services``: three statements for any number."""
    summaries = {s.id: ServiceSummary(s) for s in services}
    ids = list(summaries)
    if not ids:
        return []
    with store.session() as s:
        versions = s.execute(
            select(VersionRow.service, VersionRow.id, VersionRow.label)
            .where(VersionRow.service.in_(ids))
            .order_by(VersionRow.created_at, VersionRow.id)
        )
        for service_id, version_id, label in versions:
            one = summaries[service_id]
            one.versions += 1
            one.latest_version, one.latest_label = version_id, label
        # each service's newest run from the (service, created_at) index: a few entries read
        # per service, where grouping all its runs would read them all
        newest = (
            select(RunRow.id)
            .where(RunRow.service == ServiceRow.id)
            .order_by(RunRow.created_at.desc(), RunRow.id.desc())
            .limit(1)
            .correlate(ServiceRow)
            .scalar_subquery()
        )
        last_runs = s.execute(
            select(ServiceRow.id, RunRow.created_at, RunRow.status)
            .join(RunRow, RunRow.id == newest)
            .where(ServiceRow.id.in_(ids))
        )
        for service_id, created_at, status in last_runs:
            summaries[service_id].last_run_at = created_at
            summaries[service_id].last_run_status = status
    for trigger in store.list_triggers():
        if trigger.service in summaries:
            summaries[trigger.service].triggers.append(trigger)
    return [summaries[i] for i in ids]


# -- overview ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Overview:
    """The last ``minutes`` of a project (or of all): runs per minute and failures."""

    minutes: int
    since: float
    per_minute: list[tuple[float, int, int]] = field(default_factory=list)  # start, runs, failed
    runs: int = 0
    failed: int = 0
    finished: int = 0
    backlog: list[tuple[str, int, int]] = field(default_factory=list)  # service id, queued, running

    @property
    def failure_rate(self) -> float | None:
        """Failed / finished runs of the window; None before any finished."""
        return self.failed / self.finished if self.finished else None

    @property
    def peak(self) -> int:
        return max((runs for _, runs, _ in self.per_minute), default=0)


def _minute(store: StateStore) -> ColumnElement[Any]:
    """The whole minute of a run's creation, as minutes since the epoch."""
    if store.engine.dialect.name == "sqlite":  # CAST truncates, which is floor for times
        return cast(RunRow.created_at / 60, Integer)
    return func.floor(RunRow.created_at / 60)


def overview(store: StateStore, project: str | None, now: float, minutes: int = 60) -> Overview:
    """Runs per minute, failures and backlog per service, of ``project`` (None: all)."""
    first = math.floor(now / 60) - minutes + 1
    result = Overview(minutes=minutes, since=first * 60.0)
    scope = q.RunFilter(project=project, since=result.since)
    minute = _minute(store).label("minute")
    failed = func.sum(case((RunRow.status.in_(FAILED), 1), else_=0))
    final = func.sum(case((RunRow.status.in_(q.FINAL_STATUSES), 1), else_=0))
    rates = scope.apply(
        scope.joins(select(minute, func.count(), failed, final).select_from(RunRow), labels=False)
    ).group_by(minute)
    waiting = q.RunFilter(project=project)
    backlog = waiting.apply(
        waiting.joins(
            select(RunRow.service, RunRow.status, func.count()).select_from(RunRow), labels=False
        )
    )
    backlog = backlog.where(RunRow.status.in_(q.ACTIVE_STATUSES))
    backlog = backlog.group_by(RunRow.service, RunRow.status)
    counts: dict[int, tuple[int, int]] = {}
    per_service: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    with store.session() as s:
        for bucket, runs, failures, finished in s.execute(rates):
            counts[int(bucket)] = (int(runs), int(failures or 0))
            result.runs += int(runs)
            result.failed += int(failures or 0)
            result.finished += int(finished or 0)
        for service_id, status, count in s.execute(backlog):
            per_service[service_id][0 if status == "pending" else 1] += int(count)
    result.per_minute = [(60.0 * m, *counts.get(m, (0, 0))) for m in range(first, first + minutes)]
    result.backlog = sorted(
        ((sid, queued, running) for sid, (queued, running) in per_service.items()),
        key=lambda item: (-item[1], -item[2], item[0]),
    )
    return result


def version_services(store: StateStore, version_ids: Iterable[str]) -> dict[str, str]:
    """``{version id: service id}`` of those that exist."""
    ids = sorted(set(version_ids))
    if not ids:
        return {}
    with store.session() as s:
        query = select(VersionRow.id, VersionRow.service).where(VersionRow.id.in_(ids))
        return {version_id: service_id for version_id, service_id in s.execute(query)}


@dataclass(frozen=True, slots=True)
class VersionChoice:
    """A version as a form offers it: id, label, and when it was deployed."""

    id: str
    label: str | None
    created_at: float


def versions_by_service(
    store: StateStore, service_ids: Iterable[str]
) -> dict[str, list[VersionChoice]]:
    """``{service id: its versions, oldest first}`` in one statement."""
    ids = sorted(set(service_ids))
    found: dict[str, list[VersionChoice]] = defaultdict(list)
    if not ids:
        return found
    with store.session() as s:
        query = (
            select(VersionRow.service, VersionRow.id, VersionRow.label, VersionRow.created_at)
            .where(VersionRow.service.in_(ids))
            .order_by(VersionRow.created_at, VersionRow.id)
        )
        for service_id, version_id, label, created_at in s.execute(query):
            found[service_id].append(VersionChoice(version_id, label, created_at))
    return found


@dataclass(frozen=True, slots=True)
class EventOutputs:
    """One event and what each version's run of it gave: ``{version id: (status, result,
    run id, shadow)}``."""

    event_id: str
    created_at: float
    outputs: dict[str, tuple[str, Any, str, bool]]


def outputs_side_by_side(
    store: StateStore, service_id: str, since: float, until: float, limit: int = 20
) -> list[EventOutputs]:
    """The newest ``limit`` events that runs of more than one version of the service handled
    in ``[since, until)`` (a shadow version next to the routed one, or a replay on another
    version), newest first, in two statements."""
    window = (
        RunRow.service == service_id,
        RunRow.created_at >= since,
        RunRow.created_at < until,
    )
    events = (
        select(RunRow.event_id, func.max(RunRow.created_at).label("last"))
        .where(*window)
        .group_by(RunRow.event_id)
        .having(func.count(func.distinct(RunRow.version_id)) > 1)
        .order_by(func.max(RunRow.created_at).desc(), RunRow.event_id)
        .limit(limit)
    )
    with store.session() as s:
        chosen = {event_id: last for event_id, last in s.execute(events)}
        if not chosen:
            return []
        runs = (
            select(
                RunRow.event_id,
                RunRow.version_id,
                RunRow.status,
                RunRow.result,
                RunRow.id,
                RunRow.shadow,
            )
            .where(*window, RunRow.event_id.in_(sorted(chosen)))
            .order_by(RunRow.created_at, RunRow.id)
        )
        outputs: dict[str, dict[str, tuple[str, Any, str, bool]]] = defaultdict(dict)
        for event_id, version_id, status, result, run_id, shadow in s.execute(runs):
            outputs[event_id][version_id] = (status, result, run_id, bool(shadow))
    return [
        EventOutputs(event_id, chosen[event_id], outputs[event_id])
        for event_id in sorted(chosen, key=lambda e: (-chosen[e], e))
    ]


@dataclass(frozen=True, slots=True)
class FlowEdge:
    """Runs of ``consumer`` caused by events of ``event_type`` that ``producer`` emitted
    (None: sent from outside the platform, or by a service the reader cannot see)."""

    producer: str | None
    event_type: str
    consumer: str
    runs: int
    errors: int
    backlog: int


ROUTED_SLACK_S = 600.0  # how far a routed event's recording may lie from its runs' creation


def flow_edges(
    store: StateStore, service_ids: Iterable[str], since: float, until: float
) -> list[FlowEdge]:
    """The flow between services in ``[since, until)``, from the runs of ``service_ids`` (shadow
    runs left out): per (producing service, event type, consuming service), runs, failed or
    timed-out runs, and runs still queued or running.

    One pass over the window's runs, each joined to its event only if a run emitted it and it
    was recorded around the window (a router records an event when it routes it, in the batch
    that writes the runs it starts, so within :data:`ROUTED_SLACK_S` of their creation; the
    partial index ``ix_events_emitted_received`` finds those), grouped by the emitting run;
    then the emitting runs' services by primary key. The rest came from outside the platform
    (or from a service out of sight)."""
    ids = sorted(set(service_ids))
    if not ids:
        return []
    failed = func.sum(case((RunRow.status.in_(FAILED), 1), else_=0))
    active = func.sum(case((RunRow.status.in_(q.ACTIVE_STATUSES), 1), else_=0))
    emitted = and_(
        EventRow.id == RunRow.event_id,
        EventRow.run_id.is_not(None),
        EventRow.received_at >= since - ROUTED_SLACK_S,
        EventRow.received_at < until + ROUTED_SLACK_S,
    )
    query = (
        select(EventRow.run_id, RunRow.event_type, RunRow.service, func.count(), failed, active)
        .select_from(RunRow)
        .outerjoin(EventRow, emitted)
        .where(
            RunRow.service.in_(ids),
            RunRow.created_at >= since,
            RunRow.created_at < until,
            RunRow.shadow.is_(False),
        )
        .group_by(EventRow.run_id, RunRow.event_type, RunRow.service)
    )
    with store.session() as s:
        rows = list(s.execute(query))
        # the emitting runs' services, by primary key
        producers: dict[str, str] = {}
        run_ids = sorted({row[0] for row in rows if row[0] is not None})
        for start in range(0, len(run_ids), 500):
            chunk = run_ids[start : start + 500]
            found = select(RunRow.id, RunRow.service).where(RunRow.id.in_(chunk))
            producers.update({run_id: service for run_id, service in s.execute(found)})
    visible = set(ids)
    merged: dict[tuple[str | None, str, str], list[int]] = {}
    for run_id, event_type, consumer, runs, errors, backlog in rows:
        source = producers.get(run_id) if run_id is not None else None
        key = (source if source in visible else None, event_type, consumer)
        total = merged.setdefault(key, [0, 0, 0])
        total[0] += int(runs)
        total[1] += int(errors or 0)
        total[2] += int(backlog or 0)
    return [
        FlowEdge(source, event_type, consumer, *numbers)
        for (source, event_type, consumer), numbers in sorted(
            merged.items(), key=lambda item: (item[0][0] or "", item[0][1], item[0][2])
        )
    ]
