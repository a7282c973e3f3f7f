"""Request-scoped access to the platform behind the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import ray
import ray._private.worker
from fastapi import Depends, Request

from fxray.store import StateStore

if TYPE_CHECKING:
    from fxray.platform import Platform


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _store(request: Request) -> StateStore:
    return request.app.state.store


PlatformDep = Annotated["Platform", Depends(_platform)]
StoreDep = Annotated[StateStore, Depends(_store)]


def dashboard_url(platform: Platform) -> str | None:
    """Ray's dashboard: ``ray_dashboard_url`` if set, else what Ray reports (None if none)."""
    if platform.settings.ray_dashboard_url:
        return platform.settings.ray_dashboard_url
    try:
        url = ray._private.worker.get_dashboard_url() if ray.is_initialized() else None
    except Exception:  # no dashboard (include_dashboard=False) or an older Ray
        return None
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"
