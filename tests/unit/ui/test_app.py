"""The views are found, and each plays by the rules another engineer's new view must follow:
every route through UIRoute and out of the OpenAPI document, CSRF-exempt only for sign-in,
nav entries with distinct paths."""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute

from fxray.ui.app import view_modules
from fxray.ui.nav import NavEntry
from fxray.ui.routing import UIRoute

VIEWS = view_modules()


def test_the_phase_one_views_are_found() -> None:
    names = {module.__name__.rsplit(".", 1)[-1] for module in VIEWS}
    assert {"auth", "overview", "services", "runs", "deadletters"} <= names


@pytest.mark.parametrize("module", VIEWS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_route_goes_through_uiroute_and_stays_out_of_openapi(module: object) -> None:
    routes = [r for r in module.router.routes if isinstance(r, APIRoute)]  # type: ignore[attr-defined]
    assert routes
    for route in routes:
        assert isinstance(route, UIRoute), route.path
        assert route.include_in_schema is False, route.path
        exempt = getattr(route.endpoint, "__fxray_csrf_exempt__", False)
        assert not exempt or route.path == "/signin", f"{route.path} skips the CSRF check"


def test_nav_entries_are_distinct() -> None:
    entries = [m.NAV for m in VIEWS if getattr(m, "NAV", None) is not None]
    assert all(isinstance(e, NavEntry) for e in entries)
    assert len({e.path for e in entries}) == len(entries)
    assert NavEntry("Runs", "/runs", 40).active("/runs/abc")
    assert not NavEntry("Runs", "/runs", 40).active("/runsx")
    assert NavEntry("Overview", "/", 10).active("/") and not NavEntry("O", "/", 10).active("/x")


@pytest.mark.parametrize(
    ("project", "role", "sees_admin"),
    [
        (None, "admin", True),  # a platform-wide admin
        ("shop", "admin", True),  # a project admin manages its project's keys
        ("shop", "developer", False),
        ("shop", "viewer", False),
    ],
)
def test_the_admin_entry_shows_to_admins_of_a_project_too(
    project: str | None, role: str, sees_admin: bool
) -> None:
    from fxray.api.auth import Principal
    from fxray.ui.views import admin

    principal = Principal("k1", project, role)  # type: ignore[arg-type]
    assert admin.NAV.visible_to(principal) is sees_admin
    assert NavEntry("Runs", "/runs", 40).visible_to(principal)
