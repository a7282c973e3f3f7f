"""``GET /logs`` with the ops sink off: a bounded search of the run rows' logs, scoped to the
key's project like the Elasticsearch search."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tests.integration.api.conftest import ApiHarness, sqlite_api
from tests.integration.ops.conftest import wait_for

__all__ = ["sqlite_api"]

SAY = """
from fxray import context
context.log.info("hello %s", context.params["name"])
context.log.warning("careful %s", context.params["name"])
"""


def test_log_search_reads_the_run_rows_when_the_sink_is_off(
    sqlite_api: ApiHarness, service_dir: Callable[..., Path]
) -> None:
    api = sqlite_api
    project, other = api.project(), api.project()
    name = f"say{uuid.uuid4().hex[:6]}"
    api.platform.deploy(service_dir(name, {"say.py": SAY}), project=project.name)
    started = time.time()
    runs = []
    for who in ("ada", "bob"):
        answer = api.client.post(
            f"/api/v1/services/{name}/runs",
            json={"params": {"name": who}},
            headers=project.developer,
        )
        assert answer.status_code == 202, answer.text
        runs.append(answer.json()["run_id"])
    for run_id in runs:
        wait_for(
            lambda run_id=run_id: (
                api.client.get(f"/api/v1/runs/{run_id}", headers=project.viewer)
                .json()
                .get("status")
                == "succeeded"
            ),
            60,
            "the run",
        )

    def search(headers: dict[str, str], **params: object) -> dict:
        answer = api.client.get("/api/v1/logs", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    every = search(project.viewer, service=name)
    assert every["total"] == 4
    assert {x["run_id"] for x in every["items"]} == set(runs)
    times = [x["time"] for x in every["items"]]
    assert times == sorted(times, reverse=True)
    assert [x["message"] for x in search(project.viewer, q="HELLO bob")["items"]] == ["hello bob"]
    warned = search(project.viewer, level="WARNING", service=name)
    assert {x["message"] for x in warned["items"]} == {"careful ada", "careful bob"}
    assert search(project.viewer, run_id=runs[0])["total"] == 2
    assert search(project.viewer, since=started - 60, until=started - 30)["total"] == 0
    assert search(project.viewer, service=name, limit=1, offset=3)["items"][0]["service"] == name
    assert search(other.viewer, service=name)["total"] == 0
    assert search(other.viewer, q="hello")["total"] == 0
    assert search(api.admin, q="careful ada", service=name)["total"] == 1
