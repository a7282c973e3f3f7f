"""The UI sits next to the API without changing it: the same routes and OpenAPI document with
or without it, and the API's answers stay JSON."""

from __future__ import annotations

import httpx
import pytest

from fxray.api import create_app
from tests.integration.ui.conftest import UIServer


def test_the_openapi_document_is_the_same_without_the_ui(
    ui_server: UIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_ui = create_app(ui_server.platform)
    monkeypatch.setattr(ui_server.platform.settings, "ui_enabled", False)
    without_ui = create_app(ui_server.platform)
    assert with_ui.openapi() == without_ui.openapi()
    assert not any(path == "/" or path.startswith("/runs") for path in with_ui.openapi()["paths"])
    api_paths = {getattr(r, "path", None) for r in without_ui.routes}
    assert api_paths <= {getattr(r, "path", None) for r in with_ui.routes}


def test_the_api_still_answers_json_next_to_the_pages(ui_server: UIServer) -> None:
    unauthorised = httpx.get(f"{ui_server.url}/api/v1/runs", timeout=10)
    assert unauthorised.status_code == 401
    assert unauthorised.json()["error"]["code"] == "unauthorized"
    page = httpx.get(f"{ui_server.url}/runs", timeout=10)
    assert page.status_code == 303 and page.headers["location"] == "/signin?next=%2Fruns"
    assert "content-security-policy" not in unauthorised.headers
    static = httpx.get(f"{ui_server.url}/static/htmx.min.js", timeout=10)
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]
