"""Web UI fixtures: a platform as a real installation runs it (PostgreSQL, Kafka, the ops sink
writing to Elasticsearch, so logs stream while runs go on) behind the API app, served by
uvicorn on a free loopback port in a thread, and Debian's Chromium driven by Playwright.

One server and one browser for the whole session (starting them takes seconds); tests stay
independent by making their own projects, keys and services (:meth:`UIServer.project`).
A missing Chromium fails under CI or ``FXRAY_REQUIRE_SERVERS``, and skips otherwise.
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import uvicorn
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from fxray import Platform, Settings
from fxray.api import create_app
from tests.integration.api.conftest import database_url
from tests.integration.ops.conftest import BOOTSTRAP, ES_COMPAT, ES_URL, require

CHROMIUM = os.environ.get("FXRAY_TEST_CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[3] / "docs" / "ui"
LAPTOP = {"width": 1280, "height": 860}
TABLET = {"width": 820, "height": 1180}
WAIT_MS = 30_000
DASHBOARD = "http://127.0.0.1:8265"


@dataclass
class Keys:
    """A fresh project and one API key (token) per role."""

    project: str
    viewer: str
    developer: str
    admin: str


@dataclass
class UIServer:
    url: str
    platform: Platform
    admin: str  # a platform-wide admin key

    def project(self, prefix: str = "ui") -> Keys:
        store = self.platform.store
        assert store is not None
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        store.create_project(name)
        tokens = {
            role: store.create_api_key(f"{role} key", role, name)[1]
            for role in ("viewer", "developer", "admin")
        }
        return Keys(name, **tokens)

    def deploy(self, keys: Keys, name: str, scripts: dict[str, str], **manifest: Any) -> str:
        """Deploy a service into ``keys.project``; returns its service id."""
        data = service_zip(name, scripts, **manifest)
        return self.platform.deploy(data, project=keys.project).service.id


def service_zip(name: str, scripts: dict[str, str], **manifest: Any) -> bytes:
    """A service package as zip bytes: ``scripts`` maps file names to their text."""
    steps = [f for f in scripts if f.endswith(".py")]
    body = {"name": name, "execution_order": steps, **manifest}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("manifest.json", json.dumps(body))
        for file_name, text in scripts.items():
            zf.writestr(file_name, text)
    return out.getvalue()


def unique(prefix: str = "svc") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ui_server(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    bootstrap = require(BOOTSTRAP, "FXRAY_KAFKA_BOOTSTRAP")
    es_url = require(ES_URL, "FXRAY_TEST_ES_URL")
    folder = tmp_path_factory.mktemp("ui")
    url, drop = database_url("postgresql", folder)
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        home=folder / "home",
        instance=f"ui{tag}",
        database_url=url,
        executors_max_per_version=1,
        event_bus="kafka",
        kafka_bootstrap=bootstrap,
        events_topic=f"fx.ui.events.{tag}",
        deadletter_topic=f"fx.ui.dlq.{tag}",
        ops_runs_topic=f"fx.ui.ops.runs.{tag}",
        ops_logs_topic=f"fx.ui.ops.logs.{tag}",
        ops_sink="elasticsearch",
        es_url=es_url,
        es_compat=ES_COMPAT,
        ops_index_prefix=f"ui{tag}",
        ray_dashboard_url=DASHBOARD,  # the test Ray runs no dashboard; the link is what counts
    )
    platform = Platform(settings).start()
    assert platform.store is not None
    _, admin = platform.store.create_api_key("ui test admin", "admin", None)
    port = _free_port()
    config = uvicorn.Config(
        create_app(platform), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="ui-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the UI server did not start"
        time.sleep(0.05)
    try:
        yield UIServer(f"http://127.0.0.1:{port}", platform, admin)
    finally:
        server.should_exit = True
        thread.join(30)
        platform.stop()
        if drop is not None:
            drop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        what = f"no Chromium at {CHROMIUM} (scripts/testinfra.sh up installs Debian's chromium)"
        if os.environ.get("FXRAY_REQUIRE_SERVERS") or os.environ.get("CI") == "true":
            pytest.fail(what, pytrace=False)
        pytest.skip(what)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[..., Page]]:
    """Pages in fresh browser contexts (own cookies); each records script errors."""
    contexts = []

    def make(viewport: dict[str, int] | None = None) -> Page:
        context = browser.new_context(viewport=viewport or LAPTOP)
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


def sign_in(page: Page, server: UIServer, token: str, next_path: str = "/") -> None:
    """Sign in through the form; ends on ``next_path``."""
    page.goto(f"{server.url}/signin?next={quote(next_path, safe='')}")
    page.get_by_label("API key").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}{next_path}")


def csrf_token(page: Page) -> str:
    """The session's CSRF token, as the page carries it for htmx."""
    headers = page.locator("body").get_attribute("hx-headers")
    assert headers, "the page has no CSRF header"
    return json.loads(headers)["X-CSRF-Token"]


def screenshot(page: Page, name: str, secrets: Sequence[Locator] = ()) -> Path:
    """A PNG of the whole page into docs/ui/ (docs/ui.md shows them); ``secrets`` (API keys
    shown once, for example) are painted over, so no real-looking secret lands in the docs."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    for secret in secrets:
        expect(secret).to_be_visible()  # a mask over nothing would hide nothing
    page.screenshot(path=str(path), full_page=True, mask=list(secrets), mask_color="#444")
    return path


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not met in {timeout:.0f}s"
        time.sleep(0.1)
