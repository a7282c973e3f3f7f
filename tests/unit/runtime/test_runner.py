"""runner.execute and the script API (``fxray.context``), on small service folders in tmp_path."""

from __future__ import annotations

import io
import logging
import os
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from fxray.events.cloudevent import CORRELATION_ID, PARENT_ID, RUN_ID, SHADOW, new_event
from fxray.kv import ServiceState
from fxray.kv.local import InMemoryKV
from fxray.runtime import runner
from fxray.runtime.context import ContextError, context
from fxray.runtime.runs import RunResult, RunSpec, RunStatus

SERVICE = "svc"


@contextmanager
def capturing_streams() -> Iterator[None]:
    """Put the runner's stream wrappers in place for one run.

    pytest swaps ``sys.stdout``/``sys.stderr`` at the start of every test phase, dropping the
    wrappers ``install_capture`` installs only once per process (see the xfail test below),
    so each run here re-wraps whatever streams pytest has installed, and restores them after.
    """
    runner.install_capture()
    saved = sys.stdout, sys.stderr
    if not isinstance(sys.stdout, runner._ThreadStream):
        sys.stdout = runner._ThreadStream("STDOUT", sys.stdout)
    if not isinstance(sys.stderr, runner._ThreadStream):
        sys.stderr = runner._ThreadStream("STDERR", sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


@pytest.fixture
def state() -> ServiceState:
    return ServiceState(InMemoryKV(), SERVICE)


def make_package(root: Path, scripts: dict[str, str]) -> Path:
    pkg = root / f"pkg-{uuid.uuid4().hex[:8]}"
    for name, code in scripts.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(code))
    return pkg


def make_spec(
    steps: list[str],
    *,
    data: Any = None,
    event: dict[str, Any] | None = None,
    shadow: bool = False,
    attempt: int = 1,
) -> RunSpec:
    trigger = event or new_event("orders.created", data, source="shop")
    return RunSpec(
        run_id=f"run-{uuid.uuid4().hex[:8]}",
        service=SERVICE,
        version_id=f"{SERVICE}@abc123",
        package_hash="abc123",
        steps=steps,
        event=trigger,
        correlation_id=str(trigger.get(CORRELATION_ID) or trigger["id"]),
        shadow=shadow,
        attempt=attempt,
    )


def run(
    tmp_path: Path,
    scripts: dict[str, str],
    *,
    steps: list[str] | None = None,
    state: ServiceState | None = None,
    config: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    spec: RunSpec | None = None,
    **spec_args: Any,
) -> RunResult:
    pkg = make_package(tmp_path, scripts)
    spec = spec or make_spec(steps or list(scripts), **spec_args)
    with capturing_streams():
        return runner.execute(
            spec,
            pkg,
            config=config or {},
            secrets=secrets or {},
            state=state or ServiceState(InMemoryKV(), SERVICE),
        )


def lines(result: RunResult, level: str | None = None) -> list[tuple[str, str, str]]:
    """(level, step, message) of the captured log lines."""
    return [(lv, step, msg) for _, lv, step, msg in result.logs if level is None or lv == level]


# --------------------------------------------------------------------------- steps


def test_steps_run_in_order_and_share_scratch(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "b.py": """
                from fxray import context
                context.scratch["order"] = ["b"]
            """,
            "a.py": """
                from fxray import context
                context.scratch["order"].append("a")
                context.result = context.scratch["order"]
            """,
        },
        steps=["b.py", "a.py"],
    )
    assert result.status is RunStatus.SUCCEEDED
    assert result.error is None
    assert result.result == ["b", "a"]
    assert [(s.name, s.status) for s in result.steps] == [
        ("b.py", RunStatus.SUCCEEDED),
        ("a.py", RunStatus.SUCCEEDED),
    ]
    assert all(s.finished_at >= s.started_at and s.error is None for s in result.steps)
    assert result.started_at <= result.steps[0].started_at
    assert result.steps[-1].finished_at <= result.finished_at


def test_script_runs_as_main(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                if __name__ == "__main__":
                    context.result = __file__
            """
        },
    )
    assert result.result.endswith("main.py")


def test_context_params_event_config_run(tmp_path: Path) -> None:
    script = """
        from fxray import context
        context.scratch.setdefault("steps", []).append(context.run.step)
        context.result = {
            "name": context.params.get("name"),
            "default": context.params.get("missing", "dflt"),
            "params": dict(context.params),
            "event_id": context.event["id"],
            "event_type": context.event["type"],
            "config": context.config["greeting"],
            "step": context.run.step,
            "steps": context.scratch["steps"],
            "run_id": context.run.id,
            "run_id_alias": context.run.run_id,
            "correlation_id": context.run.correlation_id,
            "service": context.run.service,
            "version": context.run.version,
            "attempt": context.run.attempt,
            "package": [context.package.name, context.package.id],
        }
    """
    spec = make_spec(["one.py", "two.py"], data={"name": "Ada", "n": 2}, attempt=3)
    result = run(
        tmp_path,
        {"one.py": script, "two.py": script},
        spec=spec,
        config={"greeting": "hello"},
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.result == {
        "name": "Ada",
        "default": "dflt",
        "params": {"name": "Ada", "n": 2},
        "event_id": spec.event["id"],
        "event_type": "orders.created",
        "config": "hello",
        "step": "two.py",
        "steps": ["one.py", "two.py"],
        "run_id": spec.run_id,
        "run_id_alias": spec.run_id,
        "correlation_id": spec.event["id"],
        "service": SERVICE,
        "version": f"{SERVICE}@abc123",
        "attempt": 3,
        "package": [SERVICE, f"{SERVICE}@abc123"],
    }


@pytest.mark.parametrize(("data", "params"), [(None, {"data": None}), ([1, 2], {"data": [1, 2]})])
def test_params_of_non_dict_data(tmp_path: Path, data: Any, params: dict[str, Any]) -> None:
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.result = context.params.to_dict()\n"},
        data=data,
    )
    assert result.result == params


def test_a_script_sees_its_services_name_apart_from_its_id(tmp_path: Path) -> None:
    """Outside the default project a service's id is ``<project>.<name>``: the script's
    ``context.package.name`` is the name its users gave it."""
    script = (
        "from fxray import context\n"
        "context.result = [context.package.name, context.run.service, context.run.service_name]\n"
    )
    spec = replace(make_spec(["a.py"]), service="shop.orders", service_name="orders")
    result = run(tmp_path, {"a.py": script}, spec=spec)
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.result == ["orders", "shop.orders", "orders"]


def test_params_are_read_only(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.params['x'] = 1\n"},
        data={"x": 0},
    )
    assert result.status is RunStatus.FAILED
    assert "TypeError" in (result.error or "")


# --------------------------------------------------------------------------- capture


def test_stdout_stderr_and_logging_captured(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "first.py": """
                import logging, sys
                from fxray import context
                print("hello out")
                print("two\\nlines")
                print("to err", file=sys.stderr)
                context.log.info("info %s", "arg")
                context.log.warning("careful")
                logging.getLogger("some.library").error("library error")
            """,
            "second.py": """
                import sys
                print("from second")
                sys.stdout.write("no newline at the end")
            """,
        },
        steps=["first.py", "second.py"],
    )
    assert result.status is RunStatus.SUCCEEDED
    assert lines(result) == [
        ("STDOUT", "first.py", "hello out"),
        ("STDOUT", "first.py", "two"),
        ("STDOUT", "first.py", "lines"),
        ("STDERR", "first.py", "to err"),
        ("INFO", "first.py", "info arg"),
        ("WARNING", "first.py", "careful"),
        ("ERROR", "first.py", "library error"),
        ("STDOUT", "second.py", "from second"),
        ("STDOUT", "second.py", "no newline at the end"),
    ]
    assert all(isinstance(t, float) for t, *_ in result.logs)


def test_logged_exception_includes_traceback(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                try:
                    1 / 0
                except ZeroDivisionError:
                    context.log.exception("it broke")
            """
        },
    )
    ((level, step, message),) = lines(result)
    assert (level, step) == ("ERROR", "main.py")
    assert message.startswith("it broke\n")
    assert "ZeroDivisionError" in message


def test_log_lines_are_capped(tmp_path: Path) -> None:
    extra = 5
    result = run(
        tmp_path,
        {"main.py": f"for i in range({runner.MAX_LOG_LINES + extra}):\n    print(i)\n"},
    )
    assert len(result.logs) == runner.MAX_LOG_LINES + 1
    assert lines(result)[-1] == ("WARNING", "", f"{extra} log lines dropped")


def test_output_of_other_threads_is_not_captured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_run = threading.Event()
    other_done = threading.Event()

    def other_thread() -> None:
        in_run.wait(5)
        print("noise from another thread")
        logging.getLogger(f"fxray.service.{SERVICE}").warning("log from another thread")
        other_done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    result = run(
        tmp_path,
        {
            "main.py": """
                import threading
                from fxray import context
                print("before")
                context.config["in_run"].set()
                assert context.config["other_done"].wait(5)
                spawned = threading.Thread(target=print, args=("from a script's thread",))
                spawned.start()
                spawned.join()
                print("after")
            """
        },
        config={"in_run": in_run, "other_done": other_done},
    )
    thread.join(5)
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert lines(result) == [("STDOUT", "main.py", "before"), ("STDOUT", "main.py", "after")]
    out = capsys.readouterr().out
    assert "noise from another thread" in out
    assert "from a script's thread" in out


def test_output_outside_a_run_passes_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, {"main.py": "print('inside')\n"})
    print("outside")
    out = capsys.readouterr().out
    assert "outside" in out
    assert "inside" not in out


def test_capture_survives_stdout_being_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.install_capture()
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    pkg = make_package(tmp_path, {"main.py": "print('hello')\n"})
    result = runner.execute(
        make_spec(["main.py"]),
        pkg,
        config={},
        secrets={},
        state=ServiceState(InMemoryKV(), SERVICE),
    )
    assert lines(result) == [("STDOUT", "main.py", "hello")]


# --------------------------------------------------------------------------- failures


def test_exception_fails_the_run_at_that_step(tmp_path: Path) -> None:
    marker = tmp_path / "third-ran"
    result = run(
        tmp_path,
        {
            "first.py": "print('first ok')\n",
            "second.py": """
                def helper():
                    raise ValueError("boom")
                helper()
            """,
            "third.py": f"open({str(marker)!r}, 'w').close()\n",
        },
        steps=["first.py", "second.py", "third.py"],
    )
    assert result.status is RunStatus.FAILED
    assert not marker.exists()
    assert [s.status for s in result.steps] == [RunStatus.SUCCEEDED, RunStatus.FAILED]
    assert result.steps[1].error == "ValueError: boom"
    assert result.error is not None
    assert "second.py" in result.error
    assert "ValueError: boom" in result.error
    errors = lines(result, "ERROR")
    assert len(errors) == 1
    _, step, traceback_text = errors[0]
    assert step == "second.py"
    assert traceback_text.startswith("Traceback (most recent call last):")
    assert "second.py" in traceback_text
    assert "in helper" in traceback_text
    assert traceback_text.endswith("ValueError: boom")
    assert "runner.py" not in traceback_text  # only the script's own frames


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import sys\nsys.exit(3)\n", "sys.exit(3)"),
        ("raise SystemExit(2)\n", "sys.exit(2)"),
        ("import sys\nsys.exit('bad input')\n", "sys.exit('bad input')"),
    ],
)
def test_sys_exit_nonzero_fails(tmp_path: Path, code: str, error: str) -> None:
    marker = tmp_path / "next-ran"
    result = run(
        tmp_path,
        {"main.py": code, "next.py": f"open({str(marker)!r}, 'w').close()\n"},
        steps=["main.py", "next.py"],
    )
    assert result.status is RunStatus.FAILED
    assert error in (result.error or "")
    assert error in (result.steps[0].error or "")
    assert len(result.steps) == 1
    assert not marker.exists()


@pytest.mark.parametrize("call", ["sys.exit(0)", "sys.exit()", "sys.exit(None)"])
def test_sys_exit_zero_succeeds(tmp_path: Path, call: str) -> None:
    result = run(
        tmp_path,
        {
            "main.py": f"""
                import sys
                from fxray import context
                context.scratch["a"] = 1
                {call}
                context.scratch["a"] = "not reached"
            """,
            "next.py": "from fxray import context\ncontext.result = context.scratch['a']\n",
        },
        steps=["main.py", "next.py"],
    )
    assert result.status is RunStatus.SUCCEEDED
    assert result.error is None
    assert [s.status for s in result.steps] == [RunStatus.SUCCEEDED] * 2
    assert result.result == 1


def test_syntax_error_and_missing_script_fail(tmp_path: Path) -> None:
    broken = run(tmp_path, {"main.py": "def (:\n"})
    assert broken.status is RunStatus.FAILED
    assert "SyntaxError" in (broken.error or "")
    missing = run(tmp_path, {"main.py": "pass\n"}, steps=["main.py", "ghost.py"])
    assert missing.status is RunStatus.FAILED
    assert "ghost.py" in (missing.error or "")


# --------------------------------------------------------------------------- events


def test_events_send_carries_lineage(tmp_path: Path) -> None:
    spec = make_spec(["main.py"], data={"order": 1})
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                context.result = context.events.send("orders.billed", {"amount": 5})
            """
        },
        spec=spec,
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    (emitted,) = result.emitted
    assert emitted["id"] == result.result
    assert emitted["type"] == "orders.billed"
    assert emitted["data"] == {"amount": 5}
    assert emitted["source"] == f"fxray/services/{SERVICE}"
    assert emitted[PARENT_ID] == spec.event["id"]
    assert emitted[RUN_ID] == spec.run_id
    assert emitted[CORRELATION_ID] == spec.event["id"]
    assert SHADOW not in emitted


def test_events_send_keeps_the_flow_correlation(tmp_path: Path) -> None:
    parent = new_event("a.b", {}, fxcorrelationid="flow-1", fxparentid="p0", fxrunid="r0")
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.events.send('c.d', {})\n"},
        event=parent,
    )
    (emitted,) = result.emitted
    assert emitted[CORRELATION_ID] == "flow-1"
    assert emitted[PARENT_ID] == parent["id"]


def test_events_send_streamzero_positional_form(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                context.events.send("x.y", "my/source", {"a": 1})
                context.events.send("x.z", {"b": 2}, source="kw/source", subject="s1")
            """
        },
    )
    first, second = result.emitted
    assert (first["type"], first["source"], first["data"]) == ("x.y", "my/source", {"a": 1})
    assert (second["source"], second["data"], second["subject"]) == ("kw/source", {"b": 2}, "s1")


def test_events_of_a_shadow_run_are_marked(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.events.send('x.y', {})\n"},
        shadow=True,
    )
    assert result.emitted[0][SHADOW] == "true"


def test_events_sent_before_a_failure_are_reported(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.events.send('x.y', {})\nraise KeyError\n"},
    )
    assert result.status is RunStatus.FAILED
    assert [e["type"] for e in result.emitted] == ["x.y"]


# --------------------------------------------------------------------------- state and result


def test_state_put_get_delete(tmp_path: Path, state: ServiceState) -> None:
    state.put("existing", {"n": 1})
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                seen = {"existing": context.state.get("existing"),
                        "missing": context.state.get("missing", "dflt")}
                context.state.put("counter", 41)
                context.state.put("counter", context.state.get("counter") + 1)
                context.state.put("doomed", True)
                context.state.delete("doomed")
                context.state.delete("never-there")
                seen["all"] = context.state.get()
                seen["keys"] = context.state.keys()
                seen["updated"] = context.state.update("counter", lambda v: v + 1)
                context.result = seen
            """
        },
        state=state,
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.result == {
        "existing": {"n": 1},
        "missing": "dflt",
        "all": {"counter": 42, "existing": {"n": 1}},
        "keys": ["counter", "existing"],
        "updated": 43,
    }
    assert state.get("counter") == 43
    assert state.get("doomed") is None
    again = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.result = context.state.get()\n"},
        state=state,
    )
    assert again.result == {"counter": 43, "existing": {"n": 1}}


def test_result_is_returned(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"main.py": "from fxray import context\ncontext.result = {'total': 3, 'items': [1, 2]}\n"},
    )
    assert result.result == {"total": 3, "items": [1, 2]}
    assert run(tmp_path, {"main.py": "pass\n"}).result is None


# --------------------------------------------------------------------------- secrets

TOKEN = "s3cr3t-T0ken-value"
PASSWORD = "hunter2-password"
SECRETS = {"token": TOKEN, "db": {"password": PASSWORD}, "short": "abc"}


def assert_no_secrets(result: RunResult) -> None:
    text = repr((result.logs, result.error, [s.error for s in result.steps], result.result))
    assert TOKEN not in text
    assert PASSWORD not in text
    assert "***" in text


def test_secrets_are_usable_by_the_script(tmp_path: Path, state: ServiceState) -> None:
    result = run(
        tmp_path,
        {
            "main.py": """
                from fxray import context
                context.state.put("token_ok", context.secrets["token"].startswith("s3cr3t"))
            """
        },
        secrets=SECRETS,
        state=state,
    )
    assert result.status is RunStatus.SUCCEEDED
    assert state.get("token_ok") is True


def test_secrets_redacted_from_logs_result_and_errors(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {
            "main.py": """
                import logging, sys
                from fxray import context
                token = context.secrets["token"]
                password = context.secrets["db"]["password"]
                print("token is", token)
                print(f"password={password}", file=sys.stderr)
                sys.stdout.write(token[:5])
                sys.stdout.write(token[5:] + " split across writes\\n")
                context.log.info("logging %s and %s", token, password)
                logging.getLogger("lib").warning("library saw %s", token)
                context.result = {
                    "token": token,
                    "nested": [token, {"pw": "x" + password + "y"}],
                    token: "as a key",
                    "tuple": (password,),
                }
                raise RuntimeError(f"cannot log in with {token} / {password}")
            """
        },
        secrets=SECRETS,
    )
    assert result.status is RunStatus.FAILED
    assert_no_secrets(result)
    assert ("STDOUT", "main.py", "token is ***") in lines(result)
    assert ("STDERR", "main.py", "password=***") in lines(result)
    assert ("STDOUT", "main.py", "*** split across writes") in lines(result)
    assert ("INFO", "main.py", "logging *** and ***") in lines(result)
    assert result.result == {
        "token": "***",
        "nested": ["***", {"pw": "x***y"}],
        "***": "as a key",
        "tuple": ["***"],
    }
    assert result.steps[0].error == "RuntimeError: cannot log in with *** / ***"
    assert "cannot log in with *** / ***" in (result.error or "")
    assert any("RuntimeError: cannot log in with ***" in m for _, _, m in lines(result, "ERROR"))


def test_secret_in_sys_exit_message_redacted(tmp_path: Path) -> None:
    result = run(
        tmp_path,
        {"main.py": "import sys\nfrom fxray import context\nsys.exit(context.secrets['token'])\n"},
        secrets=SECRETS,
    )
    assert result.status is RunStatus.FAILED
    assert TOKEN not in (result.error or "") + (result.steps[0].error or "")


def test_short_secret_values_are_not_redacted(tmp_path: Path) -> None:
    result = run(tmp_path, {"main.py": "print('abc abcd')\n"}, secrets=SECRETS)
    assert lines(result) == [("STDOUT", "main.py", "abc abcd")]


# --------------------------------------------------------------------------- context object


def test_context_outside_a_run_raises() -> None:
    with pytest.raises(ContextError, match="only available inside"):
        _ = context.event
    with pytest.raises(ContextError):
        _ = context.params
    with pytest.raises(ContextError):
        context.result = 1
    assert "no run" in repr(context)


def test_context_is_deactivated_after_a_run(tmp_path: Path) -> None:
    result = run(
        tmp_path, {"main.py": "from fxray import context\ncontext.result = repr(context)\n"}
    )
    assert result.result.startswith("<fxray.context run=run-")
    with pytest.raises(ContextError):
        _ = context.run
    failed = run(tmp_path, {"main.py": "raise ValueError\n"})
    assert failed.status is RunStatus.FAILED
    with pytest.raises(ContextError):
        _ = context.run


def test_context_attributes_cannot_be_replaced(tmp_path: Path) -> None:
    result = run(tmp_path, {"main.py": "from fxray import context\ncontext.params = {}\n"})
    assert result.status is RunStatus.FAILED
    assert "AttributeError" in (result.error or "")


# --------------------------------------------------------------------------- package folder


@pytest.fixture
def helper_name() -> Iterator[str]:
    name = f"fxhelper_{uuid.uuid4().hex[:8]}"
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_script_imports_a_helper_from_its_package(tmp_path: Path, helper_name: str) -> None:
    result = run(
        tmp_path,
        {
            f"{helper_name}.py": "def greet(name):\n    return f'hi {name}'\n",
            f"{helper_name}_pkg/__init__.py": "",
            f"{helper_name}_pkg/util.py": "VALUE = 42\n",
            "main.py": f"""
                from fxray import context
                import {helper_name}
                from {helper_name}_pkg.util import VALUE
                context.result = [{helper_name}.greet("bob"), VALUE]
            """,
        },
        steps=["main.py"],
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.result == ["hi bob", 42]
    sys.modules.pop(f"{helper_name}_pkg.util", None)
    sys.modules.pop(f"{helper_name}_pkg", None)


def test_sys_path_restored(tmp_path: Path) -> None:
    before = list(sys.path)
    result = run(
        tmp_path,
        {"main.py": "import sys\nfrom fxray import context\ncontext.result = sys.path[0]\n"},
    )
    assert Path(result.result).name.startswith("pkg-")
    assert sys.path == before


def test_cwd_is_the_package_folder_and_restored(tmp_path: Path) -> None:
    before = os.getcwd()
    result = run(
        tmp_path,
        {
            "data.txt": "payload",
            "main.py": """
                import os
                from fxray import context
                context.result = [os.getcwd(), open("data.txt").read()]
            """,
        },
        steps=["main.py"],
    )
    assert result.status is RunStatus.SUCCEEDED, result.error
    cwd, content = result.result
    assert Path(cwd).name.startswith("pkg-")
    assert Path(cwd).resolve().parent == tmp_path.resolve()
    assert content == "payload"
    assert os.getcwd() == before


def test_cwd_restored_after_failure_and_chdir(tmp_path: Path) -> None:
    before = os.getcwd()
    result = run(
        tmp_path, {"main.py": f"import os\nos.chdir({str(tmp_path)!r})\nraise OSError('x')\n"}
    )
    assert result.status is RunStatus.FAILED
    assert os.getcwd() == before


def test_code_cache_reused(tmp_path: Path, state: ServiceState) -> None:
    pkg = make_package(tmp_path, {"main.py": "from fxray import context\ncontext.result = 1\n"})
    cache = runner.CodeCache()
    first = runner.execute(
        make_spec(["main.py"]), pkg, config={}, secrets={}, state=state, code_cache=cache
    )
    code = cache.get(pkg / "main.py")
    second = runner.execute(
        make_spec(["main.py"]), pkg, config={}, secrets={}, state=state, code_cache=cache
    )
    assert first.result == second.result == 1
    assert cache.get(pkg / "main.py") is code


def test_redactor_deep() -> None:
    redact = runner.Redactor({"a": "longsecret", "n": 123456, "flag": True, "tiny": "ab"})
    assert redact("x longsecret 123456 ab True") == "x *** *** ab True"
    assert redact.deep({"k": ["longsecret", 1, None]}) == {"k": ["***", 1, None]}
    assert runner.Redactor({}).deep({"x": "longsecret"}) == {"x": "longsecret"}


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("context.result = {1, 2}", "not JSON serializable"),
        ("context.result = float('nan')", "Out of range float values"),
        ("r = []\nfor _ in range(5000):\n    r = [r]\ncontext.result = r", "nests deeper"),
        ("context.result = 'x' * 2_000_000", "over the limit of 1000000"),
    ],
)
def test_a_result_that_cannot_be_stored_fails_its_run_alone(
    tmp_path: Path, code: str, why: str
) -> None:
    result = run(tmp_path, {"main.py": f"from fxray import context\n{code}\n"})
    assert result.status == RunStatus.FAILED
    assert result.error is not None and "context.result cannot be stored" in result.error
    assert why in result.error
    assert result.result is None


def test_an_error_with_a_nul_character_is_stored_without_it(tmp_path: Path) -> None:
    result = run(tmp_path, {"main.py": "raise ValueError('a\\x00b')\n"})
    assert result.status == RunStatus.FAILED
    assert result.error is not None and "\x00" not in result.error and "a\ufffdb" in result.error
