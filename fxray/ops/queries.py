"""Log and run queries for the API: from Elasticsearch when the ops sink is on
(:class:`OpsQueries`), else from the run rows in the database (:func:`db_search_logs`).

A run's lines are sorted by their ``seq`` (``(attempt - 1) * 1_000_000 + line``) and paged
with ``search_after`` on it; searches across runs are newest first, tie-broken by ``doc_id``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from elasticsearch import Elasticsearch, NotFoundError
from sqlalchemy import or_, select

from fxray.ops.elastic import EsConfig
from fxray.store import NotFound
from fxray.store import queries as q
from fxray.store.models import ServiceRow, VersionRow

if TYPE_CHECKING:
    from fxray.settings import Settings
    from fxray.store import StateStore

MAX_WINDOW = 10_000  # from + size of one search (Elasticsearch's max_result_window)
DB_SCAN_RUNS = 1000  # the database search looks at this many newest runs, at most


@dataclass(frozen=True, slots=True)
class LogHit:
    """One log line with the run it belongs to."""

    index: int  # its seq (ops store) or its position in the run's log (database)
    time: float
    level: str
    step: str
    message: str
    run_id: str
    service: str
    version: str
    correlation_id: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class LogSearch:
    """Filters of a log search; ``None`` means "any". ``services`` None: every service."""

    text: str | None = None
    levels: Sequence[str] | None = None
    services: Sequence[str] | None = None
    versions: Sequence[str] | None = None  # version ids
    since: float | None = None  # line time >= since
    until: float | None = None  # line time < until
    correlation_id: str | None = None
    run_id: str | None = None


def _epoch(stamp: Any) -> float:
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()


def _hit(source: dict[str, Any]) -> LogHit:
    return LogHit(
        index=int(source.get("seq", 0)),
        time=_epoch(source.get("timestamp", 0)),
        level=str(source.get("level", "")),
        step=str(source.get("step") or ""),
        message=str(source.get("message", "")),
        run_id=str(source.get("run_id", "")),
        service=str(source.get("service", "")),
        version=str(source.get("version", "")),
        correlation_id=str(source.get("correlation_id", "")),
        attempt=int(source.get("attempt", 1)),
    )


def _millis(seconds: float) -> int:
    return int(seconds * 1000)


class OpsQueries:
    """Reads the ops store (the indices the ops sink writes)."""

    def __init__(self, config: EsConfig, client: Elasticsearch | None = None) -> None:
        self.config = config
        self.client = client or config.client(retries=2)

    def _search(self, index: str, **body: Any) -> dict[str, Any]:
        """A search; an alias that does not exist yet (nothing written) finds nothing."""
        try:
            return dict(self.client.search(index=index, **body))
        except NotFoundError:
            return {"hits": {"hits": [], "total": {"value": 0}}}

    # one run ---------------------------------------------------------------------------------

    @staticmethod
    def _run_filter(
        run_id: str,
        levels: Sequence[str] | None,
        step: str | None,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        filters: list[dict[str, Any]] = [{"term": {"run_id": run_id}}]
        if levels:
            filters.append({"terms": {"level": list(levels)}})
        if step is not None:
            filters.append({"term": {"step": step}})
        if attempt is not None:
            filters.append({"term": {"attempt": attempt}})
        return {"bool": {"filter": filters}}

    def run_logs(
        self,
        run_id: str,
        *,
        after: int | None = None,
        offset: int = 0,
        limit: int = 500,
        levels: Sequence[str] | None = None,
        step: str | None = None,
    ) -> tuple[list[LogHit], int]:
        """A run's lines in ``seq`` order after ``after`` (a cursor) or from ``offset``, and
        how many lines match in all."""
        query = self._run_filter(run_id, levels, step)
        body: dict[str, Any] = {
            "query": query,
            "sort": [{"seq": "asc"}],
            "size": limit,
            "track_total_hits": True,
        }
        if after is not None:
            body["search_after"] = [after]
            answer = self._search(self.config.logs_alias, **body)
            total = self.count_run_logs(run_id, levels=levels, step=step)
            return [_hit(h["_source"]) for h in answer["hits"]["hits"]], total
        if offset + limit <= MAX_WINDOW:
            answer = self._search(self.config.logs_alias, **body, from_=offset)
            hits = [_hit(h["_source"]) for h in answer["hits"]["hits"]]
            return hits, int(answer["hits"]["total"]["value"])
        # deep pages: walk with search_after (a run holds at most a few 10,000 lines)
        skipped, cursor = 0, None
        while skipped < offset:
            step_size = min(MAX_WINDOW, offset - skipped)
            page = {**body, "size": step_size, "_source": False}
            if cursor is not None:
                page["search_after"] = [cursor]
            hits = self._search(self.config.logs_alias, **page)["hits"]["hits"]
            if not hits:
                return [], self.count_run_logs(run_id, levels=levels, step=step)
            skipped += len(hits)
            cursor = hits[-1]["sort"][0]
        return self.run_logs(run_id, after=cursor, limit=limit, levels=levels, step=step)

    def count_run_logs(
        self,
        run_id: str,
        *,
        levels: Sequence[str] | None = None,
        step: str | None = None,
        attempt: int | None = None,
    ) -> int:
        try:
            answer = self.client.count(
                index=self.config.logs_alias, query=self._run_filter(run_id, levels, step, attempt)
            )
        except NotFoundError:
            return 0
        return int(answer["count"])

    def run_summary(self, run_id: str) -> dict[str, Any] | None:
        """The run's document in the runs indices (its latest lifecycle state), if any."""
        answer = self._search(self.config.runs_alias, query={"ids": {"values": [run_id]}}, size=1)
        hits = answer["hits"]["hits"]
        return dict(hits[0]["_source"]) if hits else None

    def logs_complete(self, run_id: str, attempt: int) -> bool:
        """True once the run's ``finished`` record of ``attempt`` (or a later one) and all the
        lines it counts are searchable."""
        summary = self.run_summary(run_id)
        if summary is None or summary.get("state") != "finished":
            return False
        if int(summary.get("attempt") or 0) < attempt:
            return False
        expected = int(summary.get("log_lines") or 0)
        if not expected:
            return True
        return self.count_run_logs(run_id, attempt=int(summary["attempt"])) >= expected

    # searches --------------------------------------------------------------------------------

    def search_logs(
        self, search: LogSearch, *, offset: int = 0, limit: int = 50
    ) -> tuple[list[LogHit], int]:
        """Lines matching ``search``, newest first, and how many match in all."""
        if search.services is not None and not search.services:
            return [], 0
        must: list[dict[str, Any]] = []
        filters: list[dict[str, Any]] = []
        if search.text:
            must.append({"match": {"message": {"query": search.text, "operator": "and"}}})
        for name, values in (
            ("level", search.levels),
            ("service", search.services),
            ("version", search.versions),
        ):
            if values is not None:
                filters.append({"terms": {name: list(values)}})
        for name, value in (("correlation_id", search.correlation_id), ("run_id", search.run_id)):
            if value is not None:
                filters.append({"term": {name: value}})
        window: dict[str, Any] = {}
        if search.since is not None:
            window["gte"] = _millis(search.since)
        if search.until is not None:
            window["lt"] = _millis(search.until)
        if window:
            filters.append({"range": {"timestamp": {**window, "format": "epoch_millis"}}})
        answer = self._search(
            self.config.logs_alias,
            query={"bool": {"must": must or [{"match_all": {}}], "filter": filters}},
            sort=[{"timestamp": "desc"}, {"doc_id": "desc"}],
            from_=offset,
            size=limit,
            track_total_hits=True,
        )
        hits = [_hit(h["_source"]) for h in answer["hits"]["hits"]]
        return hits, int(answer["hits"]["total"]["value"])


@functools.lru_cache(maxsize=8)
def _queries(config: EsConfig) -> OpsQueries:
    return OpsQueries(config)


def ops_queries(settings: Settings) -> OpsQueries | None:
    """Queries on the ops store the settings name; None when the ops sink is off."""
    if settings.ops_sink == "none":
        return None
    return _queries(EsConfig.from_settings(settings))


# -- the database (the ops sink is off) -------------------------------------------------------


def project_services(store: StateStore, project: str) -> list[str]:
    """The ids of a project's services (what ops records name their service by)."""
    with store.session() as s:
        return list(s.scalars(select(ServiceRow.id).where(ServiceRow.project == project)))


def version_ids(store: StateStore, ref: str, services: Sequence[str] | None) -> list[str]:
    """The ids of the versions ``ref`` names (an id or a label), within ``services``."""
    query = select(VersionRow.id).where(or_(VersionRow.id == ref, VersionRow.label == ref))
    if services is not None:
        query = query.where(VersionRow.service.in_(list(services)))
    with store.session() as s:
        return list(s.scalars(query))


def db_search_logs(
    store: StateStore, search: LogSearch, *, offset: int = 0, limit: int = 50
) -> tuple[list[LogHit], int]:
    """Like :meth:`OpsQueries.search_logs` over the run rows' logs: the newest
    :data:`DB_SCAN_RUNS` matching runs are searched (a plain, bounded scan)."""
    if search.services is not None and not search.services:
        return [], 0
    views: list[q.RunView] = []
    if search.run_id is not None:
        try:
            views = [q.get_run(store, search.run_id)]
        except NotFound:
            views = []
    else:
        single = search.services[0] if search.services and len(search.services) == 1 else None
        views, _ = q.list_runs(
            store,
            q.RunFilter(service=single, correlation_id=search.correlation_id, until=search.until),
            limit=DB_SCAN_RUNS,
        )
    needle = search.text.lower() if search.text else None
    hits: list[LogHit] = []
    for view in views:
        run = view.run
        if search.services is not None and run.service not in search.services:
            continue
        if search.versions is not None and run.version_id not in search.versions:
            continue
        if search.correlation_id is not None and run.correlation_id != search.correlation_id:
            continue
        for index, line in enumerate(run.logs or []):
            stamp, level, step, message = (list(line) + [None] * 4)[:4]
            when = float(stamp) if isinstance(stamp, int | float) else 0.0
            text = str(message if message is not None else "")
            if search.levels and level not in search.levels:
                continue
            if search.since is not None and when < search.since:
                continue
            if search.until is not None and when >= search.until:
                continue
            if needle is not None and not all(w in text.lower() for w in needle.split()):
                continue
            hits.append(
                LogHit(
                    index,
                    when,
                    str(level or ""),
                    str(step or ""),
                    text,
                    run.id,
                    run.service,
                    run.version_id,
                    run.correlation_id,
                    run.attempt,
                )
            )
    hits.sort(key=lambda h: (h.time, h.run_id, h.index), reverse=True)
    return hits[offset : offset + limit], len(hits)
