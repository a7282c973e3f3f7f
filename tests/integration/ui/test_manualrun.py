"""The manual run view in a real browser: the form generated from parameters.json, an inline
error for a bad value and then a good run, "run again with these parameters" from the run's
page, a viewer who sees the form but cannot start it (403), and another project's service or
run (404)."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from fxray.router.routing import MANUAL_TRIGGER, run_id_for
from fxray.store import NotFound
from tests.integration.ui.conftest import (
    UIServer,
    csrf_token,
    screenshot,
    sign_in,
    unique,
    wait_for,
)

ECHO = """
from fxray import context
context.result = dict(context.params)
"""

FIELDS = [
    {"name": "count", "type": "int", "required": True, "label": "How many"},
    {"name": "country", "type": "select", "choices": ["ch", "de", "fr"], "default": "ch"},
    {"name": "express", "type": "bool", "default": False},
    {"name": "extras", "type": "multiselect", "choices": ["gift", "insurance", "receipt"]},
    {"name": "note", "type": "text", "description": "for the picker"},
]


def _deploy(server: UIServer, keys: object) -> str:
    scripts = {"echo.py": ECHO, "parameters.json": json.dumps(FIELDS)}
    return server.deploy(keys, unique("manual"), scripts)  # type: ignore[arg-type]


def _result(server: UIServer, run_id: str) -> dict[str, object] | None:
    try:
        run = server.platform.store.get_run(run_id)  # type: ignore[union-attr]
    except NotFound:
        return None
    return run.result if run.status == "succeeded" else None


def _started_run(page: Page) -> str:
    link = page.locator("#run-started a")
    expect(link).to_be_visible()
    return link.inner_text()


def test_a_bad_value_is_shown_inline_then_a_good_run_and_a_run_again(
    ui_server: UIServer, page: Page
) -> None:
    keys = ui_server.project()
    service = _deploy(ui_server, keys)
    sign_in(page, ui_server, keys.developer, "/run")
    page.get_by_role("link", name=service.rsplit(".", 1)[-1]).click()
    page.wait_for_url(f"{ui_server.url}/run/{service}")
    expect(page.get_by_label("country")).to_have_value("ch")  # the default

    page.get_by_label("How many (required)").fill("three")
    page.get_by_label("country").select_option("de")
    page.get_by_label("insurance").check()
    page.get_by_label("note").fill("<b>fragile</b>")
    page.get_by_label("Priority").select_option("2")
    page.get_by_role("button", name="Start run").click()
    error = page.locator("#err-count")
    expect(error).to_have_text(re.compile("expected an integer"))
    expect(page.get_by_label("How many (required)")).to_have_attribute("aria-invalid", "true")
    # the values typed stay in the form
    expect(page.get_by_label("How many (required)")).to_have_value("three")
    expect(page.get_by_label("country")).to_have_value("de")
    expect(page.get_by_label("insurance")).to_be_checked()
    expect(page.get_by_label("Priority")).to_have_value("2")
    expect(page.locator("#run-started")).to_have_count(0)
    screenshot(page, "manual-run")

    page.get_by_label("How many (required)").fill("3")
    page.get_by_role("button", name="Start run").click()
    first = _started_run(page)
    expected = {
        "count": 3,
        "country": "de",
        "express": False,
        "extras": ["insurance"],
        "note": "<b>fragile</b>",
    }
    assert wait_for(lambda: _result(ui_server, first), what="the first run") == expected
    assert ui_server.platform.store.get_run(first).priority == 2  # type: ignore[union-attr]

    page.goto(f"{ui_server.url}/runs/{first}")
    page.get_by_role("link", name="Run again with these parameters").click()
    expect(page.locator("#from-run")).to_contain_text(first)
    expect(page.get_by_label("How many (required)")).to_have_value("3")
    expect(page.get_by_label("country")).to_have_value("de")
    expect(page.get_by_label("express")).to_have_value("false")
    expect(page.get_by_label("insurance")).to_be_checked()
    expect(page.get_by_label("gift")).not_to_be_checked()
    expect(page.get_by_label("note")).to_have_value("<b>fragile</b>")
    page.get_by_role("button", name="Start run").click()
    again = _started_run(page)
    assert again != first
    assert wait_for(lambda: _result(ui_server, again), what="the run again") == expected
    assert page.evaluate("window.__pwned") is None


def test_a_viewer_sees_the_form_but_cannot_start_a_run(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = _deploy(ui_server, keys)
    sign_in(page, ui_server, keys.viewer, f"/run/{service}")
    expect(page.get_by_label("How many (required)")).to_be_visible()
    expect(page.get_by_role("button", name="Start run")).to_have_count(0)
    refused = page.request.post(
        f"{ui_server.url}/run/{service}", form={"p.count": "1", "csrf_token": csrf_token(page)}
    )
    assert refused.status == 403
    page.goto(f"{ui_server.url}/run")
    expect(page.get_by_role("link", name=service.rsplit(".", 1)[-1])).to_have_count(
        0
    )  # nothing to start


def test_another_projects_service_and_run_are_not_found(ui_server: UIServer, page: Page) -> None:
    mine, theirs = ui_server.project(), ui_server.project()
    own = _deploy(ui_server, mine)
    other = _deploy(ui_server, theirs)
    event = ui_server.platform.run(other, {"count": 1})
    their_run = run_id_for(event["id"], MANUAL_TRIGGER)
    wait_for(lambda: _result(ui_server, their_run), what="their run")
    sign_in(page, ui_server, mine.admin, f"/run/{own}")
    assert page.request.get(f"{ui_server.url}/run/{other}").status == 404
    assert page.request.get(f"{ui_server.url}/run/{own}?from_run={their_run}").status == 404
    posted = page.request.post(
        f"{ui_server.url}/run/{other}", form={"p.count": "1", "csrf_token": csrf_token(page)}
    )
    assert posted.status == 404
