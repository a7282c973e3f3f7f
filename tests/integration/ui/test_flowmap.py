"""The flow map in a real browser: services as nodes, event types as edges; an event sent
from outside and the one its run emits each add to their edge's count while the page is open
(htmx polling redraws the SVG); edges and nodes link to their runs; other projects' services
are not drawn."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.integration.ui.conftest import UIServer, screenshot, sign_in, unique, wait_for


def test_the_map_shows_the_edges_events_took(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys, others = ui_server.project(), ui_server.project()
    base = f"ui.fm.{unique('t')}"
    ordered, checked = f"{base}.ordered", f"{base}.checked"
    intake = ui_server.deploy(
        keys,
        unique("intake"),
        {"main.py": f"from fxray import context\ncontext.events.send({checked!r}, {{'n': 1}})\n"},
        trigger_events=[ordered],
    )
    checker = ui_server.deploy(
        keys, unique("checker"), {"main.py": "print('checked')\n"}, trigger_events=[checked]
    )
    failing = ui_server.deploy(
        keys, unique("fails"), {"main.py": "raise RuntimeError('no')\n"}, trigger_events=[checked]
    )
    hidden = ui_server.deploy(others, unique("hidden"), {"main.py": "print(1)\n"})
    store = ui_server.platform.store
    assert store is not None

    def done(service: str, count: int) -> bool:
        runs = store.list_runs(service=service, limit=None)
        return len(runs) == count and all(r.status == "succeeded" for r in runs)

    def failed(service: str) -> bool:
        return any(r.status == "failed" for r in store.list_runs(service=service, limit=None))

    ui_server.platform.send(ordered, {"order": 1})
    wait_for(lambda: done(checker, 1), timeout=120, what="the emitted event's run")
    wait_for(lambda: failed(failing), timeout=120, what="a failed run")

    page = new_page()
    sign_in(page, ui_server, keys.viewer, "/flow")
    first = page.locator(f'[data-edge="outside|{ordered}|{intake}"]')
    second = page.locator(f'[data-edge="{intake}|{checked}|{checker}"]')
    expect(first.locator(".edge-runs")).to_have_text("1")
    expect(second.locator(".edge-runs")).to_have_text("1")
    expect(page.locator(f'[data-node="{hidden}"]')).to_have_count(0)
    errors = page.locator(f'[data-edge="{intake}|{checked}|{failing}"] .edge-errors')
    expect(errors).to_contain_text("failed")
    expect(second.locator(".edge-errors")).to_have_count(0)

    # another event while the page is open: both edges count it, without a reload
    ui_server.platform.send(ordered, {"order": 2})
    wait_for(lambda: done(checker, 2), timeout=120, what="the second emitted event's run")
    expect(first.locator(".edge-runs")).to_have_text("2", timeout=15_000)
    expect(second.locator(".edge-runs")).to_have_text("2", timeout=15_000)
    assert page.errors == []  # type: ignore[attr-defined]
    screenshot(page, "flowmap")

    second.click()
    expect(page).to_have_url(f"{ui_server.url}/runs?service={checker}&event_type={checked}")
    expect(page.locator("table")).to_contain_text(checked)
    page.go_back()
    page.locator(f'[data-node="{intake}"]').click()
    expect(page).to_have_url(f"{ui_server.url}/runs?service={intake}")
