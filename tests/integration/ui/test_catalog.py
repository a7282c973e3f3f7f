"""The event catalog in a real browser: a two-service flow's types with their schemas,
producers and consumers, a schema change shown as a diff, and other projects kept out."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from fxray.store import NotFound
from tests.integration.ui.conftest import UIServer, screenshot, sign_in, unique, wait_for

# emits the checked event with the order's id
CHECK = (
    "from fxray import context\n"
    "context.events.send(context.params['topic'], {'order': context.params['id'], "
    "'ok': True})\n"
)
SINK = "from fxray import context\ncontext.result = 1\n"


def test_catalog_shows_types_schemas_and_changes(ui_server: UIServer, new_page) -> None:
    keys, others = ui_server.project(), ui_server.project()
    tag = unique("cat")
    order, checked = f"ui.{tag}.order", f"ui.{tag}.checked"
    checker = ui_server.deploy(keys, unique("checker"), {"c.py": CHECK}, trigger_events=[order])
    sink = ui_server.deploy(keys, unique("sink"), {"s.py": SINK}, trigger_events=[checked])
    store = ui_server.platform.store
    assert store is not None

    def seen(event_type: str, count: int) -> Any:
        try:
            record = store.get_event_type(event_type)
        except NotFound:
            return None
        return record if record.count >= count else None

    # one at a time, so the second event's schema change is its own version
    for n, data in enumerate(({"id": 1, "amount": 2}, {"id": 2, "amount": 2.5, "note": "x"}), 1):
        ui_server.platform.send(order, {**data, "topic": checked})
        wait_for(lambda n=n: seen(order, n), what=f"{n} {order} events in the catalog")
    wait_for(lambda: seen(checked, 2), what=f"2 {checked} events in the catalog")

    page = new_page()
    sign_in(page, ui_server, keys.viewer, f"/catalog?prefix=ui.{tag}.")
    rows = page.locator("#event-types tbody tr")
    expect(rows).to_have_count(2)
    order_row = page.locator(f'tr[data-type="{order}"]')
    expect(order_row).to_contain_text("v2")
    expect(order_row.locator("td").nth(4)).to_contain_text(checker.split(".")[-1])
    checked_row = page.locator(f'tr[data-type="{checked}"]')
    expect(checked_row.locator("td").nth(3)).to_contain_text(checker.split(".")[-1])
    expect(checked_row.locator("td").nth(4)).to_contain_text(sink.split(".")[-1])
    screenshot(page, "catalog")

    page.get_by_role("link", name=order, exact=True).click()
    page.wait_for_url(f"**/catalog/{order}")
    expect(page.locator("#schema")).to_contain_text('"amount"')
    expect(page.locator("#schema")).to_contain_text('"number"')
    expect(page.locator("#consumers")).to_contain_text(checker.split(".")[-1])
    expect(page.locator("#consumers a")).to_have_attribute("href", f"/services/{checker}")
    expect(page.locator("#producers")).to_contain_text("outside services")
    latest = page.get_by_role("article", name="Schema version 2")
    expect(latest).to_contain_text("field amount type integer -> number")
    expect(latest.locator("del")).to_contain_text('"type": "integer"')
    expect(latest.locator("ins").filter(has_text='"type": "number"')).to_have_count(1)
    expect(latest.locator("ins").filter(has_text='"note"')).to_have_count(1)
    first = page.get_by_role("article", name="Schema version 1")
    expect(first).to_contain_text("added schema (object)")
    expect(first.locator("del")).to_have_count(0)
    screenshot(page, "catalog-type")
    assert page.errors == []  # type: ignore[attr-defined]

    # another project sees none of it, and the type's page is not found
    stranger = new_page()
    sign_in(stranger, ui_server, others.admin, f"/catalog?prefix=ui.{tag}.")
    expect(stranger.locator("#event-types")).to_contain_text("No event types")
    answer = stranger.goto(f"{ui_server.url}/catalog/{order}")
    assert answer is not None and answer.status == 404
    # the platform admin sees both, and can narrow to the project
    admin = new_page()
    sign_in(
        admin, ui_server, ui_server.admin, f"/catalog?prefix=ui.{tag}.&project={others.project}"
    )
    expect(admin.locator("#event-types")).to_contain_text("No event types")
    admin.goto(f"{ui_server.url}/catalog?prefix=ui.{tag}.&project={keys.project}")
    expect(admin.locator("#event-types tbody tr")).to_have_count(2)
