"""The route class every UI page and partial goes through.

:func:`ui_router` gives a view module its ``APIRouter``: routes left out of the OpenAPI
document, and each request handled by :class:`UIRoute`, which

1. caps the request body (``body_limit``; 1 MiB unless a route asks for more) before anything
   reads it;
2. finds the signed-in user (``request.state.ui_user``);
3. refuses a state-changing request without the session's CSRF token or from another site
   (403), unless the route is :func:`csrf_exempt` (sign-in checks its own token);
4. turns errors into HTML: no session -> the sign-in page (htmx: ``HX-Redirect``); the API's
   :class:`ApiError` (404 for another project's ids, 403 for a role too low, 409, 422 with its
   problems) and the platform's refusals -> an error page, or for htmx a message fragment;
5. adds the security headers (a Content-Security-Policy without inline scripts, no framing).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse
from starlette.types import Message, Receive

from fxray.api.errors import ApiError
from fxray.api.uploads import FORM_OVERHEAD
from fxray.events.cloudevent import EventTooLarge, InvalidEvent
from fxray.services import PackageError, ParameterError
from fxray.store import Conflict, NotFound
from fxray.ui import csrf
from fxray.ui.deps import SignInRequired, authenticate
from fxray.ui.templating import is_htmx, render

log = logging.getLogger("fxray.ui")

DEFAULT_BODY_LIMIT = 1024 * 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
BodyLimit = int | Callable[[Request], int]


def csrf_exempt(endpoint: Endpoint) -> Endpoint:
    """Mark a route that checks its own CSRF token (sign-in, which has no session yet)."""
    endpoint.__fxray_csrf_exempt__ = True  # type: ignore[attr-defined]
    return endpoint


def body_limit(limit: BodyLimit) -> Callable[[Endpoint], Endpoint]:
    """Let a route take a larger body than :data:`DEFAULT_BODY_LIMIT` (e.g. an upload)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.__fxray_body_limit__ = limit  # type: ignore[attr-defined]
        return endpoint

    return mark


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than the limit of {limit} bytes")


def _capped(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit + FORM_OVERHEAD:
                raise BodyTooLarge(limit)
        return message

    return capped


def sign_in_redirect(request: Request) -> Response:
    """Where a request without a session goes: the sign-in page, then back here."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = "/signin" if target == "/" else f"/signin?next={quote(target, safe='')}"
    if is_htmx(request):
        return Response(status_code=401, headers={"HX-Redirect": location})
    if request.method in csrf.SAFE_METHODS:
        return RedirectResponse(location, status_code=303)
    return error_page(request, 401, "sign in first: your session has ended")


def error_page(
    request: Request, status: int, message: str, problems: list[Any] | None = None
) -> Response:
    """An error as a page, or as a message fragment for htmx (swapped into ``#flash``)."""
    state = request.app.state.ui
    user = getattr(request.state, "ui_user", None)
    context = {
        "status": status,
        "message": message,
        "problems": [_problem_text(p) for p in problems or []],
        "user": user,
        "csrf_token": user.csrf_token if user is not None else None,
    }
    if is_htmx(request):  # into the page's message area, whatever the request's target
        headers = {"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        return render(state.templates, request, "_error_flash.html", context, status, headers)
    return render(state.templates, request, "error.html", context, status=status)


def _problem_text(problem: Any) -> str:
    if isinstance(problem, dict):
        where = problem.get("location")
        message = str(problem.get("message", problem))
        return f"{where}: {message}" if where else message
    return str(problem)


def _validation_problems(exc: RequestValidationError) -> list[str]:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        problems.append(f"{where}: {error.get('msg', 'invalid')}" if where else error["msg"])
    return problems


def _platform_error() -> type[Exception]:
    from fxray.platform import PlatformError  # the platform imports the API's neighbours

    return PlatformError


class UIRoute(APIRoute):
    """See the module's docstring."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        exempt = getattr(self.endpoint, "__fxray_csrf_exempt__", False)
        limit: BodyLimit = getattr(self.endpoint, "__fxray_body_limit__", DEFAULT_BODY_LIMIT)

        async def handle(request: Request) -> Response:
            try:
                response = await self._guarded(request, handler, exempt, limit)
            except Exception as exc:  # every error a page: none reaches the API's JSON handlers
                response = self._error(request, exc)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return handle

    async def _guarded(
        self,
        request: Request,
        handler: Callable[[Request], Awaitable[Response]],
        exempt: bool,
        limit: BodyLimit,
    ) -> Response:
        most = limit(request) if callable(limit) else limit
        if request.method not in csrf.SAFE_METHODS:
            declared = request.headers.get("content-length")
            if declared is not None and (
                not declared.isdigit() or int(declared) > most + FORM_OVERHEAD
            ):
                raise BodyTooLarge(most)
            request = Request(request.scope, _capped(request.receive, most))
        user = await run_in_threadpool(authenticate, request)
        request.state.ui_user = user
        if request.method not in csrf.SAFE_METHODS and not exempt:
            if user is None:
                raise SignInRequired
            await csrf.check(request, user.csrf_token)
        return await handler(request)

    def _error(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, SignInRequired):
            return sign_in_redirect(request)
        if isinstance(exc, csrf.CsrfRefused):
            return error_page(request, 403, f"refused: {exc}; reload the page and try again")
        if isinstance(exc, ApiError):
            return error_page(request, exc.status, exc.message, exc.problems)
        if isinstance(exc, BodyTooLarge) or isinstance(exc.__cause__, BodyTooLarge):
            # (FastAPI reports a body that failed to read as a 400 caused by our error)
            return error_page(
                request, 413, str(exc if isinstance(exc, BodyTooLarge) else exc.__cause__)
            )
        if isinstance(exc, RequestValidationError):
            return error_page(request, 422, "the form is invalid", _validation_problems(exc))
        if isinstance(exc, NotFound):
            return error_page(request, 404, str(exc).strip("'\""))
        if isinstance(exc, Conflict):
            return error_page(request, 409, str(exc))
        if isinstance(exc, PackageError):
            return error_page(request, 422, "the service package is invalid", list(exc.problems))
        if isinstance(exc, ParameterError):
            return error_page(request, 422, "the parameters are invalid", list(exc.problems))
        if isinstance(exc, InvalidEvent):
            return error_page(request, 413 if isinstance(exc, EventTooLarge) else 422, str(exc))
        if isinstance(exc, _platform_error()):
            return error_page(request, 422, str(exc))
        if isinstance(exc, HTTPException):
            return error_page(request, exc.status_code, str(exc.detail))
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_page(request, 500, "internal error; the server log has the details")


def ui_router() -> APIRouter:
    """The router of one view module: UI routes, none of them in the OpenAPI document."""
    return APIRouter(route_class=UIRoute, include_in_schema=False)


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking platform or store work off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)
