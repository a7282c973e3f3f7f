"""Schedules: API-made and manifest schedules, params, next fire times, skip, and exactly-once
ticks with two platform processes on one database (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fxray import Platform, Settings
from fxray.events import cloudevent as ev
from fxray.store import RunRecord
from tests.integration.api.conftest import database_url

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness, ProjectKeys

ECHO = "from fxray import context\ncontext.result = dict(context.params)\n"
# appends the tick's event id to the file named by the schedule's params (one line per run)
LOG_TICK = (
    "import os\nfrom fxray import context\n"
    "fd = os.open(context.params['log'], os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
    "os.write(fd, (context.event['id'] + '\\n').encode())\nos.close(fd)\n"
)
EVERY_SECOND = "* * * * * *"  # croniter: a sixth field is seconds
PARAMETERS = json.dumps(
    [
        {"name": "region", "type": "select", "choices": ["ch", "de"], "required": True},
        {"name": "limit", "type": "int", "default": 10},
    ]
)


def name(prefix: str = "sch") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def deploy(
    api: ApiHarness,
    project: ProjectKeys,
    service_dir: Callable[..., Path],
    scripts: dict[str, str] | None = None,
    **manifest: Any,
) -> str:
    service = name()
    api.platform.deploy(
        service_dir(service, scripts or {"s.py": ECHO}, **manifest), project=project.name
    )
    return service


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def succeeded(api: ApiHarness, project: ProjectKeys, service: str) -> list[RunRecord]:
    """The succeeded runs of ``project``'s service ``service``."""
    service_id = api.service_id(service, project)
    return api.platform.runs(service=service_id, status="succeeded", limit=None)


# --------------------------------------------------------------------------- API schedules


def test_a_schedule_every_second_runs_the_service_with_its_params(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = deploy(api, project, service_dir)
    made = api.client.post(
        f"/api/v1/services/{service}/schedules",
        json={"cron": EVERY_SECOND, "params": {"region": "ch", "n": 3}},
        headers=project.developer,
    )
    assert made.status_code == 201, made.text
    schedule = made.json()
    assert (
        schedule["origin"] == "api" and schedule["active"] and schedule["project"] == project.name
    )
    assert schedule["params"] == {"region": "ch", "n": 3}
    runs = wait_for(lambda: len(r := succeeded(api, project, service)) >= 3 and r, what="3 ticks")
    api.client.patch(
        f"/api/v1/schedules/{schedule['id']}", json={"active": False}, headers=project.developer
    )
    for run in runs:
        assert run.event_type == ev.SCHEDULE_TICK and run.trigger_id == "schedule"
        assert run.event_id.startswith(f"tick:{schedule['id']}:")
        assert run.result["region"] == "ch" and run.result["n"] == 3  # context.params
        assert run.result["schedule_id"] == schedule["id"]
    times = [stamp(r.result["scheduled_for"]) for r in runs]
    assert len(set(times)) == len(times), "each tick ran once"
    assert all(t == int(t) for t in times)
    got = api.client.get(f"/api/v1/schedules/{schedule['id']}", headers=project.viewer).json()
    assert got["active"] is False and got["last_fired_at"] is not None


def test_params_are_validated_against_parameters_json(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = deploy(api, project, service_dir, {"s.py": ECHO, "parameters.json": PARAMETERS})
    url = f"/api/v1/services/{service}/schedules"
    bad = api.client.post(
        url, json={"cron": "0 * * * *", "params": {"region": "fr"}}, headers=project.developer
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["problems"]
    good = api.client.post(
        url, json={"cron": "0 * * * *", "params": {"region": "de"}}, headers=project.developer
    )
    assert good.status_code == 201
    assert good.json()["params"] == {"region": "de", "limit": 10}  # defaults filled in
    patched = api.client.patch(
        f"/api/v1/schedules/{good.json()['id']}",
        json={"params": {"limit": "x"}},
        headers=project.developer,
    )
    assert patched.status_code == 422


@pytest.mark.parametrize(
    ("cron", "says"),
    [
        ("not a cron", "not a valid cron expression"),
        ("61 * * * *", "not a valid cron expression"),
        ("* * * *", "not a valid cron expression"),
        ("0 0 30 2 *", "never fires"),
        ("   ", "cannot be empty"),
    ],
)
def test_invalid_cron_is_422_with_a_clear_message(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path], cron: str, says: str
) -> None:
    project = sqlite_api.project()
    service = deploy(sqlite_api, project, service_dir)
    answer = sqlite_api.client.post(
        f"/api/v1/services/{service}/schedules", json={"cron": cron}, headers=project.developer
    )
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert says in error["message"]
    assert error["problems"][0]["location"] == "body.cron"


def test_crud_roles_and_projects(sqlite_api: ApiHarness, service_dir: Callable[..., Path]) -> None:
    api = sqlite_api
    mine, other = api.project(), api.project()
    service = deploy(api, mine, service_dir)
    url = f"/api/v1/services/{service}/schedules"
    body = {"cron": "*/5 * * * *", "params": {"a": 1}, "active": False}
    assert api.client.post(url, json=body, headers=mine.viewer).status_code == 403
    assert api.client.post(url, json=body, headers=other.developer).status_code == 404
    missing = api.client.post(
        "/api/v1/services/no-such-service/schedules", json=body, headers=api.admin
    )
    assert missing.status_code == 404
    extra = api.client.post(url, json={**body, "every": 5}, headers=mine.developer)
    assert extra.status_code == 422
    made = api.client.post(url, json=body, headers=mine.developer)
    assert made.status_code == 201
    schedule = made.json()
    assert schedule["active"] is False
    sid = schedule["id"]

    listed = api.client.get("/api/v1/schedules", headers=mine.viewer).json()
    assert [s["id"] for s in listed["items"]] == [sid] and listed["total"] == 1
    assert api.client.get("/api/v1/schedules", headers=other.viewer).json()["items"] == []
    by_service = api.client.get(f"/api/v1/schedules?service={service}", headers=api.admin).json()
    assert [s["id"] for s in by_service["items"]] == [sid]
    by_project = api.client.get(f"/api/v1/schedules?project={mine.name}", headers=api.admin)
    assert [s["id"] for s in by_project.json()["items"]] == [sid]
    hidden = api.client.get(f"/api/v1/schedules?project={mine.name}", headers=other.viewer)
    assert hidden.status_code == 404
    assert api.client.get(f"/api/v1/schedules/{sid}", headers=other.admin).status_code == 404

    patched = api.client.patch(
        f"/api/v1/schedules/{sid}",
        json={"cron": "0 12 * * *", "active": True},
        headers=mine.developer,
    )
    assert patched.status_code == 200
    assert patched.json()["cron"] == "0 12 * * *" and patched.json()["active"] is True
    assert patched.json()["next_fire_time"].endswith("T12:00:00Z")
    bad = api.client.patch(f"/api/v1/schedules/{sid}", json={"cron": "x"}, headers=mine.developer)
    assert bad.status_code == 422
    viewer = api.client.patch(f"/api/v1/schedules/{sid}", json={}, headers=mine.viewer)
    assert viewer.status_code == 403

    assert api.client.delete(f"/api/v1/schedules/{sid}", headers=other.admin).status_code == 404
    assert api.client.delete(f"/api/v1/schedules/{sid}", headers=mine.developer).status_code == 204
    assert api.client.get(f"/api/v1/schedules/{sid}", headers=mine.viewer).status_code == 404
    assert api.client.delete(f"/api/v1/schedules/{sid}", headers=mine.developer).status_code == 404


def test_a_manifest_schedule_is_changed_by_the_manifest(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = name()
    api.platform.deploy(
        service_dir(service, {"s.py": ECHO}, schedule="0 6 * * *"), project=project.name
    )
    listed = api.client.get(f"/api/v1/schedules?service={service}", headers=project.viewer)
    (schedule,) = listed.json()["items"]
    assert schedule["origin"] == "manifest" and schedule["cron"] == "0 6 * * *"
    url = f"/api/v1/schedules/{schedule['id']}"
    cron = api.client.patch(url, json={"cron": "0 7 * * *"}, headers=project.developer)
    assert cron.status_code == 409 and "manifest" in cron.json()["error"]["message"]
    same = api.client.patch(url, json={"cron": "0 6 * * *"}, headers=project.developer)
    assert same.status_code == 200  # not a change
    paused = api.client.patch(
        url, json={"active": False, "params": {"mode": "full"}}, headers=project.developer
    )
    assert paused.status_code == 200
    assert paused.json()["active"] is False and paused.json()["params"] == {"mode": "full"}
    removed = api.client.delete(url, headers=project.developer)
    assert removed.status_code == 409 and "manifest" in removed.json()["error"]["message"]
    # a new manifest changes it (the same schedule; its params stay) ...
    api.platform.deploy(
        service_dir(service, {"s.py": ECHO}, schedule="0 8 * * *"),
        project=project.name,
    )
    changed = api.client.get(url, headers=project.viewer).json()
    assert changed["cron"] == "0 8 * * *" and changed["params"] == {"mode": "full"}
    # ... and a manifest without one removes it
    api.platform.deploy(service_dir(service, {"s.py": ECHO}), project=project.name)
    assert api.client.get(url, headers=project.viewer).status_code == 404


def test_next_fire_times(sqlite_api: ApiHarness, service_dir: Callable[..., Path]) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = deploy(api, project, service_dir)
    made = api.client.post(
        f"/api/v1/services/{service}/schedules",
        json={"cron": "*/15 * * * *"},
        headers=project.developer,
    ).json()
    url = f"/api/v1/schedules/{made['id']}/next"
    answer = api.client.get(url, headers=project.viewer).json()
    assert len(answer["times"]) == 5 and answer["skipped"] is None
    assert all(t.endswith(":00Z") for t in answer["times"])
    stamps = [stamp(t) for t in answer["times"]]
    assert stamps[0] == made["next_fire_at"] and stamps[0] > time.time()
    assert all(b - a == 900 for a, b in pairwise(stamps))
    assert len(api.client.get(f"{url}?count=100", headers=project.viewer).json()["times"]) == 100
    assert len(api.client.get(f"{url}?count=1", headers=project.viewer).json()["times"]) == 1
    for count in (0, 101, -1, "x"):
        assert api.client.get(f"{url}?count={count}", headers=project.viewer).status_code == 422
    missing = api.client.get("/api/v1/schedules/nope/next", headers=project.viewer)
    assert missing.status_code == 404


def test_skip_skips_exactly_the_next_tick(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = deploy(api, project, service_dir)
    made = api.client.post(
        f"/api/v1/services/{service}/schedules",
        json={"cron": "* * * * * */2", "params": {"x": 1}},
        headers=project.developer,
    ).json()
    skip = api.client.post(f"/api/v1/schedules/{made['id']}/skip", headers=project.developer)
    assert skip.status_code == 200, skip.text
    skipped = skip.json()
    assert stamp(skipped["next"]) - stamp(skipped["skipped"]) == 2
    shown = api.client.get(f"/api/v1/schedules/{made['id']}", headers=project.viewer).json()
    assert shown["skip_next"] is True
    upcoming = api.client.get(f"/api/v1/schedules/{made['id']}/next", headers=project.viewer)
    assert upcoming.json()["skipped"] == skipped["skipped"]
    assert upcoming.json()["times"][0] == skipped["next"]
    # skipping again before the tick is due skips the same one tick
    again = api.client.post(f"/api/v1/schedules/{made['id']}/skip", headers=project.developer)
    assert again.json()["skipped"] == skipped["skipped"]

    after = stamp(skipped["next"]) + 2

    def fired() -> list[float]:
        return sorted(stamp(r.result["scheduled_for"]) for r in succeeded(api, project, service))

    times = wait_for(lambda: after in (t := fired()) and t, what="the ticks after the skipped one")
    api.client.patch(
        f"/api/v1/schedules/{made['id']}", json={"active": False}, headers=project.developer
    )
    assert stamp(skipped["skipped"]) not in times
    assert stamp(skipped["next"]) in times, "only one tick was skipped"
    assert min(times) > stamp(skipped["skipped"])
    shown = api.client.get(f"/api/v1/schedules/{made['id']}", headers=project.viewer).json()
    assert shown["skip_next"] is False
    paused = api.client.post(f"/api/v1/schedules/{made['id']}/skip", headers=project.developer)
    assert paused.status_code == 409


def test_ticks_of_an_inactive_service_are_consumed_without_runs(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api, project = sqlite_api, sqlite_api.project()
    service = deploy(api, project, service_dir)
    api.platform.activate(api.service_id(service, project), False)
    made = api.client.post(
        f"/api/v1/services/{service}/schedules",
        json={"cron": EVERY_SECOND},
        headers=project.developer,
    ).json()
    url = f"/api/v1/schedules/{made['id']}"
    wait_for(
        lambda: (
            api.client.get(url, headers=project.viewer).json()["next_fire_at"]
            > made["next_fire_at"] + 1
        ),
        what="ticks to be consumed",
    )
    api.client.patch(url, json={"active": False}, headers=project.developer)
    time.sleep(1.0)
    assert api.platform.runs(service=api.service_id(service, project), limit=None) == []


# --------------------------------------------------------------------------- two processes


@pytest.fixture(params=["sqlite", "postgresql"])
def two_platforms(
    request: pytest.FixtureRequest, ray_session: None, tmp_path: Path
) -> Iterator[tuple[Platform, Platform]]:
    """Two platform processes (each its own router, bus and schedule loop) on one database."""
    url, drop = database_url(request.param, tmp_path)
    started: list[Platform] = []
    try:
        for _ in range(2):
            settings = Settings(
                home=tmp_path / "home", instance=f"x{uuid.uuid4().hex[:8]}", database_url=url
            )
            started.append(Platform(settings).start())
        yield started[0], started[1]
    finally:
        for platform in started:
            platform.stop()
        if drop is not None:
            drop()


def test_each_tick_fires_once_with_two_platform_processes(
    two_platforms: tuple[Platform, Platform], service_dir: Callable[..., Path], tmp_path: Path
) -> None:
    first, second = two_platforms
    assert first.store is not None and second.store is not None
    service = name("once")
    first.deploy(service_dir(service, {"log.py": LOG_TICK}))
    log = tmp_path / "ticks.log"
    schedule = first.store.upsert_schedule(service, EVERY_SECOND, params={"log": str(log)})
    second.refresh()
    time.sleep(5.5)
    second.store.update_schedule(schedule.id, active=False)
    time.sleep(0.6)  # a tick claimed just before the pause is still published
    for platform in (first, second):
        platform.wait_idle(timeout=60)
    fired = log.read_text().split() if log.exists() else []
    per_tick = Counter(fired)
    assert len(per_tick) >= 3, f"too few ticks ran: {fired}"
    assert all(n == 1 for n in per_tick.values()), f"a tick ran twice: {per_tick}"
    published = sum(p.stats()["counters"].get("schedule_ticks", 0) for p in (first, second))
    assert published == len(per_tick), "each tick was published by one process only"
    runs = first.runs(service=service, limit=None)
    assert Counter(r.event_id for r in runs) == per_tick
    assert {r.status for r in runs} == {"succeeded"}
