"""Service names are unique within a project, not across projects: two projects each have a
service of one name, through the API, on SQLite and PostgreSQL. Each project deploys, links,
runs, lists, changes and deletes its own; nothing reaches or names the other's."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from fxray.services import load_package
from tests.integration.api.conftest import ApiHarness, ProjectKeys
from tests.integration.conftest import write_service

V1 = "/api/v1"

# Each project's service logs its own word, its live config and its own state's counter: a
# mix-up of code, KV config or KV state between the two shows in the logs. Its result says
# what the script sees of itself.
SCRIPT = """
from fxray import context
count = context.state.update("runs", lambda n: (n or 0) + 1)
context.log.info("%s run %d config %s", WORD, count, context.config.get("colour"))
context.result = {"package": context.package.name, "service": context.run.service}
"""


def service_zip(root: Path, name: str, word: str) -> bytes:
    code = f"WORD = {word!r}\n{SCRIPT}"
    return load_package(write_service(root, name, {"main.py": code})).to_zip()


def upload(api: ApiHarness, data: bytes, headers: dict[str, str], **form: str) -> Any:
    return api.client.post(
        f"{V1}/services",
        files={"file": ("service.zip", data, "application/zip")},
        data=form,
        headers=headers,
    )


def run_messages(api: ApiHarness, run_id: str, headers: dict[str, str]) -> list[str]:
    detail = api.client.get(f"{V1}/runs/{run_id}", headers=headers)
    assert detail.status_code == 200, detail.text
    return [line["message"] for line in detail.json()["logs"]]


def manual_run(api: ApiHarness, name: str, keys: ProjectKeys) -> str:
    started = api.client.post(f"{V1}/services/{name}/runs", json={}, headers=keys.developer)
    assert started.status_code == 202, started.text
    (run,) = api.platform.wait_for_runs(event_id=started.json()["event_id"])
    assert run.status == "succeeded", run.error
    return run.id


def test_two_projects_each_have_their_own_service_of_one_name(
    api: ApiHarness, tmp_path: Path
) -> None:
    a, b, c = api.project("a"), api.project("b"), api.project("c")
    name = f"orders-{uuid.uuid4().hex[:6]}"
    type_a, type_b = f"test.{name}.a", f"test.{name}.b"

    # the same name deploys in both projects: two services, neither a 409
    deployed = {}
    for keys, word in ((a, "alpha"), (b, "beta")):
        made = upload(api, service_zip(tmp_path / word, name, word), keys.developer, label="v1")
        assert made.status_code == 201, made.text
        body = made.json()
        assert (body["service"]["name"], body["service"]["project"]) == (name, keys.name)
        assert body["version"]["service"] == name and body["version"]["label"] == "v1"
        deployed[keys.name] = body["version"]["id"]
    assert deployed[a.name] != deployed[b.name]

    # a duplicate within one project still answers 409: a label its service has already
    again = upload(api, service_zip(tmp_path / "again", name, "alpha-2"), a.developer, label="v1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert a.name not in again.text and b.name not in again.text

    # each project links its own event type to its own service, by name
    triggers = {}
    for keys, event_type in ((a, type_a), (b, type_b)):
        link = {"pattern": event_type, "service": name}
        made = api.client.post(f"{V1}/triggers", json=link, headers=keys.developer)
        assert made.status_code == 201, made.text
        assert (made.json()["service"], made.json()["project"]) == (name, keys.name)
        triggers[keys.name] = made.json()["id"]

    # live config, by service id (the platform's key for KV): each service its own
    ids = {k.name: api.platform.find_service(name, k.name).id for k in (a, b)}
    assert len(set(ids.values())) == 2
    api.platform.configure(ids[a.name], config={"colour": "red"})
    api.platform.configure(ids[b.name], config={"colour": "blue"})

    # events: each project's runs go to its own service
    runs: dict[str, list[str]] = {a.name: [], b.name: []}
    for keys, event_type in ((a, type_a), (b, type_b)):
        event = api.platform.send(event_type, {"n": 1})
        (run,) = api.platform.wait_for_runs(correlation_id=event["id"])
        assert run.status == "succeeded", run.error
        assert run.service == ids[keys.name]
        # the script sees its service's name, as its users know it, and the platform's id
        assert run.result == {"package": name, "service": ids[keys.name]}
        runs[keys.name].append(run.id)
    for keys in (a, b):
        runs[keys.name].append(manual_run(api, name, keys))

    expected = {a.name: ("alpha", "red"), b.name: ("beta", "blue")}
    for keys in (a, b):
        word, colour = expected[keys.name]
        for count, run_id in enumerate(runs[keys.name], start=1):
            assert run_messages(api, run_id, keys.viewer) == [f"{word} run {count} config {colour}"]
            detail = api.client.get(f"{V1}/runs/{run_id}", headers=keys.viewer).json()
            assert (detail["service"], detail["project"]) == (name, keys.name)
        listed = api.client.get(f"{V1}/runs?service={name}", headers=keys.viewer).json()
        assert sorted(r["id"] for r in listed["items"]) == sorted(runs[keys.name])
        assert {(r["service"], r["project"]) for r in listed["items"]} == {(name, keys.name)}

    # listing and getting: each project sees only its own, by the same name
    for keys, other in ((a, b), (b, a)):
        services = api.client.get(f"{V1}/services", headers=keys.viewer).json()["items"]
        assert [(s["name"], s["project"]) for s in services] == [(name, keys.name)]
        one = api.client.get(f"{V1}/services/{name}", headers=keys.viewer).json()
        assert one["project"] == keys.name and one["latest_version"] == deployed[keys.name]
        versions = api.client.get(f"{V1}/services/{name}/versions", headers=keys.viewer).json()
        assert [v["id"] for v in versions["items"]] == [deployed[keys.name]]
        linked = api.client.get(f"{V1}/triggers", headers=keys.viewer).json()["items"]
        assert [t["id"] for t in linked] == [triggers[keys.name]]
        for path in (f"/runs/{runs[other.name][0]}", f"/triggers/{triggers[other.name]}"):
            assert api.client.get(f"{V1}{path}", headers=keys.viewer).status_code == 404, path
        foreign = api.client.get(f"{V1}/services/{name}?project={other.name}", headers=keys.admin)
        assert foreign.status_code == 404

    # a project without the name: 404, naming neither project that has it
    for path in ("", "/versions", "/docs", "/report"):
        missing = api.client.get(f"{V1}/services/{name}{path}", headers=c.admin)
        assert missing.status_code == 404, path
        assert a.name not in missing.text and b.name not in missing.text
    refused = api.client.post(
        f"{V1}/triggers", json={"pattern": "x", "service": name}, headers=c.developer
    )
    assert refused.status_code == 404 and a.name not in refused.text
    assert (
        api.client.post(f"{V1}/services/{name}/runs", json={}, headers=c.developer).status_code
        == 404
    )

    # changing and deleting in one project leaves the other's alone
    off = api.client.patch(f"{V1}/services/{name}", json={"active": False}, headers=a.developer)
    assert off.status_code == 200 and off.json()["active"] is False
    assert api.client.get(f"{V1}/services/{name}", headers=b.viewer).json()["active"] is True
    schedules = {}
    for keys in (a, b):
        made = api.client.post(
            f"{V1}/services/{name}/schedules", json={"cron": "0 0 1 1 *"}, headers=keys.developer
        )
        assert made.status_code == 201, made.text
        assert (made.json()["service"], made.json()["project"]) == (name, keys.name)
        schedules[keys.name] = made.json()["id"]
    for kind, ids_of in (("triggers", triggers), ("schedules", schedules)):
        gone = api.client.delete(f"{V1}/{kind}/{ids_of[a.name]}", headers=a.developer)
        assert gone.status_code == 204
        kept = api.client.get(f"{V1}/{kind}", headers=b.viewer).json()["items"]
        assert [item["id"] for item in kept] == [ids_of[b.name]], kind
        assert api.client.get(f"{V1}/{kind}", headers=a.viewer).json()["items"] == []
    event = api.platform.send(type_b, {"n": 2})  # B's service still runs on its trigger
    (run,) = api.platform.wait_for_runs(correlation_id=event["id"])
    assert run.service == ids[b.name] and run.status == "succeeded"
    assert run_messages(api, run.id, b.viewer) == ["beta run 3 config blue"]


def test_a_platform_wide_key_names_the_project_where_a_name_is_in_several(
    api: ApiHarness, tmp_path: Path
) -> None:
    a, b = api.project("a"), api.project("b")
    name = f"orders-{uuid.uuid4().hex[:6]}"
    assert upload(api, service_zip(tmp_path / "a", name, "alpha"), a.developer).status_code == 201

    # one project has it: the name alone is enough
    assert api.client.get(f"{V1}/services/{name}", headers=api.admin).json()["project"] == a.name

    assert upload(api, service_zip(tmp_path / "b", name, "beta"), b.developer).status_code == 201
    ambiguous = api.client.get(f"{V1}/services/{name}", headers=api.admin)
    assert ambiguous.status_code == 422
    assert ambiguous.json()["error"]["problems"][0]["location"] == "query.project"
    for keys in (a, b):
        one = api.client.get(f"{V1}/services/{name}?project={keys.name}", headers=api.admin)
        assert one.status_code == 200 and one.json()["project"] == keys.name
    both = api.client.get(f"{V1}/services?q={name}", headers=api.admin).json()["items"]
    assert sorted(s["project"] for s in both) == sorted([a.name, b.name])

    link = {"pattern": f"test.{name}", "service": name}
    unnamed = api.client.post(f"{V1}/triggers", json=link, headers=api.admin)
    assert unnamed.status_code == 422
    assert unnamed.json()["error"]["problems"][0]["location"] == "body.project"
    named = api.client.post(f"{V1}/triggers", json={**link, "project": b.name}, headers=api.admin)
    assert named.status_code == 201 and named.json()["project"] == b.name
    listed = api.client.get(f"{V1}/triggers?service={name}", headers=api.admin).json()["items"]
    assert [(t["id"], t["project"]) for t in listed] == [(named.json()["id"], b.name)]
    # a project key's own project needs no naming; naming another is a 404
    assert api.client.get(f"{V1}/services/{name}", headers=a.viewer).status_code == 200
    mixed = api.client.get(f"{V1}/services/{name}?project={b.name}", headers=a.viewer)
    assert mixed.status_code == 404
