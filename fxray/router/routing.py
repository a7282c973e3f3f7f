"""Routing: from polled records to the runs they cause.

Each record is decoded as a CloudEvent (what cannot be decoded becomes a dead letter), matched
against the triggers of the current routing snapshot (or sent straight to its target service,
for manual runs, cron ticks and replays), mapped by the active mapping rules into new events,
and turned into runs named by (event, trigger). Runs that already finished, or that this
router already holds, are skipped: a redelivered event never runs twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from typing import Any

from fxray.bus import EventBus, OutgoingRecord, Record, TopicPartition
from fxray.events import cloudevent as ev
from fxray.events.deadletters import bad_record_letter
from fxray.events.mappings import FieldMap, MappingRule, mapped_event
from fxray.ops.metrics import RunMetrics
from fxray.router.triggers import Match, TriggerTable
from fxray.runtime.runs import RunSpec
from fxray.settings import Settings
from fxray.store import RoutingSnapshot, StateStore, TriggerRecord, VersionRecord

log = logging.getLogger("fxray.router")

RUN_NAMESPACE = uuid.UUID("5b0c1d2e-8f3a-4c6b-9d7e-0a1b2c3d4e5f")
MANUAL_TRIGGER = "manual"
SCHEDULE_TRIGGER = "schedule"

_RUN_NAMESPACE_BYTES = RUN_NAMESPACE.bytes


def run_id_for(event_id: str, trigger_id: str) -> str:
    """Runs are named by (event, trigger), so a redelivered event maps to the same run.

    ``str(uuid.uuid5(RUN_NAMESPACE, f"{event_id}\\x00{trigger_id}"))``, computed without the
    ``UUID`` object (less than half the time; this runs for every routed event).
    """
    name = f"{event_id}\x00{trigger_id}".encode()
    digest = bytearray(hashlib.sha1(_RUN_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class ActiveRun:
    """A run the router holds, from its creation until it is final."""

    spec: RunSpec
    tp: TopicPartition | None
    offset: int
    max_retries: int
    backoff_s: float
    isolate: bool = False
    dispatched: bool = False
    cancel_requested: bool = False
    order_key: tuple[str, str] | None = None  # (trigger, partition key) of an ordered trigger
    logs: list[Any] = field(default_factory=list)
    queued_at: float = field(default_factory=time.time)  # created, or its retry due


@dataclass(slots=True)
class Routed:
    """What a batch of records caused."""

    events: list[dict[str, Any]]
    per_record: list[tuple[Record, list[ActiveRun]]]  # every record, with its new runs
    runs: list[ActiveRun]  # all new runs, in record order


class Routing:
    """Turns records into runs, against the routing snapshot of the moment."""

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        store: StateStore,
        metrics: RunMetrics,
        counters: Counter[str],
        note_error: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.store = store
        self.metrics = metrics
        self.counters = counters
        self.note_error = note_error
        self.limits = ev.EventLimits.from_settings(settings)
        self.table = TriggerTable(store.routing_snapshot())
        self._mapping_index: tuple[RoutingSnapshot, dict[str, list[MappingRule]]] | None = None

    @property
    def snapshot(self) -> RoutingSnapshot:
        return self.table.snapshot

    async def refresh(self) -> int:
        """Reload routing state if it changed; returns the revision in force."""
        revision = await asyncio.to_thread(self.store.revision)
        if revision != self.table.revision:
            snapshot = await asyncio.to_thread(self.store.routing_snapshot)
            self.table = TriggerTable(snapshot)
        return self.table.revision

    async def route(self, records: list[Record], active: Container[str]) -> Routed:
        """Decode, dead-letter, map and match ``records``; new runs only (none of ``active``,
        none already finished)."""
        events: list[dict[str, Any]] = []
        new_runs: list[ActiveRun] = []
        dead: list[OutgoingRecord] = []
        per_record: list[tuple[Record, list[ActiveRun]]] = []
        sources: list[Record] = []  # the record of each event
        limits = self.limits
        for record in records:
            try:
                event = ev.from_record(
                    record.value, record.headers, limits.max_bytes, limits.max_depth
                )
                runs = self._runs_for(event, record)
            except Exception as exc:  # whatever one record breaks, it alone is set aside
                reason = str(exc)
                if not isinstance(exc, ev.InvalidEvent):
                    log.exception("record %s:%d:%d", record.topic, record.partition, record.offset)
                    self.counters["route_errors"] += 1
                    reason = f"cannot route: {type(exc).__name__}: {reason}"
                dead.append(bad_record_letter(record, reason))
                per_record.append((record, []))
                continue
            events.append(event)
            sources.append(record)
            per_record.append((record, runs))
            new_runs.extend(runs)
        self.counters["events"] += len(events)
        self.metrics.observe_events(len(events))
        if dead:
            self.counters["dead_lettered"] += len(dead)
            self.metrics.observe_dead_letters("bad_record", len(dead))
            await self.bus.produce_async(self.settings.deadletter_topic, dead)
        # mapped events are on the bus before these records' offsets can be committed
        mapped, failed = self._mapped_events(events, sources)
        if failed:
            self.counters["dead_lettered"] += len(failed)
            self.metrics.observe_dead_letters("mapping", len(failed))
            await self.bus.produce_async(self.settings.deadletter_topic, failed)
        if mapped:
            self.counters["mapped"] += len(mapped)
            await self.bus.produce_async(self.settings.events_topic, mapped)
        # a redelivered record, or the same event published twice: runs that already finished
        # are not run again (one indexed lookup per poll)
        finished = await self._already_finished([r.spec.run_id for r in new_runs])
        live: list[ActiveRun] = []
        taken = set(finished)  # an event twice in one poll (a client's retry): its runs once
        fresh_per_record = []
        for record, runs in per_record:
            fresh = []
            for run in runs:
                if run.spec.run_id not in taken and run.spec.run_id not in active:
                    taken.add(run.spec.run_id)
                    fresh.append(run)
            fresh_per_record.append((record, fresh))
            live.extend(fresh)
        self.counters["duplicates_skipped"] += len(new_runs) - len(live)
        return Routed(events, fresh_per_record, live)

    def _mapped_events(
        self, events: list[dict[str, Any]], sources: list[Record]
    ) -> tuple[list[OutgoingRecord], list[OutgoingRecord]]:
        """The events the active mapping rules make of ``events`` (none of shadow events), and
        a dead letter of the record (in ``sources``) of each event a rule could not map within
        the event limits: the event itself is routed all the same."""
        index = self._mappings()
        if not index:
            return [], []
        mode = self.settings.event_output_mode
        out: list[OutgoingRecord] = []
        failed: list[OutgoingRecord] = []
        for event, record in zip(events, sources, strict=True):
            rules = index.get(event["type"])
            if not rules or event.get(ev.SHADOW):
                continue
            for rule in rules:
                try:
                    out.append(ev.to_outgoing(mapped_event(rule, event), mode, self.limits))
                except Exception as exc:  # InvalidEvent, or a rule the data breaks
                    self.counters["mapping_errors"] += 1
                    why = f"mapping {rule.id}: {exc}"
                    self.note_error(f"{why} (event {event['id']})")
                    failed.append(bad_record_letter(record, why))
        return out, failed

    def _mappings(self) -> dict[str, list[MappingRule]]:
        """The active mapping rules by source type, indexed once per routing snapshot."""
        snapshot = self.table.snapshot
        if self._mapping_index is not None and self._mapping_index[0] is snapshot:
            return self._mapping_index[1]
        index: dict[str, list[MappingRule]] = {}
        for m in snapshot.mappings:
            try:
                rule = MappingRule(
                    id=m.id,
                    source_type=m.source_type,
                    target_type=m.target_type,
                    fields=[FieldMap.model_validate(f) for f in m.fields],
                    map_all=m.map_all,
                )
            except ValueError as exc:
                self.note_error(f"mapping {m.id} is invalid, skipped: {exc}")
                continue
            index.setdefault(rule.source_type, []).append(rule)
        self._mapping_index = (snapshot, index)
        return index

    async def _already_finished(self, run_ids: list[str]) -> set[str]:
        if not run_ids:
            return set()
        if len(run_ids) <= 64 and self.store.engine.dialect.name == "sqlite":
            # a few indexed lookups in a local file take less than a hop to a thread
            return self.store.finished_run_ids(run_ids)
        return await asyncio.to_thread(self.store.finished_run_ids, run_ids)

    def _runs_for(self, event: dict[str, Any], record: Record) -> list[ActiveRun]:
        if event.get(ev.SHADOW):
            return []  # events from shadow runs are recorded, never routed onward
        targeted = event["type"] in ev.PLATFORM_TYPES or bool(event.get(ev.REPLAY_OF))
        matches = self._target_matches(event) if targeted else None
        if matches is None:
            matches = [(m, None) for m in self.table.match(event)]
        runs = []
        versions = self.table.snapshot.versions
        for match, priority in matches:
            run = self._new_run(
                event, record, match.trigger.id, versions[match.version_id], priority
            )
            if match.trigger.ordered:
                key = record.key.decode("utf-8", "replace") if record.key else ""
                run.order_key = (match.trigger.id, key or f"partition-{record.partition}")
            runs.append(run)
            shadow = match.trigger.shadow_version
            if shadow and shadow in versions and shadow != match.version_id:
                trigger_id = f"{match.trigger.id}:shadow"
                run = self._new_run(event, record, trigger_id, versions[shadow], priority)
                run.spec.shadow = True
                runs.append(run)
        return runs

    def _target_matches(self, event: dict[str, Any]) -> list[tuple[Match, int | None]] | None:
        """Manual runs, cron ticks and replays name their service (and maybe version)
        directly; a replay (``fxreplayof``) runs that service only, whatever its type."""
        service_name = event.get(ev.TARGET)
        if not service_name:
            return None
        snapshot = self.table.snapshot
        service = snapshot.services.get(service_name)
        if service is None or not service.active:
            self.counters["target_skipped"] += 1
            return []
        version_id = event.get(ev.VERSION) or snapshot.latest.get(service_name)
        version = snapshot.versions.get(version_id)
        if version is None or version.service != service_name:
            self.counters["target_skipped"] += 1
            return []
        if event.get(ev.REPLAY_OF):
            trigger_id = ev.REPLAY_TRIGGER
        elif event["type"] == ev.MANUAL_RUN:
            trigger_id = MANUAL_TRIGGER
        else:
            trigger_id = SCHEDULE_TRIGGER
        pseudo = TriggerRecord(
            trigger_id, event["type"], service_name, {}, {}, None, False, True, 0, 0
        )
        raw = str(event.get(ev.PRIORITY) or "")
        priority = int(raw) if raw.isdigit() and 1 <= int(raw) <= 10 else None
        return [(Match(pseudo, version_id), priority)]

    def _new_run(
        self,
        event: dict[str, Any],
        record: Record,
        trigger_id: str,
        version: VersionRecord,
        priority: int | None,
    ) -> ActiveRun:
        manifest = version.manifest
        service = self.table.snapshot.services[version.service]
        retries = manifest.get("retries") or {}
        spec = RunSpec(
            run_id=run_id_for(event["id"], trigger_id),
            service=version.service,
            service_name=service.name,
            version_id=version.id,
            package_hash=version.content_hash,
            steps=version.steps,
            event=event,
            correlation_id=ev.correlation_id(event),
            trigger_id=trigger_id,
            priority=priority or service.priority,
            timeout_s=float(manifest.get("timeout_s") or self.settings.default_timeout_s),
            created_at=time.time(),
        )
        return ActiveRun(
            spec,
            (record.topic, record.partition),
            record.offset,
            int(retries.get("max", 0)),
            float(retries.get("backoff_s", 1.0)),
        )
