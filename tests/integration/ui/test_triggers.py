"""Triggers and mappings in a real browser: link an event type to a service with a filter
(matching events run it, others do not), A/B weights that must add up to 100, and a mapping
that would close a cycle, each error shown next to its form; viewers and other projects."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlencode

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

SCRIPT = "from fxray import context\nprint('got', context.params.get('country'))\n"


def _runs(server: UIServer, service: str) -> list:
    store = server.platform.store
    assert store is not None
    return store.list_runs(service=service, limit=None)


def test_link_with_a_filter_routes_only_matching_events(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys, others = ui_server.project(), ui_server.project()
    name = unique("tr")
    service = ui_server.deploy(keys, name, {"main.py": SCRIPT})
    event_type = f"ui.tr.{unique('t')}"

    page = new_page()
    sign_in(page, ui_server, keys.developer, "/triggers")
    form = page.locator("#link-form")
    form.get_by_label("Service").select_option(service)
    form.get_by_label("Event type").fill(event_type)
    form.get_by_label("Filters").fill("data.country = CH")
    form.get_by_role("button", name="Link").click()
    expect(page.get_by_role("status")).to_contain_text(f"linked {event_type} to {name}")
    row = page.locator("table.triggers tbody tr", has_text=event_type)
    expect(row).to_contain_text("data.country = CH")
    expect(row).to_contain_text(name)

    # a bad filter is refused next to the form, with what was typed kept
    form = page.locator("#link-form")
    form.get_by_label("Event type").fill(f"{event_type}.other")
    form.get_by_label("Filters").fill("Country = CH")
    form.get_by_role("button", name="Link").click()
    expect(page.locator("#link-problems")).to_contain_text("must name an attribute")
    expect(page.locator("#link-form").get_by_label("Filters")).to_have_value("Country = CH")

    time.sleep(1.5)  # routers pick the trigger up within a second
    skipped = ui_server.platform.send(event_type, {"country": "DE"})
    routed = ui_server.platform.send(event_type, {"country": "CH"})
    runs = wait_for(lambda: _runs(ui_server, service), what="a run of the linked service")
    assert [r.event_id for r in runs] == [routed["id"]]
    time.sleep(2)  # the filtered-out event had time to be routed, and was not
    assert [r.event_id for r in _runs(ui_server, service)] == [routed["id"]]
    assert skipped["id"] not in {r.event_id for r in _runs(ui_server, service)}
    screenshot(page, "triggers")

    viewer = new_page()
    sign_in(viewer, ui_server, keys.viewer, "/triggers")
    expect(viewer.locator("table.triggers")).to_contain_text(event_type)
    expect(viewer.locator("#link-form")).to_have_count(0)
    expect(viewer.get_by_role("button", name="Save weights")).to_have_count(0)
    trigger_id = viewer.locator("table.triggers tbody tr[data-trigger]").first.get_attribute(
        "data-trigger"
    )
    refused = viewer.request.post(
        f"{ui_server.url}/triggers/{trigger_id}/delete",
        form={"csrf_token": csrf_token(viewer)},
        headers={"HX-Request": "true"},
    )
    assert refused.status == 403

    stranger = new_page()
    sign_in(stranger, ui_server, others.developer, "/triggers")
    expect(stranger.locator("table.triggers")).not_to_contain_text(event_type)
    taken = stranger.request.post(
        f"{ui_server.url}/triggers/{trigger_id}/weights",
        form={"csrf_token": csrf_token(stranger), "version": "x", "weight": "100"},
        headers={"HX-Request": "true"},
    )
    assert taken.status == 404


def test_weights_must_add_up_to_100(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    name = unique("ab")
    store = ui_server.platform.store
    assert store is not None
    first = ui_server.platform.deploy(
        service_zip(name, {"main.py": "print('a')\n"}), project=keys.project, label="a"
    )
    ui_server.platform.deploy(
        service_zip(name, {"main.py": "print('b')\n"}), project=keys.project, label="b"
    )
    service = first.service.id
    event_type = f"ui.ab.{unique('t')}"
    ui_server.platform.link(event_type, service)

    sign_in(page, ui_server, keys.developer, "/triggers")
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    weights = page.locator("form.weights").first
    weights.get_by_label("a", exact=True).fill("50")
    weights.get_by_label("b", exact=True).fill("40")
    weights.get_by_role("button", name="Save weights").click()
    problems = page.locator("form.weights ul.problems")
    expect(problems).to_contain_text("must add up to 100 (they add up to 90)")
    expect(page.locator("form.weights").first.get_by_label("b", exact=True)).to_have_value("40")
    assert posted == []  # refused in the browser, before sending
    (trigger,) = store.list_triggers(service)
    assert trigger.weights == {}  # nothing saved
    screenshot(page, "triggers-weights")
    # the server refuses it too, when a browser skips the check
    versions = [v.id for v in store.list_versions(service)]
    forged = page.request.post(
        f"{ui_server.url}/triggers/{trigger.id}/weights",
        data=urlencode(
            {"csrf_token": csrf_token(page), "version": versions, "weight": ["50", "40"]},
            doseq=True,
        ),
        headers={"HX-Request": "true", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert forged.status == 422 and "they add up to 90" in forged.text()
    assert store.list_triggers(service)[0].weights == {}

    weights = page.locator("form.weights").first
    weights.get_by_label("b", exact=True).fill("50")
    expect(problems).to_have_count(0)  # re-checked while typing
    weights.get_by_label("Shadow").select_option(label="a")
    weights.get_by_role("button", name="Save weights").click()
    expect(page.get_by_role("status")).to_contain_text("saved the weights")
    (trigger,) = store.list_triggers(service)
    labels = {v.id: v.label for v in store.list_versions(service)}
    assert {labels[v]: w for v, w in trigger.weights.items()} == {"a": 50, "b": 50}
    assert labels[trigger.shadow_version or ""] == "a"
    expect(page.locator("form.weights").first.get_by_label("a", exact=True)).to_have_value("50")
    expect(page.get_by_role("link", name="A/B report", exact=True).last).to_have_attribute(
        "href", f"/ab/{service}"
    )

    versions = list(labels)
    forged = page.request.post(
        f"{ui_server.url}/triggers/{trigger.id}/weights",
        form={"csrf_token": csrf_token(page), "version": versions[0], "weight": "100"},
        headers={"HX-Request": "true"},
    )
    assert forged.ok  # one version at 100 adds up
    (trigger,) = store.list_triggers(service)
    assert list(trigger.weights.values()) == [100]


def test_a_mapping_that_closes_a_cycle_is_refused_in_place(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    first, second = f"ui.map.{unique('a')}", f"ui.map.{unique('b')}"
    sign_in(page, ui_server, keys.developer, "/triggers")
    form = page.locator("#mapping-form")
    form.get_by_label("Source event type").fill(first)
    form.get_by_label("Target event type").fill(second)
    form.get_by_role("button", name="Add mapping").click()
    expect(page.get_by_role("status")).to_contain_text(f"mapped {first} to {second}")
    expect(page.locator("table.mappings")).to_contain_text(second)

    form = page.locator("#mapping-form")
    form.get_by_label("Source event type").fill(second)
    form.get_by_label("Target event type").fill(first)
    form.get_by_role("button", name="Add mapping").click()
    expect(page.locator("#mapping-problems")).to_contain_text("would form a cycle")
    expect(page.locator("#mapping-problems")).to_contain_text(f"{second} -> {first} -> {second}")
    expect(page.locator("#mapping-form").get_by_label("Source event type")).to_have_value(second)
    store = ui_server.platform.store
    assert store is not None
    assert [(m.source_type, m.target_type) for m in store.list_mappings(keys.project)] == [
        (first, second)
    ]
    screenshot(page, "triggers-mapping-cycle")
