"""The A/B report in a real browser: weights set through the triggers form (a sum other than
100 refused in place), events sent, the split per version in the report, the outputs of the
routed and the shadow version side by side, and promoting a winner after a confirmation."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page, expect

from tests.integration.ui.conftest import (
    UIServer,
    csrf_token,
    screenshot,
    service_zip,
    sign_in,
    unique,
    wait_for,
)

EVENTS = 16


def _script(label: str) -> str:
    return (
        "from fxray import context\n"
        f"context.result = {{'version': {label!r}, 'order': context.params.get('order')}}\n"
    )


def test_split_report_side_by_side_and_promote(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys, others = ui_server.project(), ui_server.project()
    name = unique("ab")
    store = ui_server.platform.store
    assert store is not None
    for label in ("a", "b", "c"):
        deployed = ui_server.platform.deploy(
            service_zip(name, {"main.py": _script(label)}), project=keys.project, label=label
        )
    service = deployed.service.id
    ids = {v.label: v.id for v in store.list_versions(service)}
    event_type = f"ui.ab.{unique('t')}"
    ui_server.platform.link(event_type, service)

    page = new_page()
    sign_in(page, ui_server, keys.developer, "/triggers")
    weights = page.locator("form.weights").first
    weights.get_by_label("a", exact=True).fill("60")
    weights.get_by_label("b", exact=True).fill("50")
    weights.get_by_role("button", name="Save weights").click()
    expect(page.locator("form.weights ul.problems")).to_contain_text("must add up to 100")
    weights = page.locator("form.weights").first
    weights.get_by_label("a", exact=True).fill("50")
    weights.get_by_label("Shadow").select_option(label="c")
    weights.get_by_role("button", name="Save weights").click()
    expect(page.get_by_role("status")).to_contain_text("saved the weights")

    page.wait_for_timeout(1500)  # routers follow within a second
    for order in range(EVENTS):
        ui_server.platform.send(event_type, {"order": order})

    def finished() -> bool:
        runs = store.list_runs(service=service, limit=None)
        return len(runs) == 2 * EVENTS and all(r.status == "succeeded" for r in runs)

    wait_for(finished, timeout=180, what="every event run by a or b and by the shadow c")

    page.goto(f"{ui_server.url}/ab")
    page.get_by_role("link", name=name).click()
    counts = {
        label: int(page.locator(f'tr[data-version="{ids[label]}"] td.runs').inner_text())
        for label in ("a", "b", "c")
    }
    assert counts["a"] + counts["b"] == EVENTS and counts["a"] > 0 and counts["b"] > 0
    assert counts["c"] == EVENTS
    expect(page.locator(f'tr[data-version="{ids["c"]}"]')).to_contain_text("100.0%")
    rows = page.locator("table.side-by-side tbody tr[data-event]")
    expect(rows.first).to_contain_text('"version": "c"')
    assert rows.count() == EVENTS
    screenshot(page, "abreport")

    viewer = new_page()
    sign_in(viewer, ui_server, keys.viewer, f"/ab/{service}")
    expect(viewer.locator("table.ab-versions")).to_be_visible()
    expect(viewer.get_by_role("button", name="Promote a")).to_have_count(0)

    # promote b: a confirmation first, then 100/0
    (trigger,) = store.list_triggers(service)
    questions: list[str] = []

    def confirm(dialog) -> None:  # type: ignore[no-untyped-def]
        questions.append(dialog.message)
        dialog.accept()

    page.once("dialog", confirm)
    page.get_by_role("button", name="Promote b").click()
    expect(page.get_by_role("status")).to_contain_text("promoted b")
    assert questions and "weight 100" in questions[0]
    split = page.locator(f'div.split[data-trigger="{trigger.id}"]')
    expect(split.locator(f'[data-version="{ids["b"]}"]')).to_have_text("b 100")
    expect(split.locator(f'[data-version="{ids["a"]}"]')).to_have_text("a 0")
    (trigger,) = store.list_triggers(service)
    assert trigger.weights == {ids["a"]: 0, ids["b"]: 100}
    assert trigger.shadow_version == ids["c"]

    stranger = new_page()
    sign_in(stranger, ui_server, others.admin, "/ab")
    expect(stranger.locator("table.splits")).not_to_contain_text(name)
    assert stranger.goto(f"{ui_server.url}/ab/{service}").status == 404  # type: ignore[union-attr]
    taken = stranger.request.post(
        f"{ui_server.url}/ab/{service}/promote",
        form={"csrf_token": csrf_token(stranger), "trigger_id": trigger.id, "version": ids["a"]},
        headers={"HX-Request": "true"},
    )
    assert taken.status == 404
