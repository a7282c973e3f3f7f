"""CSRF protection of the web UI.

Every request that changes state (any method but GET, HEAD and OPTIONS) must carry the
session's CSRF token, in the ``X-CSRF-Token`` header (htmx sends it on every request: the
base template puts it in ``hx-headers``) or in a ``csrf_token`` form field (plain forms), and
must not come from another site (``Origin`` / ``Sec-Fetch-Site``). :mod:`fxray.ui.routing`
checks this before any handler runs.

The sign-in form has no session yet: it carries a random token that must match a short-lived
``SameSite=Strict`` cookie set with the form (a double-submit token), so another site cannot
sign a browser in with the attacker's key.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from fxray.ui.session import is_https

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SIGNIN_COOKIE = "fxray_signin"
SIGNIN_TTL_S = 3600
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class CsrfRefused(Exception):
    """A state-changing request without the right CSRF token, or from another site."""


def tokens_match(expected: str | None, given: str | None) -> bool:
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def same_site(request: Request) -> bool:
    """False if the browser says the request comes from another site."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin != "null" and urlsplit(origin).netloc == host


async def submitted_token(request: Request) -> str | None:
    """The CSRF token a request carries: its header, else its form field."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").startswith(_FORM_TYPES):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check(request: Request, expected: str | None) -> None:
    """Raise :class:`CsrfRefused` unless the request is same-site and carries ``expected``."""
    if not same_site(request):
        raise CsrfRefused("the request comes from another site")
    if not tokens_match(expected, await submitted_token(request)):
        raise CsrfRefused("the form's security token is missing or wrong")


def new_signin_token() -> str:
    return secrets.token_urlsafe(24)


def set_signin_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        SIGNIN_COOKIE,
        token,
        max_age=SIGNIN_TTL_S,
        path="/signin",
        httponly=True,
        samesite="strict",
        secure=is_https(request),
    )


def clear_signin_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        SIGNIN_COOKIE, path="/signin", httponly=True, samesite="strict", secure=is_https(request)
    )
