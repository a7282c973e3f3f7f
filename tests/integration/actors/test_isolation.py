"""Isolated runs on real Ray, with real pip installs: a version whose requirements clash with
the platform's packages runs in a worker process of its own and sees exactly its pins, while
ordinary services run in-process beside it and the platform (router, API) goes on."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fxray.services import load_package
from tests.integration.api.conftest import ApiHarness, database_url, start_api
from tests.integration.conftest import write_service

pytestmark = pytest.mark.slow

V1 = "/api/v1"

PROBE = """
import importlib.util, os, sys
from fxray import context

def probe(**found):
    context.result = {
        "pid": os.getpid(),
        "ray": importlib.util.find_spec("ray") is not None,
        "site_packages": [p for p in sys.path if "site-packages" in p],
        "n": context.state.update("runs", lambda n: (n or 0) + 1),
        "event": context.events.send("iso.ran", {"service": context.run.service}),
        **found,
    }
"""

PYDANTIC_1 = (
    PROBE
    + """
import pydantic
assert pydantic.VERSION.startswith("1.10"), pydantic.VERSION

class Order(pydantic.BaseModel):
    id: int
    amount: float

    @pydantic.validator("amount", allow_reuse=True)  # the warm worker runs this again
    def positive(cls, value):
        assert value > 0, "amount must be positive"
        return value

order = Order.parse_obj({"id": "7", "amount": "2.5"})  # pydantic 1's API and coercion
try:
    Order(id=1, amount=-1)
    refused = False
except pydantic.ValidationError:
    refused = True
print("pydantic", pydantic.VERSION)
probe(version=pydantic.VERSION, order=order.dict(), refused=refused)
"""
)

PROTOBUF_3 = (
    PROBE
    + """
import google.protobuf
from google.protobuf import json_format, struct_pb2
assert google.protobuf.__version__ == "3.20.3", google.protobuf.__version__
message = struct_pb2.Struct()
message.update({"a": 1, "b": "x"})
again = struct_pb2.Struct.FromString(message.SerializeToString())
probe(version=google.protobuf.__version__, message=json_format.MessageToDict(again))
"""
)

OLD_REQUESTS = (
    PROBE
    + """
import requests, urllib3
assert requests.__version__ == "2.25.1", requests.__version__
assert urllib3.__version__.startswith("1.26"), urllib3.__version__
session = requests.Session()
prepared = requests.Request("GET", "http://example.invalid/x", params={"q": 1}).prepare()
probe(version=requests.__version__, urllib3=urllib3.__version__, url=prepared.url)
"""
)

PLAIN = (
    PROBE
    + """
import pydantic
probe(version=pydantic.VERSION)
"""
)

PINNED = {
    "iso-pydantic": (PYDANTIC_1, "pydantic==1.10.13\n", "1.10.13"),
    "iso-protobuf": (PROTOBUF_3, "protobuf==3.20.3\n", "3.20.3"),
    "iso-requests": (OLD_REQUESTS, "requests==2.25.1\n", "2.25.1"),
}


@pytest.fixture(scope="module")
def api(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiHarness]:
    folder = tmp_path_factory.mktemp("isolation")
    url, _ = database_url("sqlite", folder)
    harness = start_api(folder, url)
    yield harness
    harness.client.close()
    harness.platform.stop()


@pytest.fixture
def deploy(api: ApiHarness, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Upload a service through the API; its answer."""
    project = api.project("iso")

    def upload(name: str, code: str, requirements: str = "", **manifest: Any) -> dict[str, Any]:
        files = {"main.py": code}
        if requirements:
            files["requirements.txt"] = requirements
        folder = write_service(tmp_path, name, files, **manifest)
        answer = api.client.post(
            f"{V1}/services",
            files={"file": ("svc.zip", load_package(folder).to_zip(), "application/zip")},
            data={"project": project.name},
            headers=api.admin,
        )
        assert answer.status_code in (200, 201), answer.text
        service_id = api.platform.find_service(name, project.name).id
        return answer.json() | {"project": project.name, "service_id": service_id}

    return upload


def _run(api: ApiHarness, service_id: str) -> Any:
    event = api.platform.run(service_id)
    (run,) = api.platform.wait_for_runs(event_id=event["id"], timeout=300)
    return run


def test_pinned_versions_run_isolated_cold_and_warm_beside_in_process_services(
    api: ApiHarness, deploy: Callable[..., dict[str, Any]]
) -> None:
    suffix = uuid.uuid4().hex[:6]
    answers = {
        name: deploy(f"{name}-{suffix}", code, pins) for name, (code, pins, _) in PINNED.items()
    }
    plain = deploy(f"plain-{suffix}", PLAIN)
    # the deploy answer says where each version runs, and why
    for answer in answers.values():
        isolation = answer["version"]["isolation"]
        assert isolation["mode"] == "process", isolation
        assert isolation["resolved"] is True
        assert "runs in an isolated worker process because" in isolation["summary"]
        assert "_isolation" not in answer["version"]["manifest"]
    clashing = {c["package"]: c for c in answers["iso-requests"]["version"]["isolation"]["clashes"]}
    assert clashing["urllib3"]["version"].startswith("1.26")  # pulled in, not pinned
    assert clashing["urllib3"]["requirement"] == "requests==2.25.1"
    assert plain["version"]["isolation"]["mode"] == "in-process"

    ids = {name: answer["service_id"] for name, answer in answers.items()}
    plain_id = plain["service_id"]
    for name, service_id in ids.items():
        expected = PINNED[name][2]
        cold = _run(api, service_id)
        warm = _run(api, service_id)
        between = _run(api, plain_id)  # an in-process service keeps running meanwhile
        for run in (cold, warm):
            assert run.status == "succeeded", (name, run.error, run.logs)
            assert run.result["version"] == expected
            assert run.result["ray"] is False  # only its own packages, the shim and the stdlib
            assert run.result["site_packages"] == []
        assert [cold.result["n"], warm.result["n"]] == [1, 2]  # state through the executor
        assert warm.result["pid"] == cold.result["pid"]  # the warm worker process was reused
        assert between.status == "succeeded", between.error
        assert between.result["version"].startswith("2.")
        assert between.result["ray"] is True
    pydantic_run = _run(api, ids["iso-pydantic"])
    assert pydantic_run.result["order"] == {"id": 7, "amount": 2.5}
    assert pydantic_run.result["refused"] is True
    assert ("STDOUT", "pydantic 1.10.13") in [(line[1], line[3]) for line in pydantic_run.logs]
    assert _run(api, ids["iso-protobuf"]).result["message"] == {"a": 1.0, "b": "x"}
    assert _run(api, ids["iso-requests"]).result["url"] == "http://example.invalid/x?q=1"

    # the events they emitted went through the platform: routed, traced, recorded
    stats = {p["version_id"]: p for p in api.platform.stats()["executors"]}
    for answer in answers.values():
        assert stats[answer["version"]["id"]]["isolated"] is True
    assert stats[plain["version"]["id"]]["isolated"] is False
    traced = api.platform.trace(pydantic_run.event_id)
    emitted = [i["event"]["type"] for i in traced if i["kind"] == "event"]
    assert "iso.ran" in emitted

    # the API goes on answering, and shows the decision on the version
    versions = api.client.get(
        f"{V1}/services/{answers['iso-pydantic']['service']['name']}/versions",
        params={"project": answers["iso-pydantic"]["project"]},
        headers=api.admin,
    )
    assert versions.status_code == 200, versions.text
    (version,) = versions.json()["items"]
    assert version["isolation"]["mode"] == "process"
    assert [c["package"] for c in version["isolation"]["clashes"]] == ["pydantic"]


def test_an_isolated_run_that_hangs_or_kills_its_process_ends_alone(
    api: ApiHarness, deploy: Callable[..., dict[str, Any]]
) -> None:
    code = (
        "import os, time\nfrom fxray import context\n"
        "mode = context.params.get('mode')\n"
        "if mode == 'hang':\n    time.sleep(120)\n"
        "if mode == 'exit':\n    os._exit(9)\n"
        "context.result = os.getpid()\n"
    )
    answer = deploy(f"iso-fail-{uuid.uuid4().hex[:6]}", code, isolation="process", timeout_s=2)
    assert answer["version"]["isolation"]["mode"] == "process"
    assert answer["version"]["isolation"]["requested"] == "process"
    service_id = answer["service_id"]

    def run(mode: str | None) -> Any:
        event = api.platform.run(service_id, {"mode": mode} if mode else {})
        (done,) = api.platform.wait_for_runs(event_id=event["id"], timeout=120)
        return done

    first = run(None)
    assert first.status == "succeeded", first.error
    hung = run("hang")
    assert hung.status == "timed_out" and "timed out after 2s" in hung.error
    assert hung.duration_ms < 10_000
    after_hang = run(None)
    assert after_hang.status == "succeeded"
    assert after_hang.result == first.result  # interrupted, not killed: still the warm worker
    died = run("exit")
    assert died.status == "failed"
    assert "isolated worker process died during the run (exit code 9)" in died.error
    again = run(None)
    assert again.status == "succeeded" and again.result != first.result  # a fresh worker
    pools = {p["version_id"]: p for p in api.platform.stats()["executors"]}
    assert pools[answer["version"]["id"]]["actors"] == 1  # the executor itself was never lost
