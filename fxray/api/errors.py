"""One JSON shape for every error the API returns.

``{"error": {"code": "...", "message": "...", "problems": [...]}}`` with the right status:
422 for invalid input (every problem listed), 401/403 for access, 404, 409 for conflicts.
A bug answers 500 with a generic message (the details go to the server log, not the client).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fxray.events.cloudevent import EventTooLarge, InvalidEvent
from fxray.services import PackageError
from fxray.store import Conflict, NotFound

log = logging.getLogger("fxray.api")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    500: "internal",
}


class ApiError(Exception):
    """Raise from a route to answer ``status`` with a message (and optional problem list)."""

    def __init__(self, status: int, message: str, problems: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = problems or []


def invalid(message: str, problems: list[Any] | None = None) -> ApiError:
    return ApiError(422, message, problems)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found")


def error_body(status: int, message: str, problems: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": _CODES.get(status, "error"), "message": message}
    if problems:
        error["problems"] = problems
    return {"error": error}


def error_response(
    status: int,
    message: str,
    problems: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, problems), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.problems)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"location": _location(e.get("loc", ())), "message": e.get("msg", "invalid")}
            for e in exc.errors()
        ]
        return error_response(422, "the request is invalid", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error_response(404, str(exc).strip("'\""))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error_response(409, str(exc))

    @app.exception_handler(InvalidEvent)
    async def _invalid_event(_: Request, exc: InvalidEvent) -> JSONResponse:
        # what Platform.publish refuses: an event over the platform's limits
        return error_response(413 if isinstance(exc, EventTooLarge) else 422, str(exc))

    @app.exception_handler(PackageError)
    async def _package(_: Request, exc: PackageError) -> JSONResponse:
        return error_response(422, "the service package is invalid", list(exc.problems))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error; the server log has the details")
