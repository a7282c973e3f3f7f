"""Batched, ordered writes of run and event records, off the router's event loop.

Database calls block, so a thread drains a queue of writes, groups what arrived together into
one transaction per kind, and resolves each caller's future once its rows are durable. Order
is kept where it matters: a flush writes inserts before updates, and updates in arrival order.

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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fxray.events import catalog
from fxray.events import cloudevent as ev
from fxray.store import EventTypeObservation, NotFound, StateStore

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


@dataclass(slots=True)
class _Write:
    kind: str
    rows: list[dict[str, Any]]
    future: asyncio.Future[None] | None
    loop: asyncio.AbstractEventLoop | None


class RecordWriter:
    """Writes rows through a :class:`StateStore` from one background thread."""

    def __init__(self, store: StateStore, max_batch: int = 5000, linger_s: float = 0.02) -> None:
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
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
        for attempt in range(5):
            try:
                by_kind = {k: [r for w in batch if w.kind == k for r in w.rows] for k in _KINDS}
                inserts, upserts, updates = merge_runs(
                    by_kind["insert_runs"], coalesce(by_kind["update_runs"])
                )
                self.store.write_batch(
                    events=by_kind["events"],
                    inserts=inserts,
                    upserts=upserts,
                    updates=updates,
                    ranked=by_kind["ranked_runs"],
                )
                error = None
                break
            except Exception as exc:  # the database is busy or away: back off, then retry
                error = exc
                log.warning("writing %d records failed (attempt %d): %s", len(batch), attempt, exc)
                time.sleep(0.2 * 2**attempt)
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

    def _update_catalog(self) -> None:
        """Record the event types written since the last time; best effort (a lost write only
        misses counts)."""
        events, self._catalog_events = self._catalog_events, []
        if not events:
            return
        tracker = self.catalog
        try:
            observations = tracker.observe(events)
        except Exception:
            log.exception("event catalog: could not aggregate %d events", len(events))
            return
        for attempt in range(3):
            try:
                self.store.record_event_types(observations)
                return
            except Exception as exc:
                log.warning("event catalog: write failed (attempt %d): %s", attempt, exc)
                time.sleep(0.2 * 2**attempt)
        tracker.forget([o.type for o in observations if o.schema is not None])


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


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
