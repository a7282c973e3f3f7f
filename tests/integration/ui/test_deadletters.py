"""Dead letters in a real browser: the failed runs' events listed with why, requeued (they run
again) and discarded, per project."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.integration.ui.conftest import (
    UIServer,
    csrf_token,
    screenshot,
    sign_in,
    unique,
    wait_for,
)

FAILING = """
from fxray import context
raise RuntimeError("cannot handle order " + str(context.params.get("order")))
"""


def test_requeue_and_discard_dead_letters(ui_server: UIServer, new_page) -> None:
    keys, others = ui_server.project(), ui_server.project()
    event_type = f"ui.dl.{unique('t')}"
    service = ui_server.deploy(
        keys, unique("fails"), {"fail.py": FAILING}, trigger_events=[event_type]
    )
    store = ui_server.platform.store
    assert store is not None
    for order in ("A-1", "A-2"):
        ui_server.platform.send(event_type, {"order": order})

    def letters() -> dict[str, str]:
        found = {}
        for letter in ui_server.platform.dead_letters(200):
            if letter.header("fxray_dlq_service") == service:
                found[letter.run_id or ""] = letter.position
        return found if len(found) == 2 else {}

    positions = sorted(wait_for(letters, what="two dead letters").values())

    page = new_page()
    sign_in(page, ui_server, keys.developer, "/deadletters")
    for position in positions:
        expect(page.locator(f'tr[data-position="{position}"]')).to_contain_text("run failed")
    expect(page.locator("table.letters")).to_contain_text("cannot handle order A-")
    screenshot(page, "deadletters")

    first, second = positions
    page.get_by_label(f"Choose dead letter {first}").check()
    page.get_by_role("button", name="Requeue").click()
    expect(page.locator("#letters-result")).to_contain_text("1 of 1 done")
    expect(page.locator("#letters-result")).to_contain_text(f"{first} -> event")
    expect(page.locator(f'tr[data-position="{first}"]')).to_have_count(0)  # handled: gone
    # the requeued event ran the service again
    wait_for(lambda: len(store.list_runs(service=service, limit=None)) == 3, what="a third run")

    page.get_by_label(f"Choose dead letter {second}").check()
    page.get_by_role("button", name="Discard").click()
    expect(page.locator("#letters-result")).to_contain_text(f"{second}: discarded")
    page.goto(f"{ui_server.url}/deadletters?show=handled")
    expect(page.locator(f'tr[data-position="{first}"]')).to_contain_text("requeued")
    expect(page.locator(f'tr[data-position="{second}"]')).to_contain_text("discarded")

    # requeued once only, even by a forged second request
    again = page.request.post(
        f"{ui_server.url}/deadletters",
        form={"action": "requeue", "position": first, "csrf_token": csrf_token(page)},
        headers={"HX-Request": "true"},
    )
    assert again.ok and "already requeued" in again.text()

    viewer = new_page()
    sign_in(viewer, ui_server, keys.viewer, "/deadletters?show=all")
    expect(viewer.locator(f'tr[data-position="{first}"]')).to_be_visible()
    expect(viewer.get_by_role("button", name="Requeue")).to_have_count(0)
    refused = viewer.request.post(
        f"{ui_server.url}/deadletters",
        form={"action": "discard", "position": first, "csrf_token": csrf_token(viewer)},
        headers={"HX-Request": "true"},
    )
    assert "this needs the developer role" in refused.text()

    stranger = new_page()
    sign_in(stranger, ui_server, others.admin, "/deadletters?show=all")
    for position in positions:
        expect(stranger.locator(f'tr[data-position="{position}"]')).to_have_count(0)
    taken = stranger.request.post(
        f"{ui_server.url}/deadletters",
        form={"action": "discard", "position": first, "csrf_token": csrf_token(stranger)},
        headers={"HX-Request": "true"},
    )
    assert "not found" in taken.text()
