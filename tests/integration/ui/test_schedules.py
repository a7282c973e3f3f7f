"""The schedules view in a real browser: next fire times, run now (a run with the schedule's
parameters), skip next, pause and resume; a viewer sees no actions and is refused (403);
another project's schedule is not found (404)."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from fxray.events.schedules import next_fire_times
from fxray.store import NotFound
from fxray.ui.templating import when
from tests.integration.ui.conftest import (
    Keys,
    UIServer,
    csrf_token,
    screenshot,
    sign_in,
    unique,
    wait_for,
)

ECHO = """
from fxray import context
context.result = {"tag": context.params.get("tag"), "schedule": context.params.get("schedule_id")}
"""
YEARLY = "0 3 1 1 *"  # far enough away that no tick fires during the test


def _scheduled(server: UIServer, keys: Keys) -> tuple[str, str]:
    service = server.deploy(keys, unique("cron"), {"echo.py": ECHO})
    store = server.platform.store
    assert store is not None
    schedule = store.upsert_schedule(service, YEARLY, params={"tag": "from-ui"}, origin="api")
    return service, schedule.id


def _result(server: UIServer, run_id: str) -> object:
    try:
        run = server.platform.store.get_run(run_id)  # type: ignore[union-attr]
    except NotFound:
        return None
    return run.result if run.status == "succeeded" else None


def test_run_now_skip_next_pause_and_resume(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    _, schedule_id = _scheduled(ui_server, keys)
    store = ui_server.platform.store
    assert store is not None
    first = store.get_schedule(schedule_id).next_fire_at
    expected = [first, *next_fire_times(YEARLY, first, 4)]

    sign_in(page, ui_server, keys.developer, "/schedules")
    row = page.locator(f'tr[data-schedule="{schedule_id}"]')
    expect(row.locator(".next-times li")).to_have_text([when(t) for t in expected])
    expect(row).to_contain_text("active")

    row.get_by_role("button", name="Run now").click()
    link = page.locator("#schedule-done a")
    expect(link).to_be_visible()
    run_id = link.inner_text()
    result = wait_for(lambda: _result(ui_server, run_id), what="the run now")
    assert result == {"tag": "from-ui", "schedule": schedule_id}
    assert store.get_schedule(schedule_id).next_fire_at == first  # the ticks stay

    row.get_by_role("button", name="Skip next").click()
    expect(page.locator("#schedule-done")).to_contain_text("skipped")
    assert store.get_schedule(schedule_id).skip_next
    expect(row.locator(".skipped")).to_contain_text(when(first))
    expect(row.locator(".next-times li").first).to_have_text(when(expected[1]))
    expect(row.get_by_role("button", name="Skip next")).to_have_count(0)
    screenshot(page, "schedules")

    row.get_by_role("button", name="Pause").click()
    expect(page.locator("#schedule-done")).to_contain_text("paused")
    assert not store.get_schedule(schedule_id).active
    expect(row).to_contain_text("paused")
    expect(row.locator(".next-times")).to_have_count(0)

    row.get_by_role("button", name="Resume").click()
    expect(page.locator("#schedule-done")).to_contain_text("resumed")
    assert store.get_schedule(schedule_id).active
    expect(row.locator(".next-times li")).to_have_count(5)


def test_a_viewer_sees_no_actions_and_is_refused(ui_server: UIServer, page: Page) -> None:
    keys = ui_server.project()
    _, schedule_id = _scheduled(ui_server, keys)
    sign_in(page, ui_server, keys.viewer, "/schedules")
    row = page.locator(f'tr[data-schedule="{schedule_id}"]')
    expect(row.locator(".next-times li")).to_have_count(5)
    expect(row.get_by_role("button")).to_have_count(0)
    token = csrf_token(page)
    for action in ("run-now", "skip", "pause", "resume"):
        answer = page.request.post(
            f"{ui_server.url}/schedules/{schedule_id}/{action}", form={"csrf_token": token}
        )
        assert answer.status == 403, action
    record = ui_server.platform.store.get_schedule(schedule_id)  # type: ignore[union-attr]
    assert record.active and not record.skip_next


def test_another_projects_schedule_is_not_found(ui_server: UIServer, page: Page) -> None:
    mine, theirs = ui_server.project(), ui_server.project()
    _scheduled(ui_server, mine)
    _, their_schedule = _scheduled(ui_server, theirs)
    sign_in(page, ui_server, mine.admin, "/schedules")
    expect(page.locator("tr[data-schedule]")).to_have_count(1)
    expect(page.locator(f'tr[data-schedule="{their_schedule}"]')).to_have_count(0)
    answer = page.request.post(
        f"{ui_server.url}/schedules/{their_schedule}/pause", form={"csrf_token": csrf_token(page)}
    )
    assert answer.status == 404
    assert ui_server.platform.store.get_schedule(their_schedule).active  # type: ignore[union-attr]
