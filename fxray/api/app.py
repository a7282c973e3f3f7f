"""The FastAPI application: ``create_app(platform)``; served by ``fxray up``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from fxray._version import __version__
from fxray.api.auth import Caller
from fxray.api.deps import dashboard_url
from fxray.api.errors import error_response, install_error_handlers
from fxray.api.metrics import install_metrics
from fxray.api.routes import (
    assets,
    catalog,
    deadletters,
    events,
    logs,
    projects,
    reports,
    runs,
    schedules,
    services,
    status,
    traces,
    triggers,
)

if TYPE_CHECKING:
    from fxray.platform import Platform

API_PREFIX = "/api/v1"

DESCRIPTION = """\
Manage an fxray installation: projects and API keys, services and their versions, triggers
(late linking, A/B weights, shadow versions), event mappings, events in (CloudEvents HTTP
binding, signed webhooks), runs (manual, cancel, priority, replay, logs), schedules, the event
catalog, traces and A/B reports.

Every endpoint but `/api/v1/health` needs an API key: `Authorization: Bearer <key>` or
`X-API-Key: <key>`. Errors are JSON: `{"error": {"code", "message", "problems"?}}`.
"""


def create_app(platform: Platform) -> FastAPI:
    """The API over a started :class:`fxray.Platform`."""
    from fxray.platform import PlatformError

    app = FastAPI(
        title="fxray",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.platform = platform
    app.state.store = platform.store
    install_error_handlers(app)
    install_metrics(app, platform)  # GET /metrics (Prometheus), request counts

    @app.exception_handler(PlatformError)
    async def _refused(_: Request, exc: PlatformError) -> JSONResponse:
        return error_response(422, str(exc))

    @app.get(f"{API_PREFIX}/health", tags=["platform"], response_model=None)
    def health() -> dict[str, Any] | JSONResponse:
        """Liveness and readiness, no key needed: 503 once the process has lost its Ray
        session (on KubeRay, a head gone for longer than Ray Client's grace period), which
        only a restart of the process mends."""
        answer = {"status": "ok", "version": __version__, "routers": len(platform.routers)}
        if not platform.ray_connected():
            return JSONResponse({**answer, "status": "ray session lost"}, status_code=503)
        return answer

    @app.get(f"{API_PREFIX}/info", tags=["platform"])
    def info(caller: Caller) -> dict[str, Any]:
        """The installation: version, instance, links (Ray's dashboard), and who is calling."""
        return {
            "version": __version__,
            "instance": platform.settings.instance,
            "event_bus": platform.settings.event_bus,
            "ray_dashboard": dashboard_url(platform),
            "caller": {"key_id": caller.key_id, "project": caller.project, "role": caller.role},
        }

    # in this order: it is the order of the OpenAPI document (and of route matching)
    for module in (
        projects,
        services,
        triggers,
        events,
        runs,
        logs,
        traces,
        reports,
        schedules,
        catalog,
        assets,
        deadletters,
        status,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    if platform.settings.ui_enabled:
        from fxray.ui import mount  # the web UI: pages at /, none in the OpenAPI document

        mount(app, platform)
    return app
