"""What several route modules share: the route parameters of runs, logs and reports, time
arguments, service names by id, the run lookup with its access check, and a run row's log
lines."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Path, Query

from fxray.api.auth import Principal, Role, require_project
from fxray.api.errors import invalid, not_found
from fxray.api.schemas.common import NAME_PATTERN, NO_NUL
from fxray.api.schemas.logs import LogLineOut
from fxray.runtime.runs import RunStatus
from fxray.store import NotFound, StateStore
from fxray.store import queries as q

FINAL = frozenset(s.value for s in RunStatus if s.is_final)
"""The statuses of a run that is over."""

ServiceName = Annotated[
    str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="The service's name")
]
ServiceProject = Annotated[
    str | None,
    Query(
        pattern=NAME_PATTERN,
        description="The service's project: platform-wide keys name it where the service's "
        "name is in several projects (a project key's own project is the default)",
    ),
]
RunId = Annotated[
    str, Path(min_length=1, max_length=64, pattern=NO_NUL, description="The run's id")
]
Moment = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=NO_NUL,
        description="Epoch seconds (e.g. 1735689600.5) or ISO 8601 (e.g. 2025-01-01T00:00:00Z;"
        " without a zone: UTC)",
    ),
]


def parse_moment(value: str | None, name: str) -> float | None:
    """Epoch seconds or ISO 8601 as epoch seconds; 422 if neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(number):
            return number
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise invalid(
            "the request is invalid",
            [{"location": f"query.{name}", "message": "expected epoch seconds or ISO 8601"}],
        ) from None


def service_names(store: StateStore, service_ids: Iterable[str]) -> dict[str, str]:
    """``{service id: name}`` (the name its project knows it by) for those that exist."""
    return {sid: key.name for sid, key in q.service_keys(store, service_ids).items()}


def visible_run(store: StateStore, caller: Principal, run_id: str, role: Role) -> q.RunView:
    """The run ``run_id`` after the access check (404 for a run of another project)."""
    try:
        view = q.get_run(store, run_id)
    except NotFound:
        raise not_found(f"run {run_id!r}") from None
    require_project(caller, view.project, role, f"run {run_id!r}")
    return view


def _log_line(index: int, line: Any) -> LogLineOut:
    parts = list(line) if isinstance(line, list | tuple) else [None, "INFO", "", line]
    parts += [None] * (4 - len(parts))
    stamp, level, step, message = parts[:4]
    return LogLineOut(
        index=index,
        time=float(stamp) if isinstance(stamp, int | float) else 0.0,
        level=str(level or ""),
        step=str(step or ""),
        message=str(message if message is not None else ""),
    )


def log_lines(
    logs: list[Any], levels: list[str] | None, step: str | None, start: int = 0
) -> list[LogLineOut]:
    """The lines of a run row's log from index ``start``, of ``levels`` and ``step`` if given."""
    lines = (_log_line(i, line) for i, line in enumerate(logs) if i >= start)
    return [
        line
        for line in lines
        if (not levels or line.level in levels) and (step is None or line.step == step)
    ]
