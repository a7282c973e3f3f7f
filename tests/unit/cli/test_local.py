"""Tests for the ``fxray`` command line (no Ray): ``validate`` and ``run-local``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from typer.testing import CliRunner, Result

from fxray.cli import app

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
ORDER_INTAKE = EXAMPLES / "order-intake"
TOKEN = "sk-live-7f3e9b21"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every command in tmp_path, so the local state file lands there."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FXRAY_LOCAL_ENVS", str(tmp_path / "envs"))
    monkeypatch.delenv("FXRAY_DEBUG", raising=False)
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def write_package(root: Path, manifest: dict[str, Any], files: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps(manifest))
    for name, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (root / name).write_text(text)
    return root


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value))
    return path


ORDER_EVENT = {
    "specversion": "1.0",
    "id": "order-1",
    "source": "shop/web",
    "type": "shop.order.placed",
    "data": {"order_id": "A-1", "amount": 99.5, "items": [{"sku": "MUG", "qty": 2}]},
}


# -- validate ---------------------------------------------------------------------------------


def test_validate_good_package_prints_summary() -> None:
    result = invoke("validate", ORDER_INTAKE)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "order-intake" in out
    assert "validate.py -> accept.py" in out
    assert "shop.order.placed" in out
    for key in ("version", "steps", "triggers", "schedule", "requirements"):
        assert key in out


def test_validate_bad_package_lists_every_problem(tmp_path: Path) -> None:
    bad = write_package(
        tmp_path / "bad",
        {"name": "Bad Name", "execution_order": ["missing.py"], "priority": 11},
        {"requirements.txt": "-e git+https://example.com/x\n", "config.json": "[1, 2]"},
    )
    result = invoke("validate", bad)
    assert result.exit_code == 1
    assert result.stdout == ""
    err = result.stderr
    assert "is not a valid service name" in err
    assert "priority" in err
    assert "'missing.py' named in execution_order does not exist" in err
    assert "option lines like '-e' are not allowed" in err
    assert "config.json: must be a JSON object" in err
    assert "Traceback" not in result.output


def test_validate_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    result = invoke("validate", tmp_path / "nope")
    assert result.exit_code == 1
    assert "no such folder or file" in result.stderr
    assert "Traceback" not in result.output


# -- run-local --------------------------------------------------------------------------------


def test_run_local_order_intake(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", ORDER_EVENT)
    result = invoke("run-local", ORDER_INTAKE, "--event", event)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "[validate.py] INFO order A-1 is valid" in out
    assert "[accept.py] INFO accepted order A-1" in out
    assert "step validate.py succeeded" in out
    assert "step accept.py succeeded" in out
    assert 'emitted shop.order.accepted {"order_id": "A-1", "amount": 99.5' in out
    assert "succeeded order-intake" in out


def test_run_local_state_persists_between_runs(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", ORDER_EVENT)
    first = invoke("run-local", ORDER_INTAKE, "--event", event)
    assert first.exit_code == 0, first.output
    assert "state orders=1" in first.stdout
    second = invoke("run-local", ORDER_INTAKE, "--event", event)
    assert second.exit_code == 0, second.output
    assert "state orders=2" in second.stdout
    saved = json.loads((tmp_path / ".fxray-local-state.json").read_text())
    assert saved["entries"] == {"fxray/services/order-intake/state/orders": 2}


def test_run_local_state_option(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", ORDER_EVENT)
    state = tmp_path / "elsewhere" / "state.json"
    assert invoke("run-local", ORDER_INTAKE, "-e", event, "--state", state).exit_code == 0
    assert json.loads(state.read_text())["entries"]
    assert not (tmp_path / ".fxray-local-state.json").exists()


def test_run_local_failing_script_exits_1(tmp_path: Path) -> None:
    event = dict(ORDER_EVENT, data={"order_id": "A-2", "amount": -5})
    result = invoke("run-local", ORDER_INTAKE, "--event", write_json(tmp_path / "e.json", event))
    assert result.exit_code == 1
    assert "step validate.py failed" in result.stdout
    assert "amount must be greater than 0" in result.stdout
    assert "accept.py" not in result.stdout.replace("[validate.py]", "")
    assert "emitted" not in result.stdout


def test_run_local_plain_json_becomes_manual_run_data(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path / "echo",
        {"name": "echo", "entrypoint": "main.py"},
        {
            "main.py": (
                "from fxray import context\n"
                "context.result = {'type': context.event['type'],"
                " 'target': context.event.get('fxtarget'), 'params': context.params.to_dict()}\n"
            )
        },
    )
    data = write_json(tmp_path / "data.json", {"city": "Basel", "n": 3})
    result = invoke("run-local", pkg, "--event", data, "--json")
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["status"] == "succeeded"
    assert body["result"] == {
        "type": "fxray.run.manual",
        "target": "echo",
        "params": {"city": "Basel", "n": 3},
    }


def test_run_local_manual_data_is_checked_against_parameters(tmp_path: Path) -> None:
    params = write_json(tmp_path / "p.json", {"order_id": "M-9", "amount": "12.5"})
    result = invoke("run-local", ORDER_INTAKE, "--event", params, "--json")
    assert result.exit_code == 0, result.output
    emitted = json.loads(result.stdout)["emitted"]
    assert [e["type"] for e in emitted] == ["shop.order.accepted"]
    assert emitted[0]["data"] == {
        "order_id": "M-9",
        "amount": 12.5,
        "currency": "CHF",
        "express": False,  # the parameter's default
    }
    bad = invoke("run-local", ORDER_INTAKE, "--event", write_json(tmp_path / "b.json", {}))
    assert bad.exit_code == 2
    assert "order_id: a value is required" in bad.stderr
    assert "amount: a value is required" in bad.stderr


def test_run_local_redacts_secrets(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path / "mailer",
        {"name": "mailer", "entrypoint": "main.py"},
        {
            "secrets.json": {"token": TOKEN},
            "main.py": (
                "from fxray import context\n"
                "token = context.secrets['token']\n"
                "print('sending with', token)\n"
                "context.log.warning('token is %s', token)\n"
                "context.result = {'used': token}\n"
            ),
        },
    )
    result = invoke("run-local", pkg)
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    assert "[main.py] STDOUT sending with ***" in result.stdout
    assert "[main.py] WARNING token is ***" in result.stdout
    as_json = invoke("run-local", pkg, "--json")
    assert TOKEN not in as_json.output
    assert json.loads(as_json.stdout)["result"] == {"used": "***"}
    other = write_json(tmp_path / "secrets.json", {"token": "override-secret-99"})
    overridden = invoke("run-local", pkg, "--secrets", other)
    assert "override-secret-99" not in overridden.output
    assert "sending with ***" in overridden.stdout


def test_run_local_config_option_replaces_config(tmp_path: Path) -> None:
    event = write_json(tmp_path / "event.json", ORDER_EVENT)
    config = write_json(tmp_path / "config.json", {"currency": "EUR"})
    result = invoke("run-local", ORDER_INTAKE, "-e", event, "--config", config)
    assert result.exit_code == 0, result.output
    assert '"currency": "EUR"' in result.stdout


def test_run_local_timeout(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path / "slow",
        {"name": "slow", "entrypoint": "main.py", "timeout_s": 0.5},
        {"main.py": "import time\nprint('working')\nwhile True:\n    time.sleep(0.02)\n"},
    )
    result = invoke("run-local", pkg)
    assert result.exit_code == 1
    assert "step main.py timed_out" in result.stdout
    assert "timed out after 0.5s" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--event", "missing.json"], "cannot read event file missing.json"),
        (["--event", "broken.json"], "is not valid JSON"),
        (["--event", "not-an-event.json"], "invalid CloudEvent"),
        (["--config", "list.json"], "must hold a JSON object"),
    ],
)
def test_run_local_bad_input_is_one_clear_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    write_json(tmp_path / "not-an-event.json", {"specversion": "1.0", "type": "x"})
    write_json(tmp_path / "list.json", [1, 2])
    result = invoke("run-local", ORDER_INTAKE, *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_run_local_invalid_package_exits_1(tmp_path: Path) -> None:
    bad = write_package(tmp_path / "bad", {"name": "bad"}, {})
    result = invoke("run-local", bad)
    assert result.exit_code == 1
    assert "either entrypoint or execution_order must name a script" in result.stderr
    assert "Traceback" not in result.output


def test_version() -> None:
    result = invoke("version")
    assert result.exit_code == 0
    assert result.stdout.startswith("fxray ")


# -- the library behind run-local ---------------------------------------------------------------


def test_json_file_kv_round_trip(tmp_path: Path) -> None:
    from fxray.kv import KVStore
    from fxray.runtime.local import JsonFileKV

    path = tmp_path / "state.json"
    kv = JsonFileKV(path)
    assert isinstance(kv, KVStore)
    assert kv.put("a/json", b'{"n": 1}')
    assert kv.put("a/raw", b"\xff\x00binary")
    assert kv.put("a/tricky", b'{"$base64": "x"}')
    assert not kv.put("a/json", b"2", cas=0)  # check-and-set as in every KV store
    kv.close()
    assert json.loads(path.read_text())["entries"]["a/json"] == {"n": 1}
    again = JsonFileKV(path)
    assert again.keys("a/") == ["a/json", "a/raw", "a/tricky"]
    assert again.get("a/raw").value == b"\xff\x00binary"  # type: ignore[union-attr]
    assert again.get("a/tricky").value == b'{"$base64": "x"}'  # type: ignore[union-attr]


def test_json_file_kv_rejects_a_broken_file(tmp_path: Path) -> None:
    from fxray.runtime.local import JsonFileKV, LocalRunError

    path = tmp_path / "state.json"
    path.write_text("[1, 2]")
    with pytest.raises(LocalRunError, match="not an fxray local state file"):
        JsonFileKV(path)


def test_run_local_function(tmp_path: Path) -> None:
    from fxray.runtime.local import run_local
    from fxray.runtime.runs import RunStatus

    state = tmp_path / "s.json"
    result = run_local(ORDER_INTAKE, ORDER_EVENT, config={"currency": "EUR"}, state_path=state)
    assert result.status is RunStatus.SUCCEEDED
    assert [s.name for s in result.steps] == ["validate.py", "accept.py"]
    assert result.emitted[0]["data"]["currency"] == "EUR"
    assert result.emitted[0]["fxparentid"] == "order-1"
    assert result.result == {"order_id": "A-1", "orders_so_far": 1}


# -- db ---------------------------------------------------------------------------------------


def test_db_status_and_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fxray.store import migrations

    database = tmp_path / "state" / "fxray.db"
    database.parent.mkdir()
    monkeypatch.setenv("FXRAY_DATABASE_URL", f"sqlite:///{database}")

    missing = invoke("db", "status")
    assert missing.exit_code == 1 and "fxray db upgrade" in missing.output
    assert not database.exists(), "status must not create the database"

    upgraded = invoke("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert f"at revision {migrations.head()} (up to date)" in upgraded.output

    status = invoke("db", "status")
    assert status.exit_code == 0 and "up to date" in status.output

    with sqlalchemy.create_engine(f"sqlite:///{database}").begin() as connection:
        connection.execute(sqlalchemy.text("UPDATE alembic_version SET version_num = '0001'"))
    behind = invoke("db", "status")
    assert behind.exit_code == 1
    assert f"at revision 0001, newest is {migrations.head()}" in behind.output


def test_db_commands_hide_the_password_and_refuse_a_bad_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FXRAY_DATABASE_URL", "not a url")
    bad = invoke("db", "status")
    assert bad.exit_code == 2 and "not a database URL" in bad.output
    # nothing listens on port 1: the error names the database without its password
    monkeypatch.setenv("FXRAY_DATABASE_URL", "postgresql://fx:s3cr3t-pw@127.0.0.1:1/fx")
    down = invoke("db", "upgrade")
    assert down.exit_code == 1 and "s3cr3t-pw" not in down.output


def test_validate_warns_of_requirements_that_replace_the_platforms_packages(
    tmp_path: Path,
) -> None:
    folder = write_package(
        tmp_path,
        {"name": "pinned", "entrypoint": "main.py"},
        {"main.py": "pass\n", "requirements.txt": "pydantic==1.10.13\nsix\n"},
    )
    result = invoke("validate", folder, "--no-resolve")
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "isolation     isolated worker process (1 clash with the platform, below)" in (
        result.output
    )
    assert "warning: pydantic==1.10.13: the platform runs pydantic 2." in result.output
    assert "six" not in result.output.split("warning")[1]
    assert "not resolved (--no-resolve); only the requirement lines themselves" in result.output
    assert "runs in an isolated worker process" in result.output


def test_validate_resolves_what_the_requirements_install_and_reports_each_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fxray.services import clashes

    def fake_pip(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        report = {
            "install": [
                {"metadata": {"name": "requests", "version": "2.25.1",
                              "requires_dist": ["urllib3<1.27,>=1.21.1"]}},
                {"metadata": {"name": "urllib3", "version": "1.26.20", "requires_dist": []}},
            ]
        }  # fmt: skip
        Path(command[command.index("--report") + 1]).write_text(json.dumps(report))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(clashes.subprocess, "run", fake_pip)
    monkeypatch.setattr(
        clashes, "platform_packages", lambda: {"requests": "2.34.2", "urllib3": "2.8.0"}
    )
    folder = write_package(
        tmp_path / "svc",
        {"name": "old-requests", "entrypoint": "main.py"},
        {"main.py": "pass\n", "requirements.txt": "requests==2.25.1\n"},
    )
    result = invoke("validate", folder)
    assert result.exit_code == 0, result.output
    assert "isolated worker process (2 clashes with the platform, below)" in result.output
    assert (
        "warning: requests==2.25.1 installs urllib3 1.26.20; the platform runs urllib3 2.8.0"
        in result.output
    )
    overridden = write_package(
        tmp_path / "forced",
        {"name": "forced", "entrypoint": "main.py", "isolation": "in-process"},
        {"main.py": "pass\n", "requirements.txt": "requests==2.25.1\n"},
    )
    result = invoke("validate", overridden)
    assert "in the executor's process (the manifest asks for it)" in result.output
    assert 'the manifest asks for "isolation": "in-process"' in result.output


def test_run_local_of_an_isolated_service_runs_in_a_worker_of_its_own(tmp_path: Path) -> None:
    code = (
        "import importlib.util, sys\nfrom fxray import context\n"
        "seen = [m for m in ('pydantic', 'ray', 'typer') if importlib.util.find_spec(m)]\n"
        "print('platform packages seen:', seen or 'none')\n"
        "context.state.update('runs', lambda n: (n or 0) + 1)\n"
        "context.events.send('iso.done', {'seen': seen})\n"
    )
    pkg = write_package(
        tmp_path / "iso",
        {"name": "iso", "entrypoint": "main.py", "isolation": "process"},
        {"main.py": code},
    )
    result = invoke("run-local", pkg)
    assert result.exit_code == 0, result.output
    assert "running in an isolated worker process: the manifest asks for it" in result.output
    assert "[main.py] STDOUT platform packages seen: none" in result.stdout
    assert 'emitted iso.done {"seen": []}' in result.stdout
    assert "state runs=1" in result.stdout
    assert "state runs=2" in invoke("run-local", pkg).stdout


def test_run_local_times_out_an_isolated_run(tmp_path: Path) -> None:
    pkg = write_package(
        tmp_path / "slow-iso",
        {"name": "slow-iso", "entrypoint": "main.py", "timeout_s": 0.5, "isolation": "process"},
        {"main.py": "import time\nprint('working')\nwhile True:\n    time.sleep(0.02)\n"},
    )
    result = invoke("run-local", pkg)
    assert result.exit_code == 1
    assert "step main.py timed_out" in result.stdout
    assert "timed out after 0.5s" in result.stdout
