"""Traces in a real browser: a two-service flow's causal chain and both runs on the waterfall,
event data shown as text, and other projects kept out."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.integration.ui.conftest import UIServer, screenshot, sign_in, unique, wait_for

# emits the next event with the order it got
CHECK = (
    "import time\n"
    "from fxray import context\n"
    "time.sleep(0.2)\n"
    "context.events.send(context.params['next'], {'order': context.params['order']})\n"
)
SINK = "import time\nfrom fxray import context\ntime.sleep(0.2)\ncontext.result = 1\n"
PAYLOAD = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_trace_of_a_two_service_flow(ui_server: UIServer, new_page) -> None:
    keys, others = ui_server.project(), ui_server.project()
    tag = unique("tr")
    first, second = f"ui.{tag}.order", f"ui.{tag}.checked"
    checker_name, sink_name = unique("checker"), unique("sink")
    checker = ui_server.deploy(keys, checker_name, {"c.py": CHECK}, trigger_events=[first])
    sink = ui_server.deploy(keys, sink_name, {"s.py": SINK}, trigger_events=[second])
    store = ui_server.platform.store
    assert store is not None
    event = ui_server.platform.send(first, {"order": PAYLOAD, "next": second})

    def finished(service: str) -> bool:
        runs = store.list_runs(service=service, limit=None)
        return bool(runs) and all(r.finished_at is not None for r in runs)

    wait_for(lambda: finished(checker) and finished(sink), what="both runs of the flow")
    checker_run = store.list_runs(service=checker, limit=None)[0]
    sink_run = store.list_runs(service=sink, limit=None)[0]

    page = new_page()
    sign_in(page, ui_server, keys.viewer, "/traces")
    page.get_by_label("Event or correlation id").fill(event["id"])
    page.get_by_role("button", name="Show trace").click()
    page.wait_for_url(f"**/traces/{event['id']}")

    waterfall = page.locator("#waterfall tbody tr")
    expect(waterfall).to_have_count(2)
    expect(waterfall.nth(0)).to_contain_text(checker_name)
    expect(waterfall.nth(1)).to_contain_text(sink_name)
    for run in (checker_run, sink_run):
        row = page.locator(f'#waterfall tr[data-run="{run.id}"]')
        expect(row).to_contain_text("succeeded")
        expect(row.locator("svg rect.bar")).to_have_count(1)
    # the sink's run starts after the checker's (its bar begins further right)
    starts = [
        float(page.locator(f'#waterfall tr[data-run="{r.id}"] rect.bar').get_attribute("x") or -1)
        for r in (checker_run, sink_run)
    ]
    assert 0 <= starts[0] < starts[1] <= 100

    # event -> checker run -> emitted event -> sink run, nested in that order
    root = page.locator(f'#chain li.chain-event[data-event="{event["id"]}"]')
    expect(root).to_contain_text(first)
    checker_node = root.locator(f'> ul > li.chain-run[data-run="{checker_run.id}"]')
    expect(checker_node).to_contain_text("triggered")
    emitted = checker_node.locator("> ul > li.chain-event")
    expect(emitted).to_contain_text("emitted")
    expect(emitted).to_contain_text(second)
    expect(emitted.locator(f'> ul > li.chain-run[data-run="{sink_run.id}"]')).to_contain_text(
        sink_name
    )
    root.locator("> details > summary").click()
    expect(root.locator("> details pre")).to_contain_text(PAYLOAD.replace('"', '\\"'))
    assert page.evaluate("window.__pwned") is None
    assert page.errors == []  # type: ignore[attr-defined]
    screenshot(page, "trace")

    # found by the correlation id too; another project's key gets 404
    correlation = page.locator(".heading code").inner_text()
    page.goto(f"{ui_server.url}/traces/{correlation}")
    expect(page.locator("#waterfall tbody tr")).to_have_count(2)
    stranger = new_page()
    sign_in(stranger, ui_server, others.admin, "/traces")
    answer = stranger.goto(f"{ui_server.url}/traces/{event['id']}")
    assert answer is not None and answer.status == 404
    missing = page.goto(f"{ui_server.url}/traces/no-such-{tag}")
    assert missing is not None and missing.status == 404
