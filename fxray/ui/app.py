"""Builds the web UI from its view modules and mounts it on the management API's app.

Every module in :mod:`fxray.ui.views` is a view: it has a ``router`` (from
:func:`fxray.ui.routing.ui_router`) and, if it wants a nav bar entry, ``NAV`` (a
:class:`fxray.ui.nav.NavEntry`). The views are found at start, so adding one touches no shared
file: see docs/ui.md.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from fastapi import FastAPI
from jinja2 import Environment
from starlette.staticfiles import StaticFiles

from fxray.store import StateStore
from fxray.ui import views
from fxray.ui.deps import UIUser
from fxray.ui.nav import NavEntry
from fxray.ui.session import KVSessionStore, MemorySessionStore, SessionStore
from fxray.ui.templating import make_environment

if TYPE_CHECKING:
    from fxray.platform import Platform
    from fxray.settings import Settings

STATIC = Path(__file__).resolve().parent / "static"
STATIC_PATH = "/static"


@dataclass
class UIState:
    """What the UI's routes share (``app.state.ui``)."""

    settings: Settings
    store: StateStore
    sessions: SessionStore
    templates: Environment
    nav: list[NavEntry] = field(default_factory=list)

    def nav_for(self, user: UIUser | None) -> list[NavEntry]:
        """The nav entries ``user`` sees (none before sign-in)."""
        if user is None:
            return []
        return [e for e in self.nav if e.visible_to(user.principal)]


def view_modules() -> list[ModuleType]:
    """Every module of :mod:`fxray.ui.views`, in name order."""
    found = []
    for info in sorted(pkgutil.iter_modules(views.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{views.__name__}.{info.name}"))
    return found


def mount(app: FastAPI, platform: Platform) -> None:
    """Serve the UI on ``app`` at ``/`` (its pages and ``/static``), next to the API."""
    assert platform.store is not None, "the platform must be started"
    sessions: SessionStore = (
        KVSessionStore(platform.kv) if platform.kv is not None else MemorySessionStore()
    )
    state = UIState(platform.settings, platform.store, sessions, make_environment())
    for module in view_modules():
        app.include_router(module.router)
        entry = getattr(module, "NAV", None)
        if entry is not None:
            state.nav.append(entry)
    state.nav.sort(key=lambda e: (e.order, e.label))
    app.state.ui = state
    app.mount(STATIC_PATH, StaticFiles(directory=STATIC), name="ui-static")
