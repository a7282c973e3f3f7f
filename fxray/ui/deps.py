"""Who is signed in, mapped onto the management API's roles and project checks.

A session carries an API key's id; every request re-reads that key, so a revoked key ends its
sessions at once. The signed-in user is an :class:`fxray.api.auth.Principal`, so pages call the
same checks as the API routes (``require_project``: another project's resource is 404, a role
too low is 403).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from fxray.api.auth import Principal, Role, require_project
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import not_found
from fxray.store import NotFound, ServiceRecord, StateStore
from fxray.ui.session import Session, session_id_of

if TYPE_CHECKING:
    from fxray.ui.app import UIState

__all__ = ["PlatformDep", "SignInRequired", "StoreDep", "UIUser", "User", "authenticate"]


class SignInRequired(Exception):
    """No valid session: pages redirect to the sign-in form."""


@dataclass(frozen=True, slots=True)
class UIUser:
    """A signed-in browser: its API key as a :class:`Principal`, and its session."""

    principal: Principal
    session: Session
    session_id: str

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def platform_admin(self) -> bool:
        return self.principal.platform_admin

    def can(self, role: Role, project: str | None) -> bool:
        """May this user act with ``role`` in ``project``? (What pages show actions by.)"""
        return self.principal.allows(role, project)

    @property
    def may_change(self) -> bool:
        """Developer or more somewhere: whether change actions can appear at all."""
        return self.platform_admin or self.principal.role in ("developer", "admin")


def ui_state(request: Request) -> UIState:
    return request.app.state.ui


def authenticate(request: Request) -> UIUser | None:
    """The user of the request's session cookie, or None (no, unknown, expired session, or
    its API key revoked: then the session is deleted)."""
    session_id = session_id_of(request)
    if session_id is None:
        return None
    state = ui_state(request)
    session = state.sessions.get(session_id)
    if session is None:
        return None
    try:
        key = state.store.get_api_key(session.key_id)
    except NotFound:
        key = None
    if key is None or key.revoked:
        state.sessions.delete(session_id)
        return None
    principal = Principal(key.id, key.project, key.role)  # type: ignore[arg-type]
    return UIUser(principal, session, session_id)


def _require_user(request: Request) -> UIUser:
    user: UIUser | None = getattr(request.state, "ui_user", None)
    if user is None:
        raise SignInRequired
    return user


User = Annotated[UIUser, Depends(_require_user)]


def visible_service(store: StateStore, user: UIUser, service_id: str, role: Role) -> ServiceRecord:
    """The service with id ``service_id`` if the user may act on it with ``role``: 404 if there
    is none or it is in a project the user cannot see, 403 if the role is too low."""
    what = f"service {service_id!r}"
    try:
        service = store.get_service(service_id)
    except NotFound:
        raise not_found(what) from None
    require_project(user.principal, service.project, role, what)
    return service


def scope(user: UIUser, requested: str | None) -> str | None:
    """The project a list shows: the user's own, or the one a platform-wide admin picks
    (None: all). Another project asked for by a project key is 404."""
    return user.principal.scope(requested or None)


def page_context(user: UIUser) -> dict[str, Any]:
    """What every page template gets about the user."""
    return {"user": user, "csrf_token": user.csrf_token}
