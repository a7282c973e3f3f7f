"""Events in a real browser: a test event sent through the form shows in the live stream and
runs its service (whose log shows on the run page), data that breaks the type's schema is
refused inline per field path, and markup in event data stays text."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from fxray.store import NotFound
from tests.integration.ui.conftest import UIServer, screenshot, sign_in, unique, wait_for

HANDLER = (
    "from fxray import context\n"
    "print('handling order', context.params['order'])\n"
    "context.result = {'order': context.params['order']}\n"
)
PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_send_test_events_and_follow_them(ui_server: UIServer, new_page) -> None:
    keys = ui_server.project()
    event_type = f"ui.{unique('ev')}.order"
    name = unique("orders")
    service = ui_server.deploy(keys, name, {"h.py": HANDLER}, trigger_events=[event_type])
    store = ui_server.platform.store
    assert store is not None

    def schema() -> Any:
        try:
            return store.get_event_type(event_type).schema
        except NotFound:
            return None

    first = ui_server.platform.send(event_type, {"order": "A-1", "amount": 1.5})
    wait_for(schema, what="the type's schema in the catalog")

    page = new_page()
    sign_in(page, ui_server, keys.developer, f"/events?prefix={event_type}")
    stream = page.locator("#event-stream")
    expect(stream.locator(f'li[data-event="{first["id"]}"]')).to_contain_text(event_type)

    # data that breaks the schema is refused, each problem at its field path
    page.get_by_label("Event type").fill(event_type)
    page.get_by_label("Data (JSON)").fill('{"amount": "lots"}')
    page.get_by_role("button", name="Send test event").click()
    problems = page.locator("#test-event-problems")
    expect(problems.locator('li[data-path="data.amount"]')).to_contain_text("is not of type")
    expect(problems.locator('li[data-path="data.order"]')).to_contain_text("is required")
    expect(page.locator("#test-event-sent")).to_have_count(0)
    screenshot(page, "events-refused")
    page.get_by_label("Data (JSON)").fill("{not json")
    page.get_by_role("button", name="Send test event").click()
    expect(page.locator('#test-event-problems li[data-path="data"]')).to_contain_text("not JSON")
    assert len(store.list_runs(service=service, limit=None)) <= 1  # nothing sent

    # a fitting event is sent, streams in, and runs the service
    page.get_by_label("Data (JSON)").fill(
        '{"order": "' + PAYLOAD.replace('"', '\\"') + '", "amount": 2}'
    )
    page.get_by_role("button", name="Send test event").click()
    sent = page.locator("#test-event-sent a")
    expect(sent).to_be_visible()
    sent_id = sent.inner_text()
    row = stream.locator(f'li[data-event="{sent_id}"]')
    expect(row).to_contain_text(event_type)
    expect(row).to_contain_text("fxray/ui")
    row.locator("summary").click()
    expect(row.locator("pre")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None
    screenshot(page, "events")

    def run_of_sent() -> Any:
        found = [r for r in store.list_runs(service=service, limit=None) if r.event_id == sent_id]
        return found[0] if found else None

    run = wait_for(run_of_sent, what="the test event's run")
    page.goto(f"{ui_server.url}/runs/{run.id}")
    expect(page.locator("#log-lines")).to_contain_text("handling order")
    expect(page.locator("#log-lines")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]

    # a viewer follows the stream but gets no form, and a forged post is refused
    viewer = new_page()
    sign_in(viewer, ui_server, keys.viewer, f"/events?prefix={event_type}")
    expect(viewer.locator(f'#event-stream li[data-event="{sent_id}"]')).to_be_visible()
    expect(viewer.get_by_role("button", name="Send test event")).to_have_count(0)
    # another project's stream does not carry them
    stranger = new_page()
    sign_in(stranger, ui_server, ui_server.project().admin, "/events")
    expect(stranger.locator("#event-stream")).to_be_attached()
    stranger.wait_for_timeout(1500)
    expect(stranger.locator(f'#event-stream li[data-event="{sent_id}"]')).to_have_count(0)
