"""A SQLite state store with two projects and a run row maker, for the read queries' tests
(the API's in tests/unit/store, the UI's in tests/unit/ui)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fxray.store import StateStore


def two_project_store(folder: Path) -> StateStore:
    """Projects ``alpha`` (service ``svc-a``, versions v1 and v2) and ``beta`` (``svc-b``)."""
    state = StateStore(f"sqlite:///{folder / 'state.db'}")
    for project in ("alpha", "beta"):
        state.create_project(project)
    state.upsert_service("svc-a", project="alpha")
    state.upsert_service("svc-b", project="beta")
    state.add_version("alpha.svc-a", "a" * 64, {"name": "svc-a"}, label="v1")
    state.add_version("alpha.svc-a", "b" * 64, {"name": "svc-a"}, label="v2")
    state.add_version("beta.svc-b", "c" * 64, {"name": "svc-b"})
    return state


def run_row(**fields: Any) -> dict[str, Any]:
    """A finished run of ``alpha.svc-a`` as the record writer inserts it; ``fields`` override."""
    return {
        "id": str(uuid.uuid4()),
        "service": "alpha.svc-a",
        "version_id": "alpha.svc-a@aaaaaaaaaaaa",
        "trigger_id": "t1",
        "event_id": str(uuid.uuid4()),
        "event_type": "demo.go",
        "correlation_id": "c1",
        "status": "succeeded",
        "priority": 5,
        "attempt": 1,
        "shadow": False,
        "created_at": 100.0,
        "started_at": None,
        "finished_at": None,
        "steps": [],
        "logs": [],
        "result": None,
        **fields,
    }
