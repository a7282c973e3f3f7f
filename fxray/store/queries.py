"""Read-side queries for the Management API: run listings, run detail, traces and A/B reports.

Plain functions over a :class:`~fxray.store.StateStore` (its engine and sessions); they only
read. A run's ``service`` is its service's id; projects and the names users know are
resolved through the ``services`` table.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, or_, select

from fxray.store.common import NotFound
from fxray.store.models import EventRow, RunRow, ServiceRow, VersionRow
from fxray.store.records import RunRecord

if TYPE_CHECKING:
    from fxray.store.repository import StateStore

FINAL_STATUSES = ("succeeded", "failed", "timed_out", "cancelled")
FAILED_STATUSES = ("failed", "timed_out")
ACTIVE_STATUSES = ("pending", "running")


def _run_record(row: RunRow) -> RunRecord:
    return RunRecord(**{name: getattr(row, name) for name in RunRecord.__slots__})


# -- services and runs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """Where a service id points: its project and its name there."""

    project: str
    name: str


def service_keys(store: StateStore, service_ids: Iterable[str]) -> dict[str, ServiceKey]:
    """``{service id: ServiceKey}`` for those of ``service_ids`` that exist."""
    ids = sorted(set(service_ids))
    found: dict[str, ServiceKey] = {}
    with store.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = select(ServiceRow.id, ServiceRow.project, ServiceRow.name).where(
                ServiceRow.id.in_(chunk)
            )
            found.update(
                {sid: ServiceKey(project, name) for sid, project, name in s.execute(query)}
            )
    return found


def version_labels(store: StateStore, version_ids: Iterable[str]) -> dict[str, str | None]:
    """``{version id: label}`` for those of ``version_ids`` that exist."""
    ids = sorted(set(version_ids))
    found: dict[str, str | None] = {}
    with store.session() as s:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            query = select(VersionRow.id, VersionRow.label).where(VersionRow.id.in_(chunk))
            found.update({vid: label for vid, label in s.execute(query)})
    return found


@dataclass(frozen=True, slots=True)
class RunView:
    """A run with what the API shows next to it: its version's label, and its service's
    project and name (None if the service is gone)."""

    run: RunRecord
    version_label: str | None
    project: str | None
    service_name: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Filters of :func:`list_runs`; ``None`` means "any"."""

    project: str | None = None
    service: str | None = None  # a service id
    service_name: str | None = None  # a service name (in ``project``, or in any project)
    version: str | None = None  # a version id or label
    status: str | None = None
    since: float | None = None  # created_at >= since
    until: float | None = None  # created_at < until
    correlation_id: str | None = None
    event_id: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.project is not None:
            query = query.where(ServiceRow.project == self.project)
        if self.service is not None:
            query = query.where(RunRow.service == self.service)
        if self.service_name is not None:
            query = query.where(ServiceRow.name == self.service_name)
        if self.version is not None:
            query = query.where(
                or_(RunRow.version_id == self.version, VersionRow.label == self.version)
            )
        if self.status is not None:
            query = query.where(RunRow.status == self.status)
        if self.since is not None:
            query = query.where(RunRow.created_at >= self.since)
        if self.until is not None:
            query = query.where(RunRow.created_at < self.until)
        if self.correlation_id is not None:
            query = query.where(RunRow.correlation_id == self.correlation_id)
        if self.event_id is not None:
            query = query.where(RunRow.event_id == self.event_id)
        return query

    def joins(self, query: Select[Any], *, labels: bool) -> Select[Any]:
        """Join services only to filter by project or name; versions for labels or a version
        filter."""
        if self.project is not None or self.service_name is not None:
            query = query.join(ServiceRow, ServiceRow.id == RunRow.service)
        if labels or self.version is not None:
            query = query.outerjoin(VersionRow, VersionRow.id == RunRow.version_id)
        return query


def list_runs(
    store: StateStore, filters: RunFilter, *, limit: int = 50, offset: int = 0
) -> tuple[list[RunView], int]:
    """One page of runs, newest first, and how many runs match in all."""
    counted = filters.apply(filters.joins(select(func.count()).select_from(RunRow), labels=False))
    page = filters.apply(
        filters.joins(select(RunRow, VersionRow.label).select_from(RunRow), labels=True)
    )
    page = page.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit).offset(offset)
    with store.session() as s:
        total = int(s.scalar(counted) or 0)
        rows = [(_run_record(run), label) for run, label in s.execute(page)] if total else []
    keys = service_keys(store, {run.service for run, _ in rows})
    items = [_view(run, label, keys.get(run.service)) for run, label in rows]
    return items, total


def _view(run: RunRecord, label: str | None, key: ServiceKey | None) -> RunView:
    if key is None:
        return RunView(run, label, None, None)
    return RunView(run, label, key.project, key.name)


def get_run(store: StateStore, run_id: str) -> RunView:
    """A run with its version's label and its service's project; :class:`NotFound` if none."""
    query = (
        select(RunRow, VersionRow.label, ServiceRow.project, ServiceRow.name)
        .select_from(RunRow)
        .outerjoin(VersionRow, VersionRow.id == RunRow.version_id)
        .outerjoin(ServiceRow, ServiceRow.id == RunRow.service)
        .where(RunRow.id == run_id)
    )
    with store.session() as s:
        found = s.execute(query).first()
        if found is None:
            raise NotFound(f"no run {run_id!r}")
        run, label, project, name = found
        return RunView(_run_record(run), label, project, name)


def get_event(store: StateStore, event_id: str) -> dict[str, Any] | None:
    """A routed event's body, or None if it was not recorded."""
    with store.session() as s:
        row = s.get(EventRow, event_id)
        return dict(row.body) if row is not None else None


def run_progress(store: StateStore, run_id: str) -> tuple[str, list[list[Any]]]:
    """A run's status and log lines (what a log stream polls); :class:`NotFound` if none."""
    with store.session() as s:
        found = s.execute(select(RunRow.status, RunRow.logs).where(RunRow.id == run_id)).first()
    if found is None:
        raise NotFound(f"no run {run_id!r}")
    status, logs = found
    return status, list(logs or [])


# -- traces -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Trace:
    """The events and runs of one flow (one correlation id)."""

    correlation_id: str
    # {"body", "received_at", "at" (its moment in the flow), "parent_id", "run_id"}
    events: list[dict[str, Any]] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)
    services: dict[str, ServiceKey] = field(default_factory=dict)  # by service id
    labels: dict[str, str | None] = field(default_factory=dict)  # version id -> label


def correlation_of(store: StateStore, key: str) -> str | None:
    """The correlation id ``key`` stands for: an event's (by id), or ``key`` itself if it is
    one; None if no event or run knows it."""
    with store.session() as s:
        found = s.scalar(select(EventRow.correlation_id).where(EventRow.id == key))
        if found is not None:
            return found
        found = s.scalar(select(RunRow.correlation_id).where(RunRow.event_id == key).limit(1))
        if found is not None:
            return found
        for column in (EventRow.correlation_id, RunRow.correlation_id):
            if s.scalar(select(column).where(column == key).limit(1)) is not None:
                return key
    return None


def load_trace(store: StateStore, key: str) -> Trace | None:
    """Every recorded event and run of the flow that ``key`` (an event id or a correlation id)
    belongs to, in time order; None if nothing is known of it."""
    correlation = correlation_of(store, key)
    if correlation is None:
        return None
    trace = Trace(correlation)
    with store.session() as s:
        events = s.scalars(select(EventRow).where(EventRow.correlation_id == correlation))
        trace.events = [
            {
                "body": dict(e.body),
                "received_at": e.received_at,
                "parent_id": e.parent_id,
                "run_id": e.run_id,
            }
            for e in events
        ]
        runs = s.scalars(
            select(RunRow)
            .where(RunRow.correlation_id == correlation)
            .order_by(RunRow.created_at, RunRow.id)
        )
        trace.runs = [_run_record(r) for r in runs]
    # An event's row is written after the rows of the runs it triggers: its moment in the flow
    # is the earlier of its arrival and those runs' creation.
    started: dict[str, float] = {}
    for run in trace.runs:
        started[run.event_id] = min(started.get(run.event_id, run.created_at), run.created_at)
    for item in trace.events:
        item["at"] = min(item["received_at"], started.get(item["body"]["id"], math.inf))
    trace.events.sort(key=lambda e: (e["at"], e["body"].get("time") or ""))
    trace.services = service_keys(store, {r.service for r in trace.runs})
    trace.labels = version_labels(store, {r.version_id for r in trace.runs})
    return trace


# -- A/B report -------------------------------------------------------------------------------


@dataclass(slots=True)
class VersionStats:
    """What one version did over a time window."""

    version_id: str
    runs: int = 0
    succeeded: int = 0
    failed: int = 0  # failed or timed out
    timed_out: int = 0
    cancelled: int = 0
    active: int = 0  # pending or running
    shadow_runs: int = 0
    durations_ms: list[float] = field(default_factory=list)

    @property
    def error_rate(self) -> float | None:
        """Failed / (succeeded + failed); None before any run finished."""
        done = self.succeeded + self.failed
        return self.failed / done if done else None

    def percentile(self, q: float) -> float | None:
        return percentile(self.durations_ms, q)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..100) percentile with linear interpolation between ranks; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return float(ordered[low])
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def version_report(
    store: StateStore, service: str, since: float, until: float
) -> list[VersionStats]:
    """Per version of the service with id ``service``, the runs created in ``[since, until)``;
    versions in deploy order. Durations are those of finished runs that started (not cancelled
    while queued)."""
    window = (
        RunRow.service == service,
        RunRow.created_at >= since,
        RunRow.created_at < until,
    )
    counts = (
        select(RunRow.version_id, RunRow.status, RunRow.shadow, func.count())
        .where(*window)
        .group_by(RunRow.version_id, RunRow.status, RunRow.shadow)
    )
    durations = select(RunRow.version_id, RunRow.started_at, RunRow.finished_at).where(
        *window,
        RunRow.status.in_(("succeeded", *FAILED_STATUSES)),
        RunRow.started_at.is_not(None),
        RunRow.finished_at.is_not(None),
    )
    order = select(VersionRow.id).where(VersionRow.service == service)
    order = order.order_by(VersionRow.created_at, VersionRow.id)
    stats: dict[str, VersionStats] = {}
    with store.session() as s:
        for version_id, status, shadow, count in s.execute(counts):
            one = stats.setdefault(version_id, VersionStats(version_id))
            one.runs += count
            if shadow:
                one.shadow_runs += count
            if status == "succeeded":
                one.succeeded += count
            elif status in FAILED_STATUSES:
                one.failed += count
                if status == "timed_out":
                    one.timed_out += count
            elif status == "cancelled":
                one.cancelled += count
            else:
                one.active += count
        if stats:
            for version_id, started, finished in s.execute(durations):
                one = stats.setdefault(version_id, VersionStats(version_id))
                one.durations_ms.append((finished - started) * 1000.0)
        rank = {vid: i for i, vid in enumerate(s.scalars(order))}
    return sorted(stats.values(), key=lambda v: (rank.get(v.version_id, len(rank)), v.version_id))
