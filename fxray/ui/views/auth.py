"""Sign-in with an API key (starts a cookie session) and sign-out (ends it)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from fxray.ui import csrf
from fxray.ui.deps import StoreDep, ui_state
from fxray.ui.routing import csrf_exempt, ui_router
from fxray.ui.session import clear_session_cookie, new_session, set_session_cookie
from fxray.ui.templating import render

router = ui_router()

NAV = None  # the nav bar carries the sign-out button, not a link


def safe_next(target: str | None) -> str:
    """Where to go after sign-in: a path on this site only (never another host)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or len(target) > 2000
        or target.startswith("/signin")
    ):
        return "/"
    return target


def _form(request: Request, next_path: str, error: str | None, status: int = 200) -> Response:
    token = csrf.new_signin_token()
    response = render(
        ui_state(request).templates,
        request,
        "auth/signin.html",
        {"next": next_path, "error": error, "signin_token": token},
        status=status,
    )
    csrf.set_signin_cookie(response, request, token)
    return response


@router.get("/signin")
def signin_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> Response:
    if getattr(request.state, "ui_user", None) is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _form(request, safe_next(next), None)


@router.post("/signin")
@csrf_exempt
def signin(
    request: Request,
    store: StoreDep,
    api_key: Annotated[str, Form(max_length=512)] = "",
    signin_token: Annotated[str, Form(max_length=128)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    """Check the sign-in form's own token, then the key; start a session on success."""
    target = safe_next(next)
    if not csrf.same_site(request) or not csrf.tokens_match(
        request.cookies.get(csrf.SIGNIN_COOKIE), signin_token
    ):
        return _form(request, target, "The sign-in form expired: try again.", status=403)
    key = store.authenticate(api_key.strip()) if api_key.strip() else None
    if key is None:
        return _form(request, target, "That API key is not valid (unknown or revoked).", 401)
    state = ui_state(request)
    ttl = state.settings.ui_session_ttl_s
    session_id = state.sessions.create(new_session(key.id, key.project, key.role, ttl))
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, request, session_id, ttl)
    csrf.clear_signin_cookie(response, request)
    return response


@router.post("/signout")
def signout(request: Request) -> Response:
    """End the session (the CSRF check already ran: a forged sign-out is refused)."""
    user = request.state.ui_user
    ui_state(request).sessions.delete(user.session_id)
    response = RedirectResponse("/signin", status_code=303)
    if request.headers.get("hx-request") == "true":
        response = Response(status_code=204, headers={"HX-Redirect": "/signin"})
    clear_session_cookie(response, request)
    return response
