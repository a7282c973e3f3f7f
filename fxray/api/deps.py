"""Request-scoped access to the platform behind the API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

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
