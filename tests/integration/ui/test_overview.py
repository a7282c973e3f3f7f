"""The overview in a real browser: a project's runs, failure rate, backlog, routers and
executors, its latest failures, and the link to Ray's dashboard; at laptop and tablet width."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from fxray.router.routing import MANUAL_TRIGGER, run_id_for
from tests.integration.ui.conftest import (
    DASHBOARD,
    TABLET,
    UIServer,
    screenshot,
    sign_in,
    unique,
    wait_for,
)

MAYBE = """
from fxray import context
if context.params.get("fail"):
    raise ValueError("asked to fail")
print("ok")
"""


def test_the_overview_of_a_project(ui_server: UIServer, new_page: Callable[..., Page]) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("maybe"), {"maybe.py": MAYBE})
    store = ui_server.platform.store
    assert store is not None
    run_ids = [
        run_id_for(ui_server.platform.run(service, {"fail": i % 4 == 0})["id"], MANUAL_TRIGGER)
        for i in range(8)
    ]
    wait_for(
        lambda: (
            all(
                r.status in ("succeeded", "failed")
                for r in store.list_runs(service=service, limit=None)
            )
            and len(store.list_runs(service=service, limit=None)) == 8
        ),
        what="eight finished runs",
    )

    page = new_page()
    sign_in(page, ui_server, keys.viewer)
    expect(page.locator("#runs-total")).to_have_text("8")
    expect(page.locator("#failure-rate")).to_have_text("25.0%")
    expect(page.locator("#routers-alive")).to_have_text("1 / 1")
    failures = page.get_by_role("region", name="Latest failures")
    for failed in (run_ids[0], run_ids[4]):
        expect(failures.get_by_role("link", name=failed[:8])).to_be_visible()
    expect(failures.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_role("link", name="Ray dashboard")).to_have_attribute("href", DASHBOARD)
    expect(page.get_by_role("img", name="Runs per minute")).to_be_visible()
    screenshot(page, "overview")

    tablet = new_page(TABLET)
    sign_in(tablet, ui_server, keys.viewer)
    expect(tablet.locator("#runs-total")).to_have_text("8")
    width = tablet.evaluate("document.documentElement.scrollWidth")
    assert width <= TABLET["width"]  # nothing wider than the screen: no sideways page scroll
    tablet.keyboard.press("Tab")  # the skip link comes first, and shows its focus
    expect(tablet.get_by_role("link", name="Skip to content")).to_be_focused()
    screenshot(tablet, "overview-tablet")
