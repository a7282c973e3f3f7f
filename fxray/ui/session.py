"""Cookie sessions of the web UI.

Signing in with an API key starts a session: a random session id goes to the browser in an
``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over https) and the server keeps the
session's record (key id, project, role, CSRF token, expiry) under the id's sha256, so a
leaked store holds no usable cookie. Sessions end at their expiry (``ui_session_ttl_s``, from
sign-in, not extended by use), at sign-out (the record is deleted), or when their API key is
revoked (checked on every request by :mod:`fxray.ui.deps`).

:class:`KVSessionStore` keeps the records in the platform's key/value store (a local SQLite
file or Consul), so several API processes share them and they survive a restart;
:class:`MemorySessionStore` keeps them in one process (tests).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from fxray.kv import ROOT, KVStore

SESSION_COOKIE = "fxray_session"
SESSIONS_PREFIX = f"{ROOT}/ui/sessions/"
PRUNE_EVERY_S = 600.0


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: whose key it is, with what role where, until when."""

    key_id: str
    project: str | None  # None: a platform-wide key
    role: str
    csrf_token: str
    created_at: float
    expires_at: float

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Session | None:
        """The session in ``raw``, or None if it is not a session record."""
        try:
            data = json.loads(raw)
            return cls(
                key_id=str(data["key_id"]),
                project=None if data["project"] is None else str(data["project"]),
                role=str(data["role"]),
                csrf_token=str(data["csrf_token"]),
                created_at=float(data["created_at"]),
                expires_at=float(data["expires_at"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def new_session(key_id: str, project: str | None, role: str, ttl_s: float) -> Session:
    now = time.time()
    return Session(key_id, project, role, secrets.token_urlsafe(32), now, now + ttl_s)


def digest(session_id: str) -> str:
    """What a session is stored under: the sha256 of its id (the id has 256 random bits)."""
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore(Protocol):
    """Where session records live, keyed by session id."""

    def create(self, session: Session) -> str:
        """Store ``session`` under a new random id; returns the id (the cookie's value)."""
        ...

    def get(self, session_id: str) -> Session | None:
        """The unexpired session of ``session_id``, or None."""
        ...

    def delete(self, session_id: str) -> None: ...


class MemorySessionStore:
    """Sessions in this process only."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._sessions = {k: s for k, s in self._sessions.items() if not s.expired(now)}
            self._sessions[digest(session_id)] = session
        return session_id

    def get(self, session_id: str) -> Session | None:
        with self._lock:
            session = self._sessions.get(digest(session_id))
        return session if session is not None and not session.expired() else None

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(digest(session_id), None)


class KVSessionStore:
    """Sessions in the platform's key/value store, under ``fxray/ui/sessions/<sha256>``.

    Expired records are deleted when read, and all of them at most every
    :data:`PRUNE_EVERY_S` when someone signs in.
    """

    def __init__(self, kv: KVStore) -> None:
        self._kv = kv
        self._pruned_at = 0.0

    def create(self, session: Session) -> str:
        session_id = secrets.token_urlsafe(32)
        self._kv.put(SESSIONS_PREFIX + digest(session_id), session.to_json())
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            self.prune()
        return session_id

    def get(self, session_id: str) -> Session | None:
        key = SESSIONS_PREFIX + digest(session_id)
        entry = self._kv.get(key)
        if entry is None:
            return None
        session = Session.from_json(entry.value)
        if session is None or session.expired():
            self._kv.delete(key, cas=entry.modify_index)
            return None
        return session

    def delete(self, session_id: str) -> None:
        self._kv.delete(SESSIONS_PREFIX + digest(session_id))

    def prune(self) -> int:
        """Delete expired (and unreadable) records; returns how many."""
        now = time.time()
        gone = 0
        for entry in self._kv.list(SESSIONS_PREFIX):
            session = Session.from_json(entry.value)
            if session is None or session.expired(now):
                self._kv.delete(entry.key, cas=entry.modify_index)
                gone += 1
        return gone


def session_id_of(request: Request) -> str | None:
    """The session id the browser sent, if it looks like one."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value or len(value) > 128:
        return None
    return value


def is_https(request: Request) -> bool:
    """Served over https (uvicorn sets the scheme; behind a proxy: ``--proxy-headers``)."""
    return request.scope.get("scheme") in ("https", "wss")


def set_session_cookie(response: Response, request: Request, session_id: str, ttl_s: float) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(ttl_s),
        path="/",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=is_https(request)
    )
