"""/api/v1 routes: the A/B report, to compare a service's versions on the same events.

A viewer of the service's project reads it; a service of another project answers 404.
"""

from __future__ import annotations

import time

from fastapi import APIRouter

from fxray.api.auth import Caller, visible_service
from fxray.api.deps import StoreDep
from fxray.api.routes._common import Moment, ServiceName, ServiceProject, parse_moment
from fxray.api.schemas.common import VersionRef
from fxray.api.schemas.reports import ReportOut, VersionReport
from fxray.store import queries as q

router = APIRouter(tags=["runs", "services"])

REPORT_WINDOW_S = 24 * 3600.0


@router.get("/services/{name}/report")
def service_report(
    name: ServiceName,
    caller: Caller,
    store: StoreDep,
    since: Moment = None,
    until: Moment = None,
    project: ServiceProject = None,
) -> ReportOut:
    """Per version, the runs created in ``[since, until)`` (default: the last 24 hours): counts,
    error rate and duration percentiles of finished runs, to compare the versions of an A/B
    split on the same events."""
    service = visible_service(store, caller, name, "viewer", project)
    end = parse_moment(until, "until")
    end = time.time() if end is None else end
    start = parse_moment(since, "since")
    start = end - REPORT_WINDOW_S if start is None else start
    stats = q.version_report(store, service.id, start, end)
    labels = q.version_labels(store, [s.version_id for s in stats])
    return ReportOut(
        service=name,
        since=start,
        until=end,
        versions=[
            VersionReport(
                version=VersionRef(id=s.version_id, label=labels.get(s.version_id)),
                runs=s.runs,
                succeeded=s.succeeded,
                failed=s.failed,
                timed_out=s.timed_out,
                cancelled=s.cancelled,
                active=s.active,
                shadow_runs=s.shadow_runs,
                error_rate=s.error_rate,
                duration_p50_ms=s.percentile(50),
                duration_p95_ms=s.percentile(95),
            )
            for s in stats
        ],
    )
