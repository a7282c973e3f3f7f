"""Batched, ordered writes of run and event records, off the router's event loop.

Database calls block, so a thread drains a queue of writes, groups what arrived together into
one transaction per kind, and resolves each caller's future once its rows are durable. Order
is kept where it matters: a flush writes inserts before updates, and updates in arrival order.

Nothing is dropped. While the database is unavailable (:func:`fxray.store.database_unavailable`:
connection refused or lost, a pool timeout) a flush is tried again, with back-off, for as long
as it takes; the outage is reported when it starts, every :data:`OUTAGE_REPORT_EVERY_S` while it
lasts, and counted (``record_write_retries``, ``record_write_outages``). Later writes wait in
the queue behind it, so order holds. A batch the database *refuses* (a poison row) is tried
:data:`REFUSED_ATTEMPTS` times, then split in halves down to the row that fails; that row is
written without its logs, steps and result if it can be (``records_degraded``), else reported
with the database's error and counted (``records_rejected``): never silently dropped, and never
retried forever.

The same thread keeps the event catalog current (:class:`CatalogTracker`): at most every
:data:`CATALOG_EVERY_S`, one observation per event type of the events written since (count,
first/last seen, emitters) and, from a small sample of them, the type's merged JSON Schema when
it changed. (Per flush, at a few hundred events/s, the catalog's row-locked writes held the
router's GIL longer than the rows themselves.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fxray.events import catalog
from fxray.events import cloudevent as ev
from fxray.store import (
    EventTypeObservation,
    NotFound,
    StateStore,
    database_unavailable,
    describe_error,
)

log = logging.getLogger("fxray.writer")

_KINDS = ("events", "insert_runs", "update_runs", "ranked_runs", "runs_seen")
"""``runs_seen`` rows (id, service) only feed the catalog; ``ranked_runs`` are whole rows
upserted rank-guarded (:meth:`~fxray.store.StateStore.upsert_runs`)."""

CATALOG_EVERY_S = 1.0
"""How often the catalog is written (the events written meanwhile are counted together)."""
CATALOG_MAX_PENDING = 50_000
SAMPLES_PER_TYPE = 5
"""Events per type and flush whose data go into the type's schema."""
MAX_CACHED_TYPES = 10_000
MAX_CACHED_RUNS = 100_000
SERVICE_SOURCE = "fxray/services/"
"""Events a script emits have ``source`` ``fxray/services/<service>`` unless it sets one."""
REFUSED_ATTEMPTS = 3
"""Tries of a batch the database refuses (not an outage) before it is split to find the row."""
OUTAGE_REPORT_EVERY_S = 30.0
"""While the database stays unavailable, a report this often (and one when it starts)."""
CONTENT_FIELDS = ("logs", "result", "steps", "error")
"""What a refused run row is written again without (its free-form, script-made content)."""

_Row = tuple[str, dict[str, Any]]
"""One row of a flush: the :meth:`~fxray.store.StateStore.write_batch` keyword, the row."""
_WRITE_ORDER = ("events", "inserts", "upserts", "updates", "ranked")
_WHAT = {
    "events": "event",
    "inserts": "new run row",
    "upserts": "run row",
    "updates": "run update",
    "ranked": "run row",
}


@dataclass(slots=True)
class _Write:
    kind: str
    rows: list[dict[str, Any]]
    future: asyncio.Future[None] | None
    loop: asyncio.AbstractEventLoop | None


class RecordWriter:
    """Writes rows through a :class:`StateStore` from one background thread."""

    def __init__(
        self,
        store: StateStore,
        max_batch: int = 5000,
        linger_s: float = 0.02,
        *,
        counters: Counter[str] | None = None,
        report: Callable[[str], None] | None = None,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        """``counters`` and ``report`` (a line for the operator; default: a warning in the log)
        are the owner's; the writer's thread only adds its own keys to ``counters``."""
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.report = report or _log_warning
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.rejected: deque[dict[str, Any]] = deque(maxlen=50)
        """The newest rows the database refused for good: ``kind``, ``id``, ``error``."""
        self._down_since: float | None = None  # monotonic start of the current outage
        self._outage_retries = 0
        self._outage_reported = 0.0
        self._queue: queue.Queue[_Write | None] = queue.Queue()
        self.catalog = CatalogTracker(store)
        self._catalog_events: list[dict[str, Any]] = []
        self._catalog_due = 0.0  # monotonic time of the next catalog write
        self._thread = threading.Thread(target=self._run, name="fxray-writer", daemon=True)
        self._thread.start()
        self.flushes = 0

    async def write(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Return once ``rows`` are committed (raises what the database raised)."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Write(kind, rows, future, loop))
        await future

    def submit(self, kind: str, rows: list[dict[str, Any]]) -> None:
        """Queue rows without waiting for them."""
        if rows:
            self._queue.put(_Write(kind, rows, None, None))

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            wait = None
            if self._catalog_events:
                wait = max(0.0, self._catalog_due - time.monotonic())
            try:
                first = self._queue.get(timeout=wait)
            except queue.Empty:
                self._update_catalog()
                continue
            if first is None:
                self._update_catalog()
                return
            if first.kind == "insert_runs" and self.linger_s:
                time.sleep(self.linger_s)  # let fast runs' results catch up with their inserts
            batch = [first]
            size = len(first.rows)
            stop = False
            while size < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                size += len(item.rows)
            self._flush(batch)
            if stop:
                self._update_catalog()
                return

    def _flush(self, batch: list[_Write]) -> None:
        error: BaseException | None = None
        try:
            by_kind = {k: [r for w in batch if w.kind == k for r in w.rows] for k in _KINDS}
            inserts, upserts, updates = merge_runs(
                by_kind["insert_runs"], coalesce(by_kind["update_runs"])
            )
            rows: list[_Row] = [
                (keyword, row)
                for keyword, group in zip(
                    _WRITE_ORDER,
                    (by_kind["events"], inserts, upserts, updates, by_kind["ranked_runs"]),
                    strict=True,
                )
                for row in group
            ]
            self._write_rows(rows)
        except Exception as exc:  # not the database's answer: rows of ours it cannot take
            log.exception("record writer: a flush of %d writes failed", len(batch))
            error = exc
        self.flushes += 1
        for w in batch:
            if w.future is not None and w.loop is not None:
                w.loop.call_soon_threadsafe(_resolve, w.future, error)
        if error is None:  # after the callers are answered: the catalog is nobody's wait
            for w in batch:
                if w.kind in ("insert_runs", "runs_seen"):
                    self.catalog.note_runs(w.rows)
                elif w.kind == "events":
                    if not self._catalog_events:
                        self._catalog_due = time.monotonic() + CATALOG_EVERY_S
                    self._catalog_events.extend(w.rows)
            if len(self._catalog_events) >= CATALOG_MAX_PENDING:
                self._update_catalog()

    def _write_rows(self, rows: list[_Row], tries: int = REFUSED_ATTEMPTS) -> bool:
        """Write ``rows`` in one transaction, whatever it takes: again and again while the
        database is unavailable; if it refuses them, ``tries`` times, then each half on its
        own, down to single rows (:meth:`_refused`). False only if ``tries`` is 0 and the one
        row was refused (a caller's last try)."""
        refused = 0
        while True:
            try:
                self.store.write_batch(**_by_keyword(rows))
                self._database_back()
                return True
            except Exception as exc:
                if database_unavailable(exc):
                    self._wait_for_database(exc, len(rows))
                    continue
                error = exc
                refused += 1
                if refused >= max(tries, 1):
                    break
                log.warning(
                    "the database refused %d records (attempt %d): %s",
                    len(rows),
                    refused,
                    describe_error(exc),
                )
                time.sleep(self.retry_initial_s * refused)
        if len(rows) == 1:
            if tries == 0:
                return False
            self._refused(rows[0], error)
            return True
        half = len(rows) // 2
        self.counters["record_batches_split"] += 1
        self._write_rows(rows[:half], tries=1)
        self._write_rows(rows[half:], tries=1)
        return True

    def _refused(self, row: _Row, error: BaseException) -> None:
        """The database refused this one row: write it without its content if that helps (a
        run still gets its final status), else report it. Never dropped in silence."""
        keyword, data = row
        what = f"{_WHAT[keyword]} {str(data.get('id'))[:80]!r}"
        reason = describe_error(error)
        slim = _without_content(data, reason) if keyword != "events" else None
        if slim is not None and self._write_rows([(keyword, slim)], tries=0):
            self.counters["records_degraded"] += 1
            self.report(
                f"the database refused {what} ({reason}); written without its logs, steps "
                "and result"
            )
            return
        self.counters["records_rejected"] += 1
        self.rejected.append({"kind": _WHAT[keyword], "id": data.get("id"), "error": reason})
        log.error("record writer: the database refused %s for good: %s", what, reason)
        self.report(f"the database refused {what} for good, not written: {reason}")

    def _wait_for_database(self, error: BaseException, waiting: int) -> None:
        """Back off once while the database is unavailable; report the outage (when it starts,
        then every :data:`OUTAGE_REPORT_EVERY_S`)."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._outage_reported = now
            self._outage_retries = 0
            self.counters["record_write_outages"] += 1
            self.report(
                f"database unavailable, holding {waiting} records and retrying: "
                f"{describe_error(error)}"
            )
        elif now - self._outage_reported >= OUTAGE_REPORT_EVERY_S:
            self._outage_reported = now
            self.report(
                f"database still unavailable after {now - self._down_since:.0f}s "
                f"({self._outage_retries} retries; {waiting} records held, "
                f"{self._queue.qsize()} writes queued behind them): {describe_error(error)}"
            )
        self._outage_retries += 1
        self.counters["record_write_retries"] += 1
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** min(self._outage_retries, 16))
        time.sleep(delay * random.uniform(0.5, 1.0))

    def _database_back(self) -> None:
        if self._down_since is not None:
            log.info(
                "record writer: the database is back after %.1fs (%d retries)",
                time.monotonic() - self._down_since,
                self._outage_retries,
            )
            self._down_since = None

    def _update_catalog(self) -> None:
        """Record the event types written since the last time. While the database is
        unavailable the events wait for the next time (up to :data:`CATALOG_MAX_PENDING`);
        otherwise best effort: a write that keeps failing only misses counts (and says so)."""
        events, self._catalog_events = self._catalog_events, []
        if not events:
            return
        tracker = self.catalog
        for attempt in range(3):
            try:
                self.store.record_event_types(tracker.observe(events))
                return
            except Exception as exc:
                # the cached schemas may now be ahead of the stored ones: read them again
                tracker.forget(list({str(e.get("type")) for e in events}))
                if database_unavailable(exc):
                    if len(events) + len(self._catalog_events) <= CATALOG_MAX_PENDING:
                        self._catalog_events = events + self._catalog_events
                        self._catalog_due = time.monotonic() + CATALOG_EVERY_S
                        return
                    break
                log.warning(
                    "event catalog: write failed (attempt %d): %s", attempt, describe_error(exc)
                )
                time.sleep(0.2 * 2**attempt)
        self.counters["catalog_events_uncounted"] += len(events)
        log.warning("event catalog: %d events left uncounted", len(events))


class CatalogTracker:
    """Aggregates written events into catalog observations, cheaply.

    Per flush and event type: the count, first/last seen (the first and last events' ``time``,
    or now), the emitting services, and a schema merged over at most
    :data:`SAMPLES_PER_TYPE` sampled events. The current schema of each type is cached (read
    once from the store), so a flush reads nothing unless a sample changes a schema; then the
    stored schema is read again (another router may have widened it) and the merge, with its
    :func:`fxray.events.catalog.diff` as ``changes``, goes into the observation.
    """

    def __init__(self, store: StateStore, samples: int = SAMPLES_PER_TYPE) -> None:
        self.store = store
        self.samples = samples
        self.schemas: dict[str, dict[str, Any]] = {}  # type -> current schema ({}: none yet)
        self.run_services: dict[str, str | None] = {}  # run id -> service (None: unknown)
        self.random = random.Random()
        self.schema_reads = 0

    def note_runs(self, rows: list[dict[str, Any]]) -> None:
        """Remember which service each new run belongs to (emitters of its events)."""
        for row in rows:
            service = row.get("service")
            if service:
                self.run_services[row["id"]] = service
        _trim(self.run_services, MAX_CACHED_RUNS)

    def forget(self, types: list[str]) -> None:
        """Drop cached schemas (their write failed): read them again next time."""
        for name in types:
            self.schemas.pop(name, None)

    def observe(
        self, events: list[dict[str, Any]], now: float | None = None
    ) -> list[EventTypeObservation]:
        """The catalog observations of one flush of events."""
        now = time.time() if now is None else now
        by_type: dict[str, list[dict[str, Any]]] = {}
        emitted: list[dict[str, Any]] = []
        for event in events:
            by_type.setdefault(event["type"], []).append(event)
            if ev.RUN_ID in event:
                emitted.append(event)
        emitters: dict[str, set[str]] = {}
        if emitted:
            for event in emitted:
                service = self.emitter_of(event)
                if service:
                    emitters.setdefault(event["type"], set()).add(service)
        observations: list[EventTypeObservation] = []
        for name, group in by_type.items():
            first = _seen_at(group[0], now)
            last = first if len(group) == 1 else _seen_at(group[-1], now)
            schema, changes = self._schema_change(name, group)
            services = sorted(emitters.get(name, ()))
            observations.append(
                EventTypeObservation(
                    type=name,
                    count=len(group),
                    first_seen=min(first, last),
                    last_seen=max(first, last),
                    schema=schema,
                    emitter=services[0] if services else None,
                    changes=changes,
                )
            )
            # more emitters of the type in this flush: one more (countless) observation each
            observations.extend(
                EventTypeObservation(name, 0, min(first, last), max(first, last), emitter=s)
                for s in services[1:]
            )
        _trim(self.schemas, MAX_CACHED_TYPES)
        return observations

    def emitter_of(self, event: dict[str, Any]) -> str | None:
        """The service whose run emitted ``event`` (None if it came from outside)."""
        run_id = event.get(ev.RUN_ID)
        if not run_id:
            return None
        run_id = str(run_id)
        if run_id in self.run_services:
            return self.run_services[run_id]
        source = str(event.get("source", ""))
        if source.startswith(SERVICE_SOURCE) and len(source) > len(SERVICE_SOURCE):
            return source[len(SERVICE_SOURCE) :]
        try:  # a run of another router, and a script that chose its own source: look it up
            service: str | None = self.store.get_run(run_id).service
        except NotFound:
            service = None
        self.run_services[run_id] = service
        return service

    def _schema_change(
        self, name: str, group: list[dict[str, Any]]
    ) -> tuple[dict[str, Any] | None, list[str]]:
        """(the new schema, its changes) if the sample widens the type's schema, else (None, [])."""
        sample = group if len(group) <= self.samples else self.random.sample(group, self.samples)
        seen: dict[str, Any] = {}
        for event in sample:
            seen = catalog.merge(seen, catalog.event_schema(event))
        fresh = name not in self.schemas
        known = self._stored_schema(name) if fresh else self.schemas[name]
        merged = catalog.merge(known, seen)
        if merged != known and not fresh:
            known = self._stored_schema(name)  # another router may have widened it already
            merged = catalog.merge(known, seen)
        self.schemas[name] = merged
        if merged == known:
            return None, []
        return merged, catalog.diff(known, merged)

    def _stored_schema(self, name: str) -> dict[str, Any]:
        self.schema_reads += 1
        try:
            return self.store.get_event_type(name).schema or {}
        except NotFound:
            return {}


def _seen_at(event: dict[str, Any], now: float) -> float:
    """When an event happened: its ``time`` attribute, or ``now``."""
    stamp = event.get("time")
    if not stamp:
        return now
    try:
        return datetime.fromisoformat(str(stamp)).timestamp()
    except (ValueError, OverflowError, OSError):
        return now


def _trim(cache: dict[str, Any], limit: int) -> None:
    """Keep a cache under ``limit`` entries by dropping its oldest half."""
    if len(cache) > limit:
        for key in list(cache)[: len(cache) // 2]:
            del cache[key]


def merge_runs(
    inserts: list[dict[str, Any]], updates: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Fold updates into the inserts of the same runs: (inserts, upserts, other updates).

    A run routed and finished within one flush is written once, as an upsert (the upsert also
    covers a row left by an earlier router, where a plain insert would be ignored).
    """
    pending = {row["id"]: row for row in inserts}
    upserts: dict[str, dict[str, Any]] = {}
    rest = []
    for update in updates:
        row = pending.pop(update["id"], None)
        if row is None:
            rest.append(update)
        else:
            upserts[update["id"]] = {**row, **update}
    return list(pending.values()), list(upserts.values()), rest


def coalesce(updates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One update per run: later fields win, as if the updates were applied in order."""
    merged: dict[str, dict[str, Any]] = {}
    for update in updates:
        merged.setdefault(update["id"], {}).update(update)
    return list(merged.values())


def _by_keyword(rows: list[_Row]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for keyword, row in rows:
        grouped.setdefault(keyword, []).append(row)
    return grouped


def _without_content(row: dict[str, Any], reason: str) -> dict[str, Any] | None:
    """``row`` without its logs, steps and result, its error saying why; None if it has none
    of them (nothing to leave out)."""
    if not any(row.get(name) for name in CONTENT_FIELDS):
        return None
    slim = {k: v for k, v in row.items() if k not in CONTENT_FIELDS}
    slim["error"] = f"the database refused this run's record ({reason}); logs and result left out"
    for name in ("logs", "steps"):  # emptied, not NULL: readers expect lists
        if name in row:
            slim[name] = []
    return slim


def _log_warning(text: str) -> None:
    log.warning("%s", text)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
