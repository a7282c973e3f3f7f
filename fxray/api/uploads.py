"""Upload size limits: refuse a too-large body before reading it, or as soon as it streams
past the limit, never after buffering it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive

from fxray.api.errors import ApiError

FORM_OVERHEAD = 64 * 1024
"""Room for the multipart framing and the form's other fields around the file."""


def too_large(limit: int, what: str = "upload") -> ApiError:
    return ApiError(413, f"the {what} is larger than the limit of {limit} bytes")


def limited_body(limit: int, what: str = "upload") -> type[APIRoute]:
    """A route class whose request body may carry at most ``limit`` bytes of file: a larger
    Content-Length is refused (413) before anything is read, and a body streamed past the
    limit is cut off (413)."""
    cap = limit + FORM_OVERHEAD

    class LimitedBody(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
            handler = super().get_route_handler()

            async def limited(request: Request) -> Response:
                declared = request.headers.get("content-length")
                if declared is not None:
                    if not declared.isdigit():
                        raise ApiError(400, "the Content-Length header is not a number")
                    if int(declared) > cap:
                        raise too_large(limit, what)
                return await handler(Request(request.scope, _capped(request.receive, cap)))

            return limited

    def _capped(receive: Receive, cap: int) -> Receive:
        seen = 0

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    # an HTTPException passes through FastAPI's body parsing unchanged
                    raise HTTPException(413, too_large(limit, what).message)
            return message

        return capped

    return LimitedBody
