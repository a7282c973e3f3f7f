"""Upload size limits: refuse a too-large body before reading it, or as soon as it streams
past the limit, never after buffering it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from fxray.api.errors import ApiError

if TYPE_CHECKING:
    from fxray.settings import Settings

Limit = int | Callable[[Request], int]
"""A byte limit, or a function of the request that gives it (e.g. from the settings)."""

FORM_OVERHEAD = 64 * 1024
"""Room for the multipart framing and the form's other fields around the file."""


def too_large(limit: int, what: str = "upload") -> ApiError:
    return ApiError(413, f"the {what} is larger than the limit of {limit} bytes")


def settings_of(request: Request) -> Settings:
    """The settings of the platform behind the API."""
    return request.app.state.platform.settings


def limited_body(limit: Limit, what: str = "upload") -> type[APIRoute]:
    """A route class whose request body may carry at most ``limit`` bytes of file (read per
    request when ``limit`` is a function): a larger Content-Length is refused (413) before
    anything is read, and a body streamed past the limit is cut off (413)."""

    class LimitedBody(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                most = limit(request) if callable(limit) else limit
                cap = most + FORM_OVERHEAD
                declared = request.headers.get("content-length")
                if declared is not None:
                    if not declared.isdigit():
                        raise ApiError(400, "the Content-Length header is not a number")
                    if int(declared) > cap:
                        raise too_large(most, what)
                capped = _capped(request.receive, most, cap)
                return await handler(Request(request.scope, capped))

            return limited

    def _capped(receive: Receive, most: int, cap: int) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # an HTTPException passes through FastAPI's body parsing unchanged
                    raise HTTPException(413, too_large(most, what).message)
            return message

        return capped

    return LimitedBody
