"""Management state in SQL through SQLAlchemy 2: services, versions, triggers, runs, events,
and the Management API's projects, API keys, webhooks, mappings, schedules and event catalog.

SQLite is the embedded default; PostgreSQL plugs in by ``database_url``. The schema is made
and upgraded by Alembic migrations (:func:`migrate`, or at a store's first use);
:func:`revision` reads where a database is.
"""

from fxray.store.access import ApiKeyRecord, ProjectRecord, WebhookRecord
from fxray.store.catalog import EventTypeObservation, EventTypeRecord, SchemaChangeRecord
from fxray.store.common import (
    Conflict,
    NotFound,
    database_unavailable,
    describe_error,
)
from fxray.store.mappings import MappingRecord
from fxray.store.records import (
    RoutingSnapshot,
    RunRecord,
    ServiceRecord,
    TriggerRecord,
    VersionRecord,
)
from fxray.store.repositories import RepositoryRecord as RepositoryRecord
from fxray.store.repository import StateStore, migrate, revision
from fxray.store.schedules import ScheduleRecord

__all__ = [
    "ApiKeyRecord",
    "Conflict",
    "EventTypeObservation",
    "EventTypeRecord",
    "MappingRecord",
    "NotFound",
    "ProjectRecord",
    "RoutingSnapshot",
    "RunRecord",
    "ScheduleRecord",
    "SchemaChangeRecord",
    "ServiceRecord",
    "StateStore",
    "TriggerRecord",
    "VersionRecord",
    "WebhookRecord",
    "database_unavailable",
    "describe_error",
    "migrate",
    "revision",
]
