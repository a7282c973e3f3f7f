"""The runs views in a real browser: a run's logs arriving live, the level filter, the run's
causing and emitted events, the list's filters and keyset pages, cancelling a queued run with
the bulk action, other projects' runs, and markup in event data and log lines kept inert."""

from __future__ import annotations

import re
from collections.abc import Callable

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

MARKUP = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'

TALKER = """
import time
from fxray import context
for i in range(int(context.params.get("lines", 3))):
    context.log.info("line %d of %s", i, context.params.get("tag"))
    if i == 1:
        context.log.warning("careful at %d", i)
    time.sleep(float(context.params.get("pause", 0)))
print("printed", context.params.get("tag"))
context.events.send("ui.talked", {"tag": context.params.get("tag")})
context.result = {"tag": context.params.get("tag")}
"""

SLOW = """
import time
from fxray import context
for _ in range(int(float(context.params.get("sleep", 0)) / 0.05)):
    time.sleep(0.05)
context.log.info("done %s", context.params.get("tag"))
"""


def _start(server: UIServer, service: str, params: dict[str, object]) -> str:
    event = server.platform.run(service, params)
    return run_id_for(event["id"], MANUAL_TRIGGER)


def _status(server: UIServer, run_id: str) -> str | None:
    try:
        return server.platform.store.get_run(run_id).status  # type: ignore[union-attr]
    except NotFound:
        return None


def test_a_runs_logs_appear_live(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("talker"), {"talk.py": TALKER})
    warm = _start(ui_server, service, {"tag": "warm", "lines": 1})  # an executor is up
    wait_for(lambda: _status(ui_server, warm) == "succeeded", what="the first run")
    run_id = _start(ui_server, service, {"tag": "live", "lines": 8, "pause": 0.6})
    wait_for(lambda: _status(ui_server, run_id) == "running", what="the run starts")

    sign_in(page, ui_server, keys.viewer, f"/runs/{run_id}")
    lines = page.locator("#log-lines li")
    expect(lines.first).to_contain_text("line 0 of live")
    assert _status(ui_server, run_id) == "running"  # the line came while the run went on
    expect(page.locator("#log-end")).to_contain_text("succeeded", timeout=60_000)
    expect(lines.filter(has_text="line 7 of live")).to_have_count(1)
    expect(lines.filter(has_text="careful at 1")).to_have_count(1)
    expect(lines.filter(has_text="printed live")).to_have_count(1)
    assert lines.count() == 10  # 8 lines, 1 warning, 1 printed: none twice

    page.reload()  # a finished run: its steps, result, cause and emitted event
    expect(page.locator("#run-status")).to_contain_text("succeeded")
    expect(page.get_by_role("cell", name="talk.py")).to_be_visible()
    expect(page.locator("#cause-event")).to_contain_text('"tag": "live"')
    expect(page.get_by_text("ui.talked", exact=True)).to_be_visible()
    screenshot(page, "run-detail")

    page.get_by_label("WARNING").check()  # the level filter: only warnings now
    expect(page.locator("#log-end")).to_contain_text("succeeded")
    expect(lines).to_have_count(1)
    expect(lines.first).to_contain_text("careful at 1")


def test_filters_and_keyset_pages(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("many"), {"talk.py": TALKER})
    run_ids = [_start(ui_server, service, {"tag": f"n{i}", "lines": 1}) for i in range(7)]
    for run_id in run_ids:
        wait_for(lambda run_id=run_id: _status(ui_server, run_id) == "succeeded", what="runs")

    sign_in(page, ui_server, keys.viewer, f"/runs?service={service}&limit=25")
    rows = page.locator("#runs-table tbody tr")
    expect(rows).to_have_count(7)
    screenshot(page, "runs")
    page.goto(f"{ui_server.url}/runs?service={service}&limit=25&status=failed")
    expect(page.locator("#runs-table")).to_contain_text("No runs match")

    page.goto(f"{ui_server.url}/runs?service={service}&limit=3")
    seen: list[str] = []
    for _ in range(3):
        expect(rows.first).to_be_visible()
        page_ids = [rows.nth(i).get_attribute("data-run") or "" for i in range(rows.count())]
        seen += page_ids
        older = page.get_by_role("link", name="Older runs")
        if older.count() == 0:
            break
        older.click()
        expect(rows.first).not_to_have_attribute("data-run", page_ids[0])  # the next page
        expect(page).to_have_url(re.compile(r"before="))
    assert sorted(seen) == sorted(run_ids) and len(seen) == 7  # each once, none skipped


def test_cancel_a_queued_run(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("slow"), {"slow.py": SLOW}, max_concurrency=1)
    first = _start(ui_server, service, {"tag": "first", "sleep": 30})
    wait_for(lambda: _status(ui_server, first) == "running", what="the first run starts")
    queued = _start(ui_server, service, {"tag": "queued"})
    wait_for(lambda: _status(ui_server, queued) == "pending", what="the second run queues")

    sign_in(page, ui_server, keys.developer, f"/runs?service={service}")
    row = page.locator(f'tr[data-run="{queued}"]')
    expect(row).to_contain_text("pending")
    row.get_by_role("checkbox").check()
    screenshot(page, "runs-bulk")
    page.get_by_role("button", name="Cancel", exact=True).click()
    expect(page.locator("#bulk-result")).to_contain_text("1 of 1 done")
    expect(page.locator("#bulk-result")).to_contain_text(f"{queued[:8]}: cancelled")
    wait_for(lambda: _status(ui_server, queued) == "cancelled", what="the queued run cancelled")
    page.reload()  # the run row is written by the ops sink, a moment after the cancel
    expect(page.locator(f'tr[data-run="{queued}"]')).to_contain_text("cancelled")

    page.goto(f"{ui_server.url}/runs/{first}")  # and the running one, from its own page
    page.get_by_role("button", name="Cancel run").click()
    expect(page.locator("#run-actions")).to_contain_text("run cancell")
    wait_for(lambda: _status(ui_server, first) == "cancelled", what="the running run cancelled")


def test_a_viewer_cannot_act_on_runs(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("watched"), {"talk.py": TALKER})
    run_id = _start(ui_server, service, {"tag": "v", "lines": 1})
    wait_for(lambda: _status(ui_server, run_id) == "succeeded", what="the run")
    sign_in(page, ui_server, keys.viewer, "/runs")
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    page.goto(f"{ui_server.url}/runs/{run_id}")
    expect(page.get_by_role("button", name="Replay")).to_have_count(0)
    token = csrf_token(page)
    replay = page.request.post(f"{ui_server.url}/runs/{run_id}/replay", form={"csrf_token": token})
    assert replay.status == 403
    bulk = page.request.post(
        f"{ui_server.url}/runs/bulk",
        form={"action": "replay", "run_id": run_id, "csrf_token": token},
        headers={"HX-Request": "true"},
    )
    assert bulk.ok and "this needs the developer role" in bulk.text()


def test_another_projects_run_is_not_found(ui_server: UIServer, page: Page) -> None:
    mine, theirs = ui_server.project(), ui_server.project()
    service = ui_server.deploy(theirs, unique("hidden"), {"talk.py": TALKER})
    run_id = _start(ui_server, service, {"tag": "secret-tag", "lines": 1})
    wait_for(lambda: _status(ui_server, run_id) == "succeeded", what="their run")
    sign_in(page, ui_server, mine.admin, "/runs")
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/logs"):
        answer = page.goto(ui_server.url + path)
        assert answer is not None and answer.status == 404, path
        assert "secret-tag" not in page.content()
    stream = page.request.get(f"{ui_server.url}/runs/{run_id}/logs/stream")
    assert stream.status == 404
    cancel = page.request.post(
        f"{ui_server.url}/runs/{run_id}/cancel", form={"csrf_token": csrf_token(page)}
    )
    assert cancel.status == 404


def test_markup_in_event_data_and_log_lines_does_not_run(
    ui_server: UIServer, new_page: Callable[..., Page]
) -> None:
    keys = ui_server.project()
    service = ui_server.deploy(keys, unique("inert"), {"talk.py": TALKER})
    run_id = _start(ui_server, service, {"tag": MARKUP, "lines": 2})
    wait_for(lambda: _status(ui_server, run_id) is not None, what="the run is recorded")
    page = new_page()
    sign_in(page, ui_server, keys.viewer, f"/runs/{run_id}")
    expect(page.locator("#log-end")).to_contain_text("succeeded", timeout=60_000)
    expect(page.locator("#log-lines")).to_contain_text(f"line 0 of {MARKUP}")
    page.reload()
    expect(page.locator("#cause-event")).to_contain_text("<script>window.__pwned=1</script>")
    expect(page.locator("#log-lines")).to_contain_text(f"printed {MARKUP}")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]
