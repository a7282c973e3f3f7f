"""Executors on real Ray: failures of every kind, retries, secrets, dependency isolation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from fxray import Platform

HANGS = "import time\ntime.sleep(120)\n"
KILLS_ITS_PROCESS = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
EXITS_HARD = "import os\nos._exit(7)\n"
RAISES = "raise ValueError('bad input row 3')\n"
EXITS = "import sys\nsys.exit(3)\n"
FINE = "from fxray import context\ncontext.result = 'ok'\n"


def _run_one(platform: Platform, service: str, timeout: float = 60) -> object:
    event = platform.run(service)
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=timeout)
    return run


@pytest.mark.parametrize(
    ("script", "status", "reason"),
    [
        (RAISES, "failed", "ValueError: bad input row 3"),
        (EXITS, "failed", "sys.exit(3)"),
        (KILLS_ITS_PROCESS, "failed", "executor process died"),
        (EXITS_HARD, "failed", "executor process died"),
    ],
    ids=["raises", "sys-exit", "sigkill", "os-exit"],
)
def test_a_failing_script_ends_its_run_and_the_platform_goes_on(
    platform: Platform,
    service_dir: Callable[..., Path],
    script: str,
    status: str,
    reason: str,
) -> None:
    platform.deploy(service_dir("bad", {"a.py": script, "b.py": FINE}))
    platform.deploy(service_dir("good", {"ok.py": FINE}))
    run = _run_one(platform, "bad")
    assert run.status == status
    assert reason in (run.error or "")
    if "executor" not in reason:
        assert [s["status"] for s in run.steps] == ["failed"]  # b.py never ran
    assert _run_one(platform, "good").status == "succeeded"
    assert _run_one(platform, "bad").status == status  # a fresh executor replaced the dead one


def test_a_hanging_script_times_out_and_its_executor_is_replaced(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("hangs", {"h.py": HANGS}, timeout_s=1))
    run = _run_one(platform, "hangs")
    assert run.status == "timed_out"
    assert "timed out after 1s" in run.error
    assert run.duration_ms < 10_000
    platform.deploy(service_dir("after", {"ok.py": FINE}))
    assert _run_one(platform, "after").status == "succeeded"


def test_batch_with_a_process_killer_isolates_the_culprit(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    code = (
        "import os, signal\nfrom fxray import context\n"
        "if context.params.get('kill'):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    platform.deploy(service_dir("mixed", {"m.py": code}, trigger_events=["mixed.go"]))
    warm = platform.send("mixed.go", {})  # measures run time, so later runs are batched
    platform.wait_for_runs(event_id=warm["id"])
    events = [platform.send("mixed.go", {"kill": i == 25}) for i in range(50)]
    platform.wait_idle(timeout=120)
    runs = {r.event_id: r for r in platform.runs(service="mixed", limit=None)}
    statuses = [runs[e["id"]].status for e in events]
    assert statuses.count("failed") == 1
    assert statuses[25] == "failed"
    assert statuses.count("succeeded") == 49


def test_retries_with_backoff_until_success(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    flaky = (
        "from fxray import context\n"
        "n = context.state.update('tries', lambda v: (v or 0) + 1)\n"
        "if n < 3:\n    raise RuntimeError(f'flaky attempt {n}')\n"
        "context.result = n\n"
    )
    platform.deploy(service_dir("flaky", {"f.py": flaky}, retries={"max": 3, "backoff_s": 0.1}))
    run = _run_one(platform, "flaky")
    assert run.status == "succeeded"
    assert run.attempt == 3
    assert run.result == 3
    warnings = [line[3] for line in run.logs if line[1] == "WARNING"]
    assert len(warnings) == 2 and "retrying in 0.1s" in warnings[0]


def test_retries_exhausted_ends_failed(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    platform.deploy(service_dir("doomed", {"d.py": RAISES}, retries={"max": 2, "backoff_s": 0}))
    run = _run_one(platform, "doomed")
    assert run.status == "failed"
    assert run.attempt == 3


def test_secrets_never_reach_logs_or_run_records(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    secret = "s3cr3t-token-8812"
    leaky = (
        "from fxray import context\n"
        "token = context.secrets['api_token']\n"
        "print('token is', token)\n"
        "context.log.warning('using %s', token)\n"
        "context.result = {'echo': token}\n"
        "raise RuntimeError('rejected ' + token)\n"
    )
    files = {"l.py": leaky, "secrets.json": json.dumps({"api_token": secret})}
    platform.deploy(service_dir("leaky", files))
    run = _run_one(platform, "leaky")
    assert run.status == "failed"
    record = json.dumps(
        {"logs": run.logs, "error": run.error, "result": run.result, "steps": run.steps}
    )
    assert secret not in record
    assert record.count("***") >= 4


def test_versions_get_their_own_dependencies_side_by_side(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    code = "import six\nfrom fxray import context\ncontext.result = six.__version__\n"
    old = service_dir("deps", {"d.py": code, "requirements.txt": "six==1.15.0\n"})
    new = service_dir("deps", {"d.py": code + "# new\n", "requirements.txt": "six==1.16.0\n"})
    platform.deploy(old, label="old")
    platform.deploy(new, label="new")
    platform.link("deps.check", "deps", weights={"old": 50, "new": 50})
    for i in range(20):
        platform.send("deps.check", {"i": i})
    platform.wait_idle(timeout=300)
    runs = platform.runs(service="deps", limit=None)
    assert len(runs) == 20 and all(r.status == "succeeded" for r in runs), [r.error for r in runs]
    labels = {v.id: v.label for v in platform.versions("deps")}
    seen = {(labels[r.version_id], r.result) for r in runs}
    assert seen == {("old", "1.15.0"), ("new", "1.16.0")}
    # a third version with the same requirements reuses the cached environment
    again = service_dir("deps", {"d.py": code + "# again\n", "requirements.txt": "six==1.15.0\n"})
    platform.deploy(again, label="again")
    event = platform.run("deps", version="again")
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=120)
    assert run.result == "1.15.0"
    pools = {p["version_id"]: p for p in platform.stats()["executors"]}
    assert pools[run.version_id]["env_cached"] is True


def test_each_version_reads_its_own_config_and_live_overrides_reach_the_next_run(
    platform: Platform, service_dir: Callable[..., Path]
) -> None:
    code = "from fxray import context\ncontext.result = [context.config, context.secrets]\n"
    platform.deploy(
        service_dir("cfg", {"c.py": code, "config.json": '{"limit": 1, "mode": "a"}'}), label="one"
    )
    platform.deploy(
        service_dir("cfg", {"c.py": code + "#\n", "config.json": '{"limit": 2}'}), label="two"
    )

    def result(version: str) -> object:
        event = platform.run("cfg", version=version)
        return platform.wait_for_runs(event_id=event["id"])[0].result

    assert result("one") == [{"limit": 1, "mode": "a"}, {}]
    assert result("two") == [{"limit": 2}, {}]
    platform.configure("cfg", config={"limit": 10}, secrets={"key": "k-123456"})
    # the secret reached the run: the record shows it redacted, which needs its value
    assert result("one") == [{"limit": 10, "mode": "a"}, {"key": "***"}]
    platform.configure("cfg", config={})
    assert result("two") == [{"limit": 2}, {"key": "***"}]
