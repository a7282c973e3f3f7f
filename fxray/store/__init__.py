"""Management state (services, versions, triggers, runs, events) in SQL through SQLAlchemy 2.

SQLite is the embedded default; PostgreSQL plugs in by ``database_url``.
"""

from fxray.store.repository import (
    Conflict,
    NotFound,
    RunRecord,
    ServiceRecord,
    StateStore,
    TriggerRecord,
    VersionRecord,
)

__all__ = [
    "Conflict",
    "NotFound",
    "RunRecord",
    "ServiceRecord",
    "StateStore",
    "TriggerRecord",
    "VersionRecord",
]
