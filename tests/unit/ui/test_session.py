"""Cookie sessions: records kept under the id's hash, expiry, sign-out, cookie flags."""

from __future__ import annotations

import time

import pytest
from starlette.requests import Request
from starlette.responses import Response

from fxray.kv.local import InMemoryKV
from fxray.ui.session import (
    SESSION_COOKIE,
    SESSIONS_PREFIX,
    KVSessionStore,
    MemorySessionStore,
    Session,
    clear_session_cookie,
    digest,
    new_session,
    set_session_cookie,
)


def _request(scheme: str = "http") -> Request:
    return Request({"type": "http", "scheme": scheme, "headers": [], "method": "GET", "path": "/"})


@pytest.fixture(params=["memory", "kv"])
def sessions(request: pytest.FixtureRequest) -> MemorySessionStore | KVSessionStore:
    return MemorySessionStore() if request.param == "memory" else KVSessionStore(InMemoryKV())


def test_a_session_is_found_by_its_id_until_sign_out(sessions) -> None:
    session = new_session("k1", "alpha", "developer", 3600)
    session_id = sessions.create(session)
    assert len(session_id) >= 40  # 256 random bits, URL-safe
    assert sessions.get(session_id) == session
    assert sessions.get(session_id + "x") is None
    sessions.delete(session_id)
    assert sessions.get(session_id) is None


def test_each_sign_in_gets_a_new_id_and_csrf_token(sessions) -> None:
    first = new_session("k1", None, "admin", 3600)
    second = new_session("k1", None, "admin", 3600)
    assert first.csrf_token != second.csrf_token
    assert sessions.create(first) != sessions.create(second)


def test_an_expired_session_is_gone(sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    session_id = sessions.create(new_session("k1", "alpha", "viewer", 60))
    assert sessions.get(session_id) is not None
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    assert sessions.get(session_id) is None


def test_the_kv_store_keeps_only_the_ids_hash() -> None:
    kv = InMemoryKV()
    store = KVSessionStore(kv)
    session_id = store.create(new_session("k1", "alpha", "viewer", 3600))
    keys = kv.keys(SESSIONS_PREFIX)
    assert keys == [SESSIONS_PREFIX + digest(session_id)]
    assert session_id not in keys[0]
    assert session_id.encode() not in kv.get(keys[0]).value  # type: ignore[union-attr]


def test_prune_drops_expired_and_unreadable_records() -> None:
    kv = InMemoryKV()
    store = KVSessionStore(kv)
    alive = store.create(new_session("k1", "alpha", "viewer", 3600))
    old = Session("k2", None, "admin", "t", time.time() - 100, time.time() - 1)
    kv.put(SESSIONS_PREFIX + "old", old.to_json())
    kv.put(SESSIONS_PREFIX + "junk", b"not json")
    assert store.prune() == 2
    assert kv.keys(SESSIONS_PREFIX) == [SESSIONS_PREFIX + digest(alive)]
    assert store.get(alive) is not None


def test_a_record_that_is_not_a_session_reads_as_none() -> None:
    assert Session.from_json(b'{"key_id": "k"}') is None
    assert Session.from_json(b"[1, 2]") is None
    session = new_session("k", None, "admin", 10)
    assert Session.from_json(session.to_json()) == session


@pytest.mark.parametrize(("scheme", "secure"), [("http", False), ("https", True)])
def test_the_cookie_is_httponly_strict_and_secure_over_https(scheme: str, secure: bool) -> None:
    response = Response()
    set_session_cookie(response, _request(scheme), "abc", 600)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=abc;")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=600" in cookie
    assert "Path=/" in cookie
    assert ("Secure" in cookie) is secure
    cleared = Response()
    clear_session_cookie(cleared, _request(scheme))
    assert "Max-Age=0" in cleared.headers["set-cookie"]
