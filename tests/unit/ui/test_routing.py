"""Every UI route goes through UIRoute: sign-in redirects, CSRF refusals, HTML errors, body
limits and security headers, on a small app with a fake key store (no platform)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import FastAPI, Form
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient

from fxray.api.errors import ApiError, not_found
from fxray.settings import Settings
from fxray.store import NotFound
from fxray.store.access import ApiKeyRecord
from fxray.ui.app import UIState
from fxray.ui.deps import User
from fxray.ui.routing import CONTENT_SECURITY_POLICY, body_limit, ui_router
from fxray.ui.session import SESSION_COOKIE, MemorySessionStore, new_session
from fxray.ui.templating import make_environment


class FakeKeys:
    """The one store method sessions need: a key by id."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKeyRecord] = {}

    def add(self, key_id: str, role: str, project: str | None) -> None:
        self.keys[key_id] = ApiKeyRecord(key_id, project, role, key_id, time.time(), None, False)

    def get_api_key(self, key_id: str) -> ApiKeyRecord:
        if key_id not in self.keys:
            raise NotFound(key_id)
        return self.keys[key_id]


router = ui_router()


@router.get("/thing")
def read_thing(user: User) -> HTMLResponse:
    return HTMLResponse(f"<p>hello {user.principal.role}</p>")


@router.post("/thing")
def change_thing(user: User, value: Annotated[str, Form()] = "") -> HTMLResponse:
    return HTMLResponse(f"<p>changed to {value}</p>")


@router.get("/missing")
def missing(user: User) -> HTMLResponse:
    raise not_found("service 'x'")


@router.get("/forbidden")
def forbidden(user: User) -> HTMLResponse:
    raise ApiError(403, "this needs the developer role in project 'alpha'")


@router.get("/boom")
def boom(user: User) -> HTMLResponse:
    raise RuntimeError("secret internals")


@router.post("/small")
@body_limit(100)
def small(user: User, value: Annotated[str, Form()] = "") -> HTMLResponse:
    return HTMLResponse(f"ok {len(value)}")


@pytest.fixture
def world(tmp_path: Path) -> tuple[TestClient, FakeKeys, MemorySessionStore]:
    keys = FakeKeys()
    sessions = MemorySessionStore()
    app = FastAPI()
    app.state.ui = UIState(Settings(home=tmp_path), keys, sessions, make_environment())  # type: ignore[arg-type]
    app.include_router(router)
    client = TestClient(app, base_url="http://ui.test", raise_server_exceptions=False)
    return client, keys, sessions


def _sign_in(
    client: TestClient, keys: FakeKeys, sessions: MemorySessionStore, role: str = "developer"
) -> str:
    keys.add("k1", role, "alpha")
    session = new_session("k1", "alpha", role, 3600)
    client.cookies.set(SESSION_COOKIE, sessions.create(session))
    return session.csrf_token


def test_without_a_session_pages_go_to_sign_in(world) -> None:
    client, _, _ = world
    answer = client.get("/thing?a=1", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/signin?next=%2Fthing%3Fa%3D1"
    htmx = client.get("/thing", headers={"HX-Request": "true"})
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"].startswith("/signin")
    assert client.post("/thing", data={"value": "x"}).status_code == 401


def test_a_signed_in_user_reads_and_the_headers_are_set(world) -> None:
    client, keys, sessions = world
    _sign_in(client, keys, sessions)
    answer = client.get("/thing")
    assert answer.status_code == 200 and "hello developer" in answer.text
    assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert (
        "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    )
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["cache-control"] == "no-store"


def test_a_change_needs_the_csrf_token(world) -> None:
    client, keys, sessions = world
    token = _sign_in(client, keys, sessions)
    refused = client.post("/thing", data={"value": "x"})
    assert refused.status_code == 403 and "security token" in refused.text
    assert client.post("/thing", data={"value": "x", "csrf_token": "wrong"}).status_code == 403
    by_field = client.post("/thing", data={"value": "x", "csrf_token": token})
    assert by_field.status_code == 200 and "changed to x" in by_field.text
    by_header = client.post("/thing", data={"value": "y"}, headers={"X-CSRF-Token": token})
    assert by_header.status_code == 200 and "changed to y" in by_header.text
    cross = client.post(
        "/thing", data={"value": "z", "csrf_token": token}, headers={"Origin": "http://evil.test"}
    )
    assert cross.status_code == 403


def test_a_revoked_key_ends_its_sessions(world) -> None:
    client, keys, sessions = world
    _sign_in(client, keys, sessions)
    assert client.get("/thing").status_code == 200
    record = keys.keys["k1"]
    keys.keys["k1"] = ApiKeyRecord(
        record.id, record.project, record.role, record.name, record.created_at, None, True
    )
    assert client.get("/thing", follow_redirects=False).status_code == 303
    keys.keys["k1"] = record  # the session is gone for good, not only while revoked
    assert client.get("/thing", follow_redirects=False).status_code == 303


def test_errors_are_html_pages_or_htmx_messages(world) -> None:
    client, keys, sessions = world
    _sign_in(client, keys, sessions)
    missing = client.get("/missing")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    assert "service &#39;x&#39; not found" in missing.text
    assert client.get("/forbidden").status_code == 403
    htmx = client.get("/missing", headers={"HX-Request": "true"})
    assert htmx.status_code == 404 and htmx.headers["HX-Retarget"] == "#flash"
    assert "<html" not in htmx.text
    boom = client.get("/boom")
    assert boom.status_code == 500 and "secret internals" not in boom.text


def test_a_body_over_the_routes_limit_is_refused_unread(world) -> None:
    client, keys, sessions = world
    token = _sign_in(client, keys, sessions)
    big = client.post("/small", content=b"x" * 200_000, headers={"X-CSRF-Token": token})
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: cut off while it streams
        for _ in range(10):
            yield b"x" * 20_000

    form = {"X-CSRF-Token": token, "Content-Type": "application/x-www-form-urlencoded"}
    streamed = client.post("/small", content=chunks(), headers=form)
    assert streamed.status_code == 413 and "larger than the limit" in streamed.text
    small = client.post("/small", data={"value": "abc"}, headers={"X-CSRF-Token": token})
    assert small.status_code == 200 and small.text == "ok 3"
