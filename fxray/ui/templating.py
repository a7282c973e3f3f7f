"""Jinja2 templates of the web UI: autoescape on for every template, so names, event data and
log lines containing markup are shown as text, never run. Nothing is marked ``|safe``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse

TEMPLATES = Path(__file__).resolve().parent / "templates"


def when(stamp: float | None) -> str:
    """Epoch seconds as ``2025-01-31 12:00:03`` (UTC); ``-`` for none."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso(stamp: float | None) -> str:
    """Epoch seconds as ISO 8601 (for ``<time datetime>``)."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="milliseconds")


def ago(stamp: float | None, now: float | None = None) -> str:
    """How long ago: ``12 s``, ``5 min``, ``3 h``, ``2 d``."""
    if stamp is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - stamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def milliseconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.1f} ms"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def query(params: dict[str, Any] | None = None, **changes: Any) -> str:
    """``?a=1&b=2`` from ``params`` updated with ``changes``; empty and None values dropped."""
    merged = {**(params or {}), **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in merged.items():
        values = value if isinstance(value, list | tuple) else [value]
        pairs += [(key, str(v)) for v in values if v not in (None, "")]
    return "?" + urlencode(pairs) if pairs else ""


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=when, iso=iso, ago=ago, ms=milliseconds, percent=percent, pretty_json=pretty_json
    )
    env.globals.update(query=query)
    return env


def render(
    env: Environment,
    request: Request,
    name: str,
    context: dict[str, Any],
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """Render template ``name`` with ``context`` plus what every page needs."""
    base = {
        "request": request,
        "path": request.url.path,
        "nav": request.app.state.ui.nav_for(context.get("user")),
        "htmx": request.headers.get("hx-request") == "true",
        "csrf_token": None,
        "user": None,
    }
    html = env.get_template(name).render({**base, **context})
    return HTMLResponse(html, status_code=status, headers=headers)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """:func:`render` with the UI's templates (what views call)."""
    return render(request.app.state.ui.templates, request, name, context, status=status)


def is_htmx(request: Request) -> bool:
    """Did htmx send this request (answer with a partial, not a page or a redirect)?"""
    return request.headers.get("hx-request") == "true"


def render_fragment(env: Environment, name: str, context: dict[str, Any]) -> str:
    """A partial template as a string (for SSE messages)."""
    return env.get_template(name).render(context)
