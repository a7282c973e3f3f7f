"""The Elasticsearch side of the ops pipeline: client, index templates, idempotent bulk writes.

Ops data lives in plain daily indices behind aliases, which Elasticsearch and OpenSearch both
support (no data streams, ILM or ingest pipelines):

* ``<prefix>-runs-YYYY.MM.DD`` (alias ``<prefix>-runs``): one document per run, ``_id`` = run
  id, in the index of the day the run was created. Each lifecycle record carries every field of
  the run, so it is indexed whole with ``version_type=external_gte`` and a version that grows
  with the run's state (:func:`fxray.ops.lifecycle_rank`): a redelivered record rewrites the
  same document, a late one (an older state) is refused with 409 and skipped.
* ``<prefix>-logs-YYYY.MM.DD`` (alias ``<prefix>-logs``): one document per log line, ``_id`` =
  ``<run id>:log:<seq>``, in the index of the line's day.

``es_compat = "opensearch"`` makes the official client send plain ``application/json``: the
client (8.x and 9.x) always asks for ``application/vnd.elasticsearch+json; compatible-with=N``,
which OpenSearch (and the osmem test server) answer with 406. The client's documented
``node_class`` option takes :class:`PlainJsonNode`, which rewrites those two headers just before
a request leaves; real Elasticsearch accepts either form.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, HttpHeaders, Urllib3HttpNode
from elasticsearch import ApiError, Elasticsearch

from fxray import ops

if TYPE_CHECKING:
    from elastic_transport._node import NodeApiResponse

    from fxray.settings import Settings

log = logging.getLogger("fxray.ops.elastic")

REQUEST_TIMEOUT_S = 10.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REFUSED_SINK_STATUSES = frozenset({401, 403})
"""Answers that refuse the sink itself (credentials, privileges), whatever it writes: it waits
for an operator to fix them, as for an outage, rather than skip records."""
_VND = re.compile(r"application/vnd\.elasticsearch\+([a-z0-9-]+)(?:\s*;\s*compatible-with=\d+)?")


def plain_media_type(value: str) -> str:
    """``application/vnd.elasticsearch+json; compatible-with=9`` -> ``application/json``."""
    return _VND.sub(r"application/\1", value)


class PlainJsonNode(Urllib3HttpNode):
    """An HTTP node that sends ``application/json`` (and ``x-ndjson``) instead of the client's
    ``application/vnd.elasticsearch+...; compatible-with=N`` (for OpenSearch)."""

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> NodeApiResponse:
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value:
                    headers[name] = plain_media_type(value)
        return super().perform_request(method, target, body, headers, *args, **kwargs)


class Unavailable(RuntimeError):
    """Elasticsearch cannot take the write now (down, timing out, overloaded): retry later."""


@dataclass(frozen=True, slots=True)
class EsConfig:
    """How to reach the ops store (picklable: handed to the ops sink actors)."""

    urls: tuple[str, ...] = ("http://127.0.0.1:9200",)
    compat: str = "elasticsearch"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)
    prefix: str = "fxray"

    @classmethod
    def from_settings(cls, settings: Settings) -> EsConfig:
        return cls(
            urls=tuple(u.strip() for u in settings.es_url.split(",") if u.strip()),
            compat=settings.es_compat,
            username=settings.es_username,
            password=settings.es_password,
            api_key=settings.es_api_key,
            prefix=settings.ops_index_prefix,
        )

    def client(self, *, timeout_s: float = REQUEST_TIMEOUT_S, retries: int = 0) -> Elasticsearch:
        """A client; ``retries`` 0 leaves retrying to the caller (the sink backs off itself)."""
        options: dict[str, Any] = {
            "request_timeout": timeout_s,
            "max_retries": retries,
            "retry_on_timeout": retries > 0,
        }
        if self.compat == "opensearch":
            options["node_class"] = PlainJsonNode
        if self.api_key:
            options["api_key"] = self.api_key
        elif self.username:
            options["basic_auth"] = (self.username, self.password or "")
        return Elasticsearch(list(self.urls), **options)

    @property
    def runs_alias(self) -> str:
        return f"{self.prefix}-runs"

    @property
    def logs_alias(self) -> str:
        return f"{self.prefix}-logs"


# -- templates --------------------------------------------------------------------------------

_KEYWORD = {"type": "keyword"}
_DATE = {"type": "date"}
_TEXT = {"type": "text"}
_DOUBLE = {"type": "double"}
_INT = {"type": "integer"}

RUNS_MAPPING: dict[str, Any] = {
    "properties": {
        **{
            name: _KEYWORD
            for name in (
                "doc_id",
                "run_id",
                "service",
                "version",
                "trigger_id",
                "correlation_id",
                "event_id",
                "event_type",
                "state",
                "status",
                "step",
                "step_status",
            )
        },
        **{name: _DATE for name in ("timestamp", "created_at", "started_at", "finished_at")},
        **{name: _DOUBLE for name in ("duration_ms", "queue_ms", "step_duration_ms")},
        "error": _TEXT,
        "step_error": _TEXT,
        "attempt": _INT,
        "priority": _INT,
        "log_lines": _INT,
        "last_seq": {"type": "long"},
        "shadow": {"type": "boolean"},
        "steps": {
            "properties": {
                "name": _KEYWORD,
                "status": _KEYWORD,
                "started_at": _DATE,
                "finished_at": _DATE,
                "duration_ms": _DOUBLE,
                "error": _TEXT,
            }
        },
    }
}

LOGS_MAPPING: dict[str, Any] = {
    "properties": {
        **{
            name: _KEYWORD
            for name in ("doc_id", "run_id", "step", "service", "version", "correlation_id")
        },
        "level": _KEYWORD,
        "timestamp": _DATE,
        "message": _TEXT,
        "attempt": _INT,
        "seq": {"type": "long"},
    }
}


def install_templates(client: Elasticsearch, config: EsConfig) -> None:
    """Install (or update) the index templates of the runs and logs indices (idempotent)."""
    for alias, mapping in ((config.runs_alias, RUNS_MAPPING), (config.logs_alias, LOGS_MAPPING)):
        client.indices.put_index_template(
            name=alias,
            index_patterns=[f"{alias}-*"],
            priority=200,
            template={"mappings": mapping, "aliases": {alias: {}}},
            meta={"managed_by": "fxray"},
        )


@contextmanager
def _unavailable_when_away() -> Iterator[None]:
    """Raise :class:`Unavailable` for errors worth retrying later: no connection, a timeout,
    a 408/429/5xx answer, or a 401/403 (the sink is refused until someone fixes its
    credentials); anything else as it is."""
    try:
        yield
    except (TransportConnectionError, ConnectionTimeout) as exc:
        raise Unavailable(f"elasticsearch unreachable: {exc}") from exc
    except ApiError as exc:
        if exc.meta.status in RETRY_STATUSES or exc.meta.status in REFUSED_SINK_STATUSES:
            raise Unavailable(f"elasticsearch answered {exc.meta.status}: {exc}") from exc
        raise


def ensure_templates(client: Elasticsearch, config: EsConfig) -> None:
    """:func:`install_templates`, raising :class:`Unavailable` if Elasticsearch is away."""
    with _unavailable_when_away():
        install_templates(client, config)


# -- writes -----------------------------------------------------------------------------------


_NOT_IN_RUN_DOCS = frozenset({"kind", "rank", "created_ts", "logs", "result"})
"""A run's logs are documents of their own, and a script's free-form result stays in the
management database (indexing it would grow the mapping with every new shape)."""


def _run_doc(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in _NOT_IN_RUN_DOCS}


def _log_doc(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("kind", "ts")}


def bulk_operations(
    config: EsConfig, records: list[dict[str, Any]], malformed: list[str] | None = None
) -> list[dict[str, Any]]:
    """The ``_bulk`` body for ops records: logs by ``doc_id``, run summaries versioned. A record
    whose fields cannot make an operation is left out (and described in ``malformed``)."""
    body: list[dict[str, Any]] = []
    for record in records:
        try:
            body.extend(_operation(config, record))
        except (AttributeError, KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
            if malformed is not None:
                doc_id = str(record.get("doc_id") if isinstance(record, dict) else None)[:80]
                malformed.append(f"{doc_id}: {type(exc).__name__}: {str(exc)[:200]}")
    return body


def _operation(config: EsConfig, record: dict[str, Any]) -> list[dict[str, Any]]:
    if record.get("state") == ops.FINAL:
        return []  # the router's record for the database; the attempt's "finished" is here
    if record.get("kind") == ops.LOG:
        index = f"{config.logs_alias}-{ops.day(float(record['ts']))}"
        return [{"index": {"_index": index, "_id": record["doc_id"]}}, _log_doc(record)]
    index = f"{config.runs_alias}-{ops.day(float(record['created_ts']))}"
    action = {
        "_index": index,
        "_id": record["run_id"],
        "version": int(record["rank"]),
        "version_type": "external_gte",
    }
    return [{"index": action}, _run_doc(record)]


@dataclass(slots=True)
class BulkOutcome:
    written: int = 0
    stale: int = 0  # run records older than the stored state (409): skipped
    rejected: list[str] = field(default_factory=list)  # permanent failures, with reasons
    malformed: list[str] = field(default_factory=list)  # records that made no operation


def write(client: Elasticsearch, config: EsConfig, records: list[dict[str, Any]]) -> BulkOutcome:
    """Bulk-write ops records. Raises :class:`Unavailable` when the batch should be written
    again later (nothing is lost: ids make rewrites idempotent)."""
    malformed: list[str] = []
    operations = bulk_operations(config, records, malformed)
    if not operations:
        return BulkOutcome(malformed=malformed)
    with _unavailable_when_away():
        answer = client.bulk(operations=operations)
    outcome = BulkOutcome(malformed=malformed)
    retry = 0
    for item in answer["items"]:
        result = next(iter(item.values()))
        status = int(result.get("status", 500))
        if status < 300:
            outcome.written += 1
        elif status == 409:
            outcome.stale += 1
        elif status in RETRY_STATUSES:
            retry += 1
        else:
            outcome.rejected.append(f"{result.get('_id')}: {status} {result.get('error')}")
    if retry:
        refused = f"{retry} of {len(answer['items'])}"
        raise Unavailable(f"elasticsearch refused {refused} records for now")
    return outcome
