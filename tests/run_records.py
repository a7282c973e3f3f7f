"""Run rows as the router's record writer submits them (``insert_runs`` / ``update_runs``), for
the writer's tests."""

from __future__ import annotations

import time
from typing import Any


def pending_run(run_id: str, **fields: Any) -> dict[str, Any]:
    """A new run's row: pending, of service ``svc`` version ``svc@1``; ``fields`` override."""
    return {
        "id": run_id,
        "service": "svc",
        "version_id": "svc@1",
        "trigger_id": None,
        "event_id": f"e-{run_id}",
        "event_type": "t",
        "correlation_id": f"e-{run_id}",
        "status": "pending",
        "priority": 5,
        "attempt": 1,
        "shadow": False,
        "created_at": time.time(),
        "steps": [],
        "logs": [],
        **fields,
    }


def finished_run(run_id: str) -> dict[str, Any]:
    """The update that finishes a run: succeeded, one log line, a result."""
    return {
        "id": run_id,
        "status": "succeeded",
        "finished_at": time.time(),
        "logs": [[1.0, "INFO", "s.py", f"done {run_id}"]],
        "result": {"run": run_id},
    }
