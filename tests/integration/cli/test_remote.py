"""The ``fxray`` commands over the Management API, against a real server: the app served by
uvicorn on a free port, over a started platform (SQLite), driven with ``CliRunner``.

:data:`EXAMPLES` is the sequence of commands this test runs, in order; the README shows it.
``$RUN_ID`` and ``$TRIGGER_ID`` stand for ids printed by earlier commands.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from fxray.api import create_app
from fxray.cli import app
from fxray.cli.output import out
from tests.integration.api.conftest import ApiHarness, database_url, start_api
from tests.integration.conftest import write_service

EXAMPLES = [
    "fxray service push greeter --label v1",
    "fxray service list",
    "fxray trigger add demo.greet greeter",
    "fxray trigger list --service greeter",
    """fxray event send demo.greet --data '{"name": "Ada"}' --source docs/example""",
    "fxray runs --service greeter",
    "fxray logs $RUN_ID --follow",
    "fxray run show $RUN_ID",
    "fxray service push greeter --label v2",
    "fxray replay $RUN_ID --version v2",
    "fxray trigger remove $TRIGGER_ID",
]

ERROR_EXAMPLES = [  # (command, exit code, what stderr says)
    (
        "fxray service list --key not-a-key",
        1,
        "error: the API key is not valid (unknown or revoked)",
    ),
    (
        "fxray event send demo.greet --data '{oops'",
        2,
        "error: --data is not valid JSON (line 1, column 2: "
        "Expecting property name enclosed in double quotes)",
    ),
]

GREETER = """
import time
from fxray import context

name = context.params.get("name", "world")
context.log.info("{greeting} %s", name)
time.sleep(1.5)
print("still here")
context.log.warning("bye %s", name)
context.result = {{"greeting": "{greeting} " + name}}
"""

FINAL = {"succeeded", "failed", "timed_out", "cancelled"}


@dataclass
class Remote:
    url: str
    key: str
    api: ApiHarness
    folder: Path
    project: str  # the project of the key


@pytest.fixture(scope="module")
def remote(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    """The API served over HTTP on a free port, with a project and its developer key."""
    folder = tmp_path_factory.mktemp("cli-remote")
    url, _ = database_url("sqlite", folder)
    harness = start_api(folder, url)
    server = uvicorn.Server(
        uvicorn.Config(create_app(harness.platform), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="fxray-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    project = harness.project("cli")
    token = project.developer["Authorization"].removeprefix("Bearer ")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(out, "_width", 200)  # table rows on one line
        patch.delenv("FXRAY_DEBUG", raising=False)
        yield Remote(f"http://127.0.0.1:{port}", token, harness, folder, project.name)
    server.should_exit = True
    thread.join(timeout=30)
    harness.client.close()
    harness.platform.stop()


def fxray(remote: Remote, command: str, **variables: str) -> Result:
    """Run one documented command line (``$NAME`` replaced) with the API's URL and key."""
    for name, value in variables.items():
        command = command.replace(f"${name}", value)
    argv = shlex.split(command)
    assert argv[0] == "fxray"
    env = {"FXRAY_API_URL": remote.url, "FXRAY_API_KEY": remote.key}
    return CliRunner().invoke(app, argv[1:], env=env)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.stdout


def wait_for(remote: Remote, command: str, check: Any, timeout: float = 60) -> Any:
    """Run a ``--json`` command until ``check(answer)`` is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        found = check(json.loads(ok(fxray(remote, command))))
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting on {command}"
        time.sleep(0.2)


def test_the_documented_cli_session(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    made = write_service(remote.folder, "greeter", {"greet.py": GREETER.format(greeting="hello")})
    greeter = made.rename(remote.folder / "greeter")
    monkeypatch.chdir(remote.folder)
    steps = iter(EXAMPLES)

    # fxray service push greeter --label v1
    out = ok(fxray(remote, next(steps)))
    # a version id is <service id>@<hash>: the service's id outside the default project is
    # <project>.<name>
    project = re.escape(remote.project)
    assert re.search(
        rf"deployed greeter version {project}\.greeter@\w{{12}} label v1 in project {project}", out
    )

    # fxray service list
    out = ok(fxray(remote, next(steps)))
    assert re.search(r"greeter\s+cli-\w+\s+active\s+\w{12}", out), out

    # fxray trigger add demo.greet greeter
    out = ok(fxray(remote, next(steps)))
    trigger_id = re.fullmatch(r"linked demo.greet -> greeter \(trigger (\S+)\)\n", out)[1]

    # fxray trigger list --service greeter
    out = ok(fxray(remote, next(steps)))
    assert re.search(rf"{trigger_id}\s+demo.greet\s+greeter\s+-\s+latest\s+-\s+no", out), out

    # fxray event send demo.greet --data '{"name": "Ada"}' --source docs/example
    out = ok(fxray(remote, next(steps)))
    event_id = re.fullmatch(r"sent demo.greet event (\S+)\n", out)[1]
    run_id = wait_for(
        remote,
        f"fxray runs --correlation-id {event_id} --json",
        lambda runs: runs and runs[0]["id"],
    )

    # fxray runs --service greeter: the run, still going (the service sleeps 1.5 s)
    out = ok(fxray(remote, next(steps)))
    status = r"(pending|running|succeeded)"
    assert re.search(rf"{run_id}\s+greeter\s+\w{{12}} \(v1\)\s+{status}\s+demo.greet", out), out

    # fxray logs $RUN_ID --follow: streams until the run is over, then its status
    out = ok(fxray(remote, next(steps), RUN_ID=run_id))
    lines = out.splitlines()
    assert lines[0] == "[greet.py] INFO hello Ada", out
    assert "[greet.py] STDOUT still here" in lines
    assert lines[-2] == "[greet.py] WARNING bye Ada"
    assert re.fullmatch(r"succeeded greeter in \d+ ms", lines[-1]), lines[-1]

    # fxray run show $RUN_ID
    out = ok(fxray(remote, next(steps), RUN_ID=run_id))
    assert f"run {run_id} of greeter" in out
    assert re.search(r"status\s+succeeded", out)
    assert re.search(rf"version\s+{project}\.greeter@\w{{12}} \(v1\)", out)
    assert re.search(rf"event\s+demo.greet {event_id}", out)
    assert re.search(r"source\s+docs/example", out)
    assert re.search(r"greet.py succeeded \d+\.\d ms", out)
    assert 'result {"greeting": "hello Ada"}' in out
    assert "[greet.py] WARNING bye Ada" in out
    detail = json.loads(ok(fxray(remote, f"fxray run show {run_id} --json")))
    assert detail["result"] == {"greeting": "hello Ada"}

    # fxray service push greeter --label v2 (changed code: a new version)
    (greeter / "greet.py").write_text(GREETER.format(greeting="hi"))
    out = ok(fxray(remote, next(steps)))
    assert re.search(rf"deployed greeter version {project}\.greeter@\w{{12}} label v2", out)

    # fxray replay $RUN_ID --version v2: the same event, on the new version
    out = ok(fxray(remote, next(steps), RUN_ID=run_id))
    pattern = rf"replaying run {run_id} on version v2 as run (\S+) \(event (\S+)\)\n"
    replay_id = re.fullmatch(pattern, out)[1]
    replayed = wait_for(
        remote,
        f"fxray run show {replay_id} --json",
        lambda run: run["status"] in FINAL and run,
    )
    assert replayed["status"] == "succeeded"
    assert replayed["version"]["label"] == "v2"
    assert replayed["result"] == {"greeting": "hi Ada"}
    assert replayed["correlation_id"] == event_id

    # fxray trigger remove $TRIGGER_ID
    out = ok(fxray(remote, next(steps), TRIGGER_ID=trigger_id))
    assert out == f"removed trigger {trigger_id}\n"
    assert json.loads(ok(fxray(remote, "fxray trigger list --service greeter --json"))) == []
    assert next(steps, None) is None, "every example is tested"

    # what a script sees: --json on lists
    services = json.loads(ok(fxray(remote, "fxray service list --json")))
    assert [s["name"] for s in services] == ["greeter"]
    runs = json.loads(ok(fxray(remote, "fxray runs --service greeter --json")))
    assert {r["id"] for r in runs} == {run_id, replay_id}


@pytest.mark.parametrize(("command", "code", "message"), ERROR_EXAMPLES)
def test_documented_errors(remote: Remote, command: str, code: int, message: str) -> None:
    result = fxray(remote, command)
    assert result.exit_code == code, result.output
    assert result.stderr.strip() == message
    assert result.stdout == ""


def test_refusals_carry_the_server_message(remote: Remote) -> None:
    missing = fxray(remote, "fxray run show no-such-run")
    assert missing.exit_code == 1
    assert missing.stderr.strip() == "error: run 'no-such-run' not found"
    bad = fxray(remote, "fxray trigger add 'demo.[' greeter-none --weights v1=1")
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: ")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_logs_of_a_finished_run_and_unreachable_api(remote: Remote, tmp_path: Path) -> None:
    folder = write_service(tmp_path, "quick", {"main.py": "print('quick one')\n"})
    ok(fxray(remote, f"fxray service push {folder}"))
    quick = remote.api.platform.find_service("quick", remote.project)
    started = remote.api.platform.run(quick.id, {})
    (run,) = remote.api.platform.wait_for_runs(event_id=started["id"])
    out = ok(fxray(remote, f"fxray logs {run.id}"))
    assert out == "[main.py] STDOUT quick one\n"
    followed = ok(fxray(remote, f"fxray logs {run.id} --follow --json"))
    assert [json.loads(line)["message"] for line in followed.splitlines()] == ["quick one"]
    gone = CliRunner().invoke(
        app, ["runs", "--url", "http://127.0.0.1:9", "--key", "k"], env={"FXRAY_API_URL": None}
    )
    assert gone.exit_code == 1
    assert gone.stderr.strip() == (
        "error: the fxray API is not reachable at http://127.0.0.1:9 (start it with `fxray up`)"
    )


def test_client_and_run_commands_over_http(remote: Remote, tmp_path: Path) -> None:
    from fxray.client import ApiError, FxrayClient
    from fxray.events.cloudevent import new_event

    folder = write_service(tmp_path, "echo", {"main.py": ECHO})
    with FxrayClient(remote.url, remote.key) as api:
        assert api.health()["status"] == "ok"
        assert api.info()["caller"]["role"] == "developer"
        assert [p["name"] for p in api.list_projects()] == [api.info()["caller"]["project"]]
        deployed = api.push_service(folder, label="e1")
        assert deployed["created"] is True
        assert api.push_service(folder)["created"] is False  # same content
        assert [v["label"] for v in api.list_versions("echo")] == ["e1"]
        assert api.get_service("echo")["latest_version"] == deployed["version"]["id"]

        out = ok(fxray(remote, """fxray run start echo --params '{"name": "Bo"}' --priority 3"""))
        run_id = re.fullmatch(r"started run (\S+) of echo \(event \S+\)\n", out)[1]
        lines = list(_follow(api, run_id))
        assert [line["message"] for line in lines] == ["echo Bo"]
        assert api.get_run(run_id)["priority"] == 3
        out = ok(fxray(remote, f"fxray run cancel {run_id}"))
        assert out == f"run {run_id}: not_active\n"

        ids = api.send_events([new_event("echo.batch", {"n": n}) for n in range(3)])
        assert len(ids) == 3
        trigger = api.add_trigger("echo.*", "echo", filters={"source": "tests/*"})
        event_id = api.send_event("echo.hi", {"name": "Cy"}, source="tests/client")
        run = _wait_run(api, event_id)
        assert run["status"] == "succeeded" and run["trigger_id"] == trigger["id"]
        api.remove_trigger(trigger["id"])

        api.set_active("echo", False)
        with pytest.raises(ApiError) as refused:
            api.run("echo", {"name": "Di"})
        assert refused.value.status in (409, 422)
        assert "not active" in refused.value.message
        api.set_active("echo", True)


ECHO = """
from fxray import context
context.log.info("echo %s", context.params.get("name"))
"""


def _follow(api: Any, run_id: str) -> Iterator[Any]:
    """follow_logs once the run exists (a manual run appears when the router has its event)."""
    from fxray.client import ApiError

    deadline = time.monotonic() + 60
    while True:
        try:
            yield from api.follow_logs(run_id)
            return
        except ApiError as exc:
            if exc.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_run(api: Any, event_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        runs = api.runs(correlation_id=event_id)
        if runs and runs[0]["status"] in FINAL:
            return runs[0]
        assert time.monotonic() < deadline, f"no finished run for event {event_id}"
        time.sleep(0.2)
