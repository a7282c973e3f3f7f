"""Isolated runs without Ray: the frame protocol, the ``fxray.context`` shim, the worker
process (same results as the in-process runner), and its timeouts and crashes."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import sysconfig
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fxray.events.cloudevent import EventLimits, new_event
from fxray.kv import ServiceState
from fxray.kv.local import InMemoryKV
from fxray.runtime import runner
from fxray.runtime.isolated import SHIM_DIR, IsolatedWorker, describe_exit, protocol
from fxray.runtime.isolated.process import _answer
from fxray.runtime.runs import LogLine, RunResult, RunSpec, RunStatus, StepResult
from tests.unit.runtime.test_runner import capturing_streams, make_package

SERVICE = "svc"


def make_spec(steps: list[str], data: Any = None, **attributes: Any) -> RunSpec:
    event = new_event("orders.created", data, source="shop", **attributes)
    return RunSpec(
        run_id=f"run-{uuid.uuid4().hex[:8]}",
        service=SERVICE,
        version_id=f"{SERVICE}@abc123",
        package_hash="abc123",
        steps=steps,
        event=event,
        correlation_id=event["id"],
        service_name="orders",  # the name in its project; SERVICE is the platform-wide id
    )


@pytest.fixture
def state() -> ServiceState:
    return ServiceState(InMemoryKV(), SERVICE)


@pytest.fixture
def workers() -> Iterator[list[IsolatedWorker]]:
    """Worker processes made by a test, closed after it."""
    made: list[IsolatedWorker] = []
    yield made
    for worker in made:
        worker.close()


def isolated(workers: list[IsolatedWorker], pkg: Path, env: Path | None = None) -> IsolatedWorker:
    worker = IsolatedWorker(pkg, env)
    workers.append(worker)
    return worker


# -- the protocol -------------------------------------------------------------------------------


def test_frames_round_trip_any_text() -> None:
    messages = [
        {"op": "log", "lines": [[1.5, "STDOUT", "a.py", "héllo ✓ \udcff \x00 end"]]},
        {"op": "done", "result": {"nested": [1, 2.5, None, True]}, "n": 2**60},
    ]
    stream = io.BytesIO(b"".join(protocol.encode(m) for m in messages))
    assert [protocol.read_frame(stream), protocol.read_frame(stream)] == messages
    assert protocol.read_frame(stream) is None  # the end of the stream, between frames


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x00\x00", "inside a frame header"),
        (protocol.HEADER.pack(10) + b'{"op":', "bytes before a frame's end"),
        (protocol.HEADER.pack(protocol.MAX_FRAME_BYTES + 1), "is over"),
        (protocol.HEADER.pack(3) + b"[1]", "not an object"),
        (protocol.HEADER.pack(5) + b"{oops", "not JSON"),
    ],
    ids=["cut-header", "cut-payload", "too-large", "not-an-object", "not-json"],
)
def test_a_bad_stream_is_a_protocol_error(data: bytes, problem: str) -> None:
    with pytest.raises(protocol.ProtocolError, match=problem):
        protocol.read_frame(io.BytesIO(data))


def test_what_is_not_json_cannot_be_framed() -> None:
    with pytest.raises(TypeError):
        protocol.encode({"op": "call", "args": {"value": object()}})


def test_the_worker_side_runs_on_the_standard_library_alone(tmp_path: Path) -> None:
    """protocol.py, worker.py and the shim import nothing outside the standard library: they
    are loaded in a bare interpreter (-I -S), which then lists every module file it holds."""
    probe = textwrap.dedent(
        f"""
        import importlib.util, json, sys
        folder = {str(Path(protocol.__file__).parent)!r}
        for name in ("protocol", "worker"):
            spec = importlib.util.spec_from_file_location("_" + name, f"{{folder}}/{{name}}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        sys.path.insert(0, {str(SHIM_DIR)!r})
        import fxray
        print(json.dumps([getattr(m, "__file__", None) for m in list(sys.modules.values())]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    stdlib = sysconfig.get_paths()["stdlib"]
    files = [f for f in __import__("json").loads(done.stdout) if f]
    outside = [f for f in files if not f.startswith((stdlib, str(SHIM_DIR)))]
    assert outside == []
    assert any(f.startswith(str(SHIM_DIR)) for f in files)


# -- the shim -----------------------------------------------------------------------------------


def shim_context() -> ModuleType:
    """The shim's context module, loaded under a name of its own (not ``fxray.context``)."""
    path = SHIM_DIR / "fxray" / "context.py"
    spec = importlib.util.spec_from_file_location(f"shim_context_{uuid.uuid4().hex}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class FakeExecutor:
    """Answers the shim's calls as the executor would, from a real ServiceState."""

    def __init__(self) -> None:
        self.state = ServiceState(InMemoryKV(), SERVICE)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.conflicts = 0  # how many check-and-set writes to refuse first

    def __call__(self, name: str, args: dict[str, Any]) -> Any:
        self.calls.append((name, args))
        if name == "state.cas" and self.conflicts:
            self.conflicts -= 1
            self.state.put(args["key"], "changed by another run")
            return False
        if name == "events.send":
            return f"id-of-{args['type']}"
        sender: Any = None
        reply = _answer({"name": name, "args": args}, self.state, sender)
        if not reply["ok"]:
            raise RuntimeError(reply["error"])
        return reply["value"]


def test_the_shim_offers_the_script_api_and_forwards_what_reaches_the_platform() -> None:
    ctx = shim_context()
    executor = FakeExecutor()
    tick = {"specversion": "1.0", "id": "e1", "type": ctx.SCHEDULE_TICK, "source": "fxray"}
    tick["data"] = {"service": "svc", "schedule_id": "s1", "params": {"lane": "bulk"}}
    run = ctx.RunContext(
        event=tick,
        run=ctx.RunInfo("r1", "svc", "svc@1", "a.py", "c1", 2),
        config={"limit": 3},
        secrets={},
        state=ctx.StateView(executor),
        events=ctx.EventSender(executor),
        log=__import__("logging").getLogger("fxray.service.svc"),
    )
    with pytest.raises(ctx.ContextError):
        ctx.context.params  # noqa: B018
    ctx._activate(run)
    try:
        proxy = ctx.context
        assert dict(proxy.params) == {"service": "svc", "schedule_id": "s1", "lane": "bulk"}
        assert proxy.run.run_id == "r1" and proxy.run.attempt == 2
        assert (proxy.package.name, proxy.package.id) == ("svc", "svc@1")
        assert proxy.config == {"limit": 3}
        with pytest.raises(TypeError):
            proxy.params["lane"] = "x"  # type: ignore[index]
        with pytest.raises(AttributeError, match="cannot be set"):
            proxy.config = {}
        proxy.result = {"ok": 1}
        assert run.result == {"ok": 1}
        # StreamZero's send(type, source, data) and the keyword form
        assert proxy.events.send("a.b", "shop/x", {"n": 1}) == "id-of-a.b"
        proxy.events.send("c.d", {"n": 2}, subject="s")
        sent = [args for name, args in executor.calls if name == "events.send"]
        assert sent == [
            {"type": "a.b", "data": {"n": 1}, "source": "shop/x", "attributes": {}},
            {"type": "c.d", "data": {"n": 2}, "source": None, "attributes": {"subject": "s"}},
        ]
        # state: a missing key gives the default; update retries after a conflicting write
        assert proxy.state.get("n", 5) == 5
        executor.conflicts = 2
        assert proxy.state.update("n", lambda v: [v], default=0) == ["changed by another run"]
        proxy.state.put("m", {"x": 1})
        assert proxy.state.keys() == ["m", "n"]
        assert proxy.state.get() == {"m": {"x": 1}, "n": ["changed by another run"]}
        proxy.state.delete("m")
        assert proxy.state.get("m") is None
    finally:
        ctx._activate(None)


def test_a_stale_check_and_set_is_refused_by_the_executor(state: ServiceState) -> None:
    sender: Any = None

    def call(name: str, **args: Any) -> Any:
        return _answer({"name": name, "args": args}, state, sender)

    assert call("state.entry", key="k")["value"] == [False, None, 0]
    assert call("state.cas", key="k", value=1, index=0)["value"] is True
    found, value, index = call("state.entry", key="k")["value"]
    assert (found, value) == (True, 1)
    assert call("state.cas", key="k", value=2, index=0)["value"] is False  # not absent now
    state.put("k", 3)  # another run writes in between
    assert call("state.cas", key="k", value=2, index=index)["value"] is False
    bad = call("state.put", key="k", value=float("nan"))
    assert bad["ok"] is False and bad["type"] == "TypeError"
    assert call("no.such")["error"] == "unknown context call 'no.such'"


# -- the worker: the runner's semantics ---------------------------------------------------------

SCRIPTS: dict[str, dict[str, str]] = {
    "prints-logs-and-emits": {
        "a.py": """
            import logging, sys
            from fxray import context
            print("hello", context.params["who"], "token", context.secrets["token"])
            print("no newline", end="")
            sys.stderr.write("to stderr\\n")
            context.log.info("info %s", 1)
            logging.getLogger("lib").warning("from a library")
            context.scratch["seen"] = context.run.step
            context.events.send("orders.checked", {"who": context.params["who"]})
        """,
        "b.py": """
            from fxray import context
            n = context.state.update("n", lambda v: (v or 0) + 1)
            context.result = {"seen": context.scratch["seen"], "n": n, "main": __name__}
        """,
    },
    "raises": {
        "a.py": "def f():\n    raise ValueError('bad row 3')\nf()\n",
        "b.py": "print('never')\n",
    },
    "sys-exit": {"a.py": "import sys\nsys.exit(3)\n", "b.py": "print('never')\n"},
    "sys-exit-0": {"a.py": "import sys\nsys.exit(0)\n", "b.py": "print('next step ran')\n"},
    "syntax-error": {"a.py": "def (:\n"},
    "logs-an-exception": {
        "a.py": """
            import logging
            try:
                1 / 0
            except ZeroDivisionError:
                logging.getLogger("x").exception("it broke")
        """,
    },
    "result-not-json": {"a.py": "from fxray import context\ncontext.result = {1, 2}\n"},
    "result-too-deep": {
        "a.py": "from fxray import context\nv = []\nfor _ in range(20):\n    v = [v]\n"
        "context.result = v\n"
    },
    "event-refused": {
        "a.py": """
            from fxray import context
            try:
                context.events.send("big.one", {"blob": "x" * 5000})
            except ValueError as exc:
                context.result = {"refused": type(exc).__name__, "why": str(exc)[:40]}
            try:
                context.events.send("not.json", {"s": {1}})
            except ValueError as exc:
                context.result["not_json"] = type(exc).__name__
        """,
    },
    "secret-in-error": {
        "a.py": "from fxray import context\nraise RuntimeError(context.secrets['token'])\n"
    },
    "helper-module": {
        "a.py": "import helper\nfrom fxray import context\ncontext.result = helper.VALUE\n",
        "helper.py": "VALUE = 42\n",
    },
    "identity": {
        "a.py": "from fxray import context\n"
        "context.result = [context.package.name, context.run.service, context.run.service_name]\n"
    },
}


def comparable(result: RunResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "steps": [(s.name, s.status, s.error) for s in result.steps],
        "logs": [(level, step, message) for _, level, step, message in result.logs],
        "result": result.result,
        "emitted": [(e["type"], e.get("data"), e.get("fxrunid")) for e in result.emitted],
    }


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_an_isolated_run_ends_as_an_in_process_run_does(
    tmp_path: Path, workers: list[IsolatedWorker], case: str
) -> None:
    scripts = SCRIPTS[case]
    steps = [name for name in scripts if name != "helper.py"]
    pkg = make_package(tmp_path, scripts)
    spec = make_spec(steps, {"who": "Ada"})
    secrets = {"token": "tok-9f8e7d"}
    limits = EventLimits(max_bytes=2000, max_depth=10)
    with capturing_streams():
        expected = runner.execute(
            spec,
            pkg,
            config={},
            secrets=secrets,
            state=ServiceState(InMemoryKV(), SERVICE),
            limits=limits,
        )
    got = isolated(workers, pkg).execute(
        spec, config={}, secrets=secrets, state=ServiceState(InMemoryKV(), SERVICE), limits=limits
    )
    assert comparable(got) == comparable(expected)
    assert "tok-9f8e7d" not in repr(comparable(got))


def test_the_worker_sees_its_env_the_shim_and_the_stdlib_only(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    env = tmp_path / "env"
    (env / "pinned_lib").mkdir(parents=True)
    (env / "pinned_lib" / "__init__.py").write_text("VERSION = '1.10.13'\n")
    pkg = make_package(
        tmp_path,
        {
            "a.py": """
                import importlib.util, sys
                import pinned_lib
                import fxray
                from fxray import context
                context.result = {
                    "pinned": pinned_lib.VERSION,
                    "path": sys.path,
                    "platform": [m for m in ("pydantic", "ray", "fxray.runtime")
                                 if importlib.util.find_spec(m.split(".")[0]) is not None
                                 and (m != "fxray.runtime" or hasattr(fxray, "runtime"))],
                    "fxray": fxray.__file__,
                }
            """
        },
    )
    worker = isolated(workers, pkg, env)
    result = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.result["pinned"] == "1.10.13"
    assert result.result["platform"] == []  # no pydantic, no ray, not the real fxray
    assert result.result["fxray"].startswith(str(SHIM_DIR))
    stdlib = sysconfig.get_paths()["stdlib"]
    path = result.result["path"]
    assert path[:3] == [str(pkg), str(SHIM_DIR), str(env)]
    assert all("site-packages" not in p and p.startswith(os.path.dirname(stdlib)) for p in path[3:])
    assert worker.sys_path == path


class Hooks:
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def log(self, line: LogLine) -> None:
        self.seen.append(("log", line[3]))

    def step(self, index: int, name: str, result: StepResult | None) -> None:
        self.seen.append(("step", (index, name, result.status if result else None)))


def test_ops_hooks_hear_steps_and_scrubbed_lines_as_the_run_goes(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    pkg = make_package(
        tmp_path,
        {"a.py": "print('one secret-value-1')\n", "b.py": "print('two')\nraise SystemExit(2)\n"},
    )
    hooks = Hooks()
    result = isolated(workers, pkg).execute(
        make_spec(["a.py", "b.py"]),
        config={},
        secrets={"s": "secret-value-1"},
        state=state,
        hooks=hooks,
    )
    assert result.status is RunStatus.FAILED
    assert hooks.seen == [
        ("step", (0, "a.py", None)),
        ("log", "one ***"),
        ("step", (0, "a.py", RunStatus.SUCCEEDED)),
        ("step", (1, "b.py", None)),
        ("log", "two"),
        ("step", (1, "b.py", RunStatus.FAILED)),
    ]


def test_config_and_secrets_reach_the_worker_again_only_when_they_change(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    pkg = make_package(
        tmp_path, {"a.py": "from fxray import context\ncontext.result = context.config\n"}
    )
    worker = isolated(workers, pkg)
    sent: list[dict[str, Any]] = []
    encode = protocol.encode

    def spy(message: dict[str, Any], **options: Any) -> bytes:
        if message["op"] == protocol.RUN:
            sent.append(message)
        return encode(message, **options)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(protocol, "encode", spy)
        results = [
            worker.execute(make_spec(["a.py"]), config=config, secrets={}, state=state).result
            for config in ({"a": 1}, {"a": 1}, {"a": 2})
        ]
    assert results == [{"a": 1}, {"a": 1}, {"a": 2}]
    assert ["config" in m for m in sent] == [True, False, True]
    assert ["secrets" in m for m in sent] == [True, False, False]


# -- the worker: timeouts, cancellation, crashes ------------------------------------------------

FLAKY = """
import os, signal, time
from fxray import context
mode = context.params.get("mode")
print("started", mode)
if mode == "sleep":
    time.sleep(60)
if mode == "stubborn":  # swallows the interrupt: only a kill ends it
    while True:
        try:
            time.sleep(60)
        except BaseException:
            pass
if mode == "exit":
    os._exit(7)
if mode == "segfault":
    os.kill(os.getpid(), signal.SIGSEGV)
context.result = os.getpid()
"""


def _run_in_background(
    worker: IsolatedWorker, spec: RunSpec, state: ServiceState
) -> tuple[Any, list[RunResult]]:
    import threading

    out: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: out.append(worker.execute(spec, config={}, secrets={}, state=state))
    )
    thread.start()
    return thread, out


def _wait_for_start(worker: IsolatedWorker, run_id: str) -> None:
    """Until ``run_id`` is the current run, and a moment more (its script is running)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if worker._current == run_id:
            time.sleep(0.3)
            return
    raise AssertionError("the run did not start")


def test_an_interrupted_run_is_cancelled_and_the_warm_worker_goes_on(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    worker = isolated(workers, make_package(tmp_path, {"a.py": FLAKY}))
    first = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    sleeper = make_spec(["a.py"], {"mode": "sleep"})
    thread, out = _run_in_background(worker, sleeper, state)
    _wait_for_start(worker, sleeper.run_id)
    worker.interrupt("another-run", grace_s=0.1)  # not the running one: no effect
    time.sleep(0.3)
    assert thread.is_alive()
    started = time.monotonic()
    worker.interrupt(sleeper.run_id, grace_s=5)
    thread.join(10)
    (cancelled,) = out
    assert cancelled.status is RunStatus.CANCELLED
    assert cancelled.steps[0].error == "cancelled while running"
    assert time.monotonic() - started < 2
    assert ("STDOUT", "started sleep") in [(line[1], line[3]) for line in cancelled.logs]
    after = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert after.status is RunStatus.SUCCEEDED
    assert after.result == first.result  # the same process: interrupted, not killed


def test_a_run_that_ignores_the_interrupt_is_killed_after_the_grace_period(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    worker = isolated(workers, make_package(tmp_path, {"a.py": FLAKY}))
    first = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    stubborn = make_spec(["a.py"], {"mode": "stubborn"})
    thread, out = _run_in_background(worker, stubborn, state)
    _wait_for_start(worker, stubborn.run_id)
    started = time.monotonic()
    worker.interrupt(stubborn.run_id, grace_s=0.5)
    thread.join(10)
    (stopped,) = out
    assert 0.4 < time.monotonic() - started < 5
    assert stopped.status is RunStatus.CANCELLED
    assert stopped.error == "cancelled while running (worker process stopped)"
    after = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert after.status is RunStatus.SUCCEEDED and after.result != first.result
    assert worker.starts == 2


def test_an_interrupt_between_runs_reaches_no_run(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    worker = isolated(workers, make_package(tmp_path, {"a.py": FLAKY}))
    spec = make_spec(["a.py"])
    first = worker.execute(spec, config={}, secrets={}, state=state)
    worker.interrupt(spec.run_id, grace_s=0.1)  # it has ended: no signal, no kill timer
    time.sleep(0.3)
    again = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert again.status is RunStatus.SUCCEEDED and again.result == first.result


@pytest.mark.parametrize(
    ("mode", "how"), [("exit", "exit code 7"), ("segfault", "killed by SIGSEGV")]
)
def test_a_worker_that_dies_fails_its_run_and_the_next_run_gets_a_fresh_one(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState, mode: str, how: str
) -> None:
    worker = isolated(workers, make_package(tmp_path, {"a.py": FLAKY}))
    first = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    died = worker.execute(make_spec(["a.py"], {"mode": mode}), config={}, secrets={}, state=state)
    assert died.status is RunStatus.FAILED
    assert died.error == f"isolated worker process died during the run ({how})"
    assert died.emitted == [] and died.result is None
    after = worker.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert after.status is RunStatus.SUCCEEDED
    assert after.result not in (None, first.result)


def test_a_worker_that_cannot_start_fails_the_run_saying_why(
    tmp_path: Path, state: ServiceState
) -> None:
    pkg = make_package(tmp_path, {"a.py": "pass\n"})
    missing = IsolatedWorker(pkg, None, python=str(tmp_path / "no-python"))
    result = missing.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert result.status is RunStatus.FAILED
    assert "could not start the isolated worker process" in (result.error or "")
    broken = IsolatedWorker(pkg, None, python="/bin/false")
    result = broken.execute(make_spec(["a.py"]), config={}, secrets={}, state=state)
    assert result.error == "the isolated worker process ended before it was ready (exit code 1)"


def test_exit_codes_are_described() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(None) == "no exit code"


# -- batches: runs handed over ahead of time ----------------------------------------------------


def test_a_batch_runs_in_order_and_a_run_cancelled_while_it_waits_is_skipped(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    code = (
        "import time\nfrom fxray import context\n"
        "if context.params['i'] == 1:\n    time.sleep(0.5)\n"
        "i = context.params['i']\n"
        "context.result = context.state.update('order', lambda v: (v or []) + [i])\n"
    )
    worker = isolated(workers, make_package(tmp_path, {"a.py": code}))
    specs = [make_spec(["a.py"], {"i": i}) for i in range(6)]
    refused = specs[5].run_id
    begun: list[str] = []
    batch = worker.run_batch(
        specs,
        config={},
        secrets={},
        state=state,
        admit=lambda spec: spec.run_id != refused,
        started=lambda spec, when: begun.append(spec.run_id),
    )
    results = [next(batch)]  # run 0 is done; the worker sleeps in run 1, the rest wait
    assert worker.cancel_queued(specs[2].run_id)
    assert not worker.cancel_queued("never-handed-over")
    results += list(batch)
    by_id = {r.run_id: r for r in results}
    assert [by_id[s.run_id].status for s in specs] == [
        RunStatus.SUCCEEDED,
        RunStatus.SUCCEEDED,
        RunStatus.CANCELLED,  # skipped by the worker
        RunStatus.SUCCEEDED,
        RunStatus.SUCCEEDED,
        RunStatus.CANCELLED,  # never handed over
    ]
    assert state.get("order") == [0, 1, 3, 4]  # in order; the skipped ones never ran
    assert begun == [s.run_id for s in specs[:5]]


def test_when_the_worker_dies_mid_batch_the_runs_behind_it_go_to_a_fresh_one(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    worker = isolated(workers, make_package(tmp_path, {"a.py": FLAKY}))
    modes = [None, None, "exit", None, None]
    specs = [make_spec(["a.py"], {"mode": mode}) for mode in modes]
    results = {r.run_id: r for r in worker.run_batch(specs, config={}, secrets={}, state=state)}
    statuses = [results[s.run_id].status for s in specs]
    assert statuses == [RunStatus.SUCCEEDED] * 2 + [RunStatus.FAILED] + [RunStatus.SUCCEEDED] * 2
    pids = [results[s.run_id].result for s in specs]
    assert pids[0] == pids[1] and pids[3] == pids[4] and pids[0] != pids[3]
    assert worker.starts == 2


def test_a_batch_abandoned_midway_leaves_no_run_to_answer_the_next(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    pkg = make_package(tmp_path, {"a.py": "from fxray import context\ncontext.result = 1\n"})
    worker = isolated(workers, pkg)
    batch = worker.run_batch(
        [make_spec(["a.py"]) for _ in range(5)], config={}, secrets={}, state=state
    )
    next(batch)
    batch.close()  # the consumer stopped: the runs still in the worker's pipe are dropped
    spec = make_spec(["a.py"])
    result = worker.execute(spec, config={}, secrets={}, state=state)
    assert result.run_id == spec.run_id and result.status is RunStatus.SUCCEEDED


def test_a_run_whose_script_swallows_the_interrupt_runs_no_further_step(
    tmp_path: Path, workers: list[IsolatedWorker], state: ServiceState
) -> None:
    swallows = "import time\ntry:\n    time.sleep(30)\nexcept BaseException:\n    pass\n"
    pkg = make_package(tmp_path, {"a.py": swallows, "b.py": "print('b ran')\n"})
    worker = isolated(workers, pkg)
    spec = make_spec(["a.py", "b.py"])
    thread, out = _run_in_background(worker, spec, state)
    _wait_for_start(worker, spec.run_id)
    worker.interrupt(spec.run_id, grace_s=10)
    thread.join(5)
    (result,) = out
    assert [(s.name, s.status) for s in result.steps] == [
        ("a.py", RunStatus.SUCCEEDED),
        ("b.py", RunStatus.CANCELLED),
    ]
    assert result.status is RunStatus.CANCELLED and "b ran" not in repr(result.logs)
