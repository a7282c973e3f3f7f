"""Batched, ordered writes of run and event records, off the router's event loop.

Database calls block, so a thread drains a queue of writes, groups what arrived together into
one transaction per kind, and resolves each caller's future once its rows are durable. Order
is kept where it matters: a flush writes inserts before updates, and updates in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from fxray.store import StateStore

log = logging.getLogger("fxray.writer")

_KINDS = ("events", "insert_runs", "update_runs")


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
            first = self._queue.get()
            if first is None:
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
                return

    def _flush(self, batch: list[_Write]) -> None:
        error: BaseException | None = None
        for attempt in range(5):
            try:
                by_kind = {k: [r for w in batch if w.kind == k for r in w.rows] for k in _KINDS}
                inserts, upserts, updates = merge_runs(
                    by_kind["insert_runs"], coalesce(by_kind["update_runs"])
                )
                if by_kind["events"]:
                    self.store.record_events(by_kind["events"])
                if inserts:
                    self.store.insert_runs(inserts)
                if upserts:
                    self.store.upsert_runs(upserts)
                if updates:
                    self.store.update_runs(updates)
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
