"""The executor's side of an isolated worker process (see :mod:`.worker` for the other side).

:class:`IsolatedWorker` keeps one child process warm and hands it a batch's runs. It answers
the child's context calls with the real objects (the run's :class:`EventSender` with the
platform's event limits, the service's KV state), scrubs secrets from what comes back and
feeds the ops hooks, so a run's record looks the same as an in-process one.

Runs are *pipelined*: while the child runs one, the next ones already wait in its pipe (up to
``WINDOW_RUNS`` runs and ``WINDOW_BYTES`` bytes), so the two processes work at the same time
and neither waits for the other between runs. The child runs them in order; the oldest run
not yet done is the *current* one. Cancelling or timing out the current run writes its id on
a control pipe and sends SIGINT (the child interrupts its script only if that run is still
the one running), then SIGKILL after a grace period; a run cancelled while it waits in the
pipe is skipped by the child. A child that dies fails its current run; the runs queued behind
it never started and go to a fresh child.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from fxray.events import cloudevent as ev
from fxray.kv import ServiceState
from fxray.runtime.context import EventSender, StateView
from fxray.runtime.isolated import protocol
from fxray.runtime.runner import Redactor, RunHooks, seal_result
from fxray.runtime.runs import LogLine, RunResult, RunSpec, RunStatus, StepResult

SHIM_DIR = Path(__file__).resolve().with_name("shim")
WORKER_FILE = Path(__file__).resolve().with_name("worker.py")
START_TIMEOUT_S = 60.0
EXIT_WAIT_S = 5.0
WINDOW_RUNS = 64  # runs handed to the child ahead of the one it runs
WINDOW_BYTES = 48 * 1024  # below a pipe's 64 KiB: writing ahead never blocks
LOW_WATER = 8  # runs handed over are sent once fewer than this many wait in the pipe
_UNSENT: Any = object()


class WorkerStartError(RuntimeError):
    """The worker process ended (or hung) before it said it was ready."""


class _Gone(Exception):
    """The child's pipe is closed: it died between runs."""


@dataclass(slots=True)
class _InFlight:
    """A run handed to the child, not done yet."""

    spec: RunSpec
    size: int
    sender: _LazySender
    hooks: RunHooks | None
    started: float = 0.0
    logs: list[LogLine] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)


class IsolatedWorker:
    """One warm worker process running one version's scripts, with only its own packages.

    ``run_batch``/``execute`` are called from one thread at a time (the executor's run
    thread); ``interrupt`` and ``cancel_queued`` may be called from any thread meanwhile.
    """

    def __init__(
        self, package_dir: Path, env_path: Path | None, *, python: str | None = None
    ) -> None:
        self.package_dir = Path(package_dir)
        self.env_path = Path(env_path) if env_path else None
        self.python = python or sys.executable
        self.starts = 0  # processes started so far (the first, and one after each death)
        self.sys_path: list[str] = []  # the worker's import path, as it reported it
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: BinaryIO | None = None
        self._writer: BinaryIO | None = None
        self._control: int | None = None  # write end of the control pipe (run ids to stop)
        self._lock = threading.Lock()
        self._current: str | None = None  # the run the child is (or was last) running
        self._interrupted: set[str] = set()
        self._sent: set[str] = set()  # runs handed to the child, not done yet
        self._kill_timer: threading.Timer | None = None
        self._config: Any = _UNSENT
        self._secrets: Any = _UNSENT
        self._flight_bytes = 0  # bytes of the run frames handed over and not done
        self._unsent = 0  # run frames written to the buffer, not flushed to the child yet
        self._redactors: tuple[Any, Redactor] = (_UNSENT, Redactor({}))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- the process --------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker process and wait until it is ready (a no-op if it runs)."""
        if self.alive:
            return
        self._reap()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        control_r, control_w = os.pipe()
        os.set_blocking(control_r, False)
        os.set_blocking(control_w, False)
        command = [
            self.python, "-I", "-S", str(WORKER_FILE),
            "--shim", str(SHIM_DIR),
            "--package", str(self.package_dir),
            "--fds", f"{to_child_r},{from_child_w},{control_r}",
            "--parent", str(os.getpid()),
        ]  # fmt: skip
        if self.env_path is not None:
            command += ["--env", str(self.env_path)]
        child_ends = (to_child_r, from_child_w, control_r)
        try:
            proc = subprocess.Popen(
                command, pass_fds=child_ends, stdin=subprocess.DEVNULL, cwd=self.package_dir
            )
        except OSError as exc:
            for fd in (to_child_w, from_child_r, control_w):
                os.close(fd)
            raise WorkerStartError(f"could not start the isolated worker process: {exc}") from exc
        finally:
            for fd in child_ends:
                os.close(fd)
        reader = os.fdopen(from_child_r, "rb")
        writer = os.fdopen(to_child_w, "wb", buffering=WINDOW_BYTES + 16 * 1024)
        with self._lock:
            self._proc, self._reader, self._writer = proc, reader, writer
            self._control = control_w
            self._config = self._secrets = _UNSENT
        watchdog = threading.Timer(START_TIMEOUT_S, self._kill, args=(proc, None))
        watchdog.daemon = True
        watchdog.start()
        try:
            ready = protocol.read_frame(reader)
        except protocol.ProtocolError:
            ready = None
        finally:
            watchdog.cancel()
        if ready is None or ready.get("op") != protocol.READY:
            code = self._reap()
            raise WorkerStartError(
                f"the isolated worker process ended before it was ready ({describe_exit(code)})"
            )
        self.sys_path = list(ready.get("path") or [])
        self.starts += 1

    def close(self) -> None:
        """Ask the worker to exit, and kill it if it does not."""
        with self._lock:
            proc, writer = self._proc, self._writer
        if proc is None:
            return
        if writer is not None:
            try:
                protocol.write_frame(writer, {"op": protocol.EXIT})
            except (OSError, ValueError):
                pass
        try:
            proc.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self._kill(proc, None)
        self._reap()

    # -- runs ---------------------------------------------------------------------------------

    def execute(
        self,
        spec: RunSpec,
        *,
        config: dict[str, Any],
        secrets: dict[str, Any],
        state: ServiceState,
        hooks: RunHooks | None = None,
        limits: ev.EventLimits = ev.DEFAULT_LIMITS,
    ) -> RunResult:
        """Run one run in the worker process (started first if it is not running)."""
        (result,) = self.run_batch(
            [spec],
            config=config,
            secrets=secrets,
            state=state,
            limits=limits,
            hooks_for=lambda _: hooks,
        )
        return result

    def run_batch(
        self,
        specs: list[RunSpec],
        *,
        config: dict[str, Any],
        secrets: dict[str, Any],
        state: ServiceState,
        limits: ev.EventLimits = ev.DEFAULT_LIMITS,
        hooks_for: Callable[[RunSpec], RunHooks | None] | None = None,
        admit: Callable[[RunSpec], bool] | None = None,
        started: Callable[[RunSpec, float], None] | None = None,
    ) -> Iterator[RunResult]:
        """Run ``specs`` in order; yields each run's result as it ends.

        ``admit(spec)`` is asked before a run is handed over (False: it ends ``cancelled``
        without running); ``started(spec, when)`` hears when a run becomes the current one;
        ``hooks_for(spec)`` gives a run's ops hooks (its steps and lines are then streamed).
        """
        redactor = self._redactor(secrets)
        queue = deque(specs)
        flight: deque[_InFlight] = deque()
        lost = 0  # hand-overs in a row that found the child gone
        try:
            while queue or flight:
                if not flight and not self.alive:
                    try:
                        self.start()
                    except WorkerStartError as exc:
                        yield from (_failed(s, str(exc), redactor, limits) for s in queue)
                        return
                while queue and len(flight) < WINDOW_RUNS:
                    spec = queue[0]
                    if admit is not None and not admit(spec):
                        queue.popleft()
                        yield _cancelled(spec, redactor, limits)
                        continue
                    try:
                        sent = self._hand_over(spec, config, secrets, hooks_for, limits, flight)
                    except _Gone:
                        lost += 1
                        if not flight and lost >= 3:  # a fresh child each time: give up
                            queue.popleft()
                            lost = 0
                            yield _failed(spec, "isolated worker process gone", redactor, limits)
                        break  # with runs in flight, reading finds out what happened
                    if sent is None:
                        break  # the window is full
                    lost = 0
                    self._unsent += 1
                    queue.popleft()
                    flight.append(sent)
                    if len(flight) == 1:
                        self._begin(sent, started)
                # one write, and one wake-up of the child, per many runs in a steady stream
                low = self._unsent and len(flight) - self._unsent < LOW_WATER
                if low and not self._flush(bool(flight)):
                    lost += 1
                if not flight:
                    continue
                current = flight.popleft()
                self._flight_bytes -= current.size
                outcome = self._read_outcome(current, state, redactor)
                interrupted = self._end(current.spec.run_id)
                if outcome is None:  # the child died: the runs behind it never started
                    result = self._died(current, interrupted, redactor, limits)
                    queue.extendleft(reversed([f.spec for f in flight]))
                    with self._lock:
                        self._sent.clear()
                    flight.clear()
                    self._flight_bytes = self._unsent = 0
                else:
                    result = _result(current, outcome, redactor, limits)
                yield result
                if flight:
                    self._begin(flight[0], started)
        finally:
            if flight:  # abandoned mid-batch: its runs must not answer the next batch
                self._kill(self._proc, None)
                self._reap()
            self._flight_bytes = self._unsent = 0
            with self._lock:
                self._sent.clear()
                self._current = None

    def interrupt(self, run_id: str, grace_s: float) -> None:
        """Stop ``run_id`` if it is the current run: SIGINT now, SIGKILL after ``grace_s``
        if it has not ended by then (its worker is then replaced)."""
        with self._lock:
            proc = self._proc
            if self._current != run_id or proc is None or proc.poll() is not None:
                return  # not running now: a signal would hit another run
            self._interrupted.add(run_id)
            self._tell(run_id)
            try:
                os.kill(proc.pid, signal.SIGINT)
            except ProcessLookupError:
                return
            if self._kill_timer is None:
                self._kill_timer = threading.Timer(grace_s, self._kill, args=(proc, run_id))
                self._kill_timer.daemon = True
                self._kill_timer.start()

    def cancel_queued(self, run_id: str) -> bool:
        """Cancel a run handed to the child that has not become current: the child skips it
        (unless it is just starting it). False if the run is not waiting in the child."""
        with self._lock:
            if run_id not in self._sent or run_id == self._current:
                return False
            self._tell(run_id)
            return True

    # -- inside a batch -----------------------------------------------------------------------

    def _hand_over(
        self,
        spec: RunSpec,
        config: dict[str, Any],
        secrets: dict[str, Any],
        hooks_for: Callable[[RunSpec], RunHooks | None] | None,
        limits: ev.EventLimits,
        flight: deque[_InFlight],
    ) -> _InFlight | None:
        """Write ``spec``'s run frame if the window has room; the run in flight, or None."""
        hooks = hooks_for(spec) if hooks_for is not None else None
        message: dict[str, Any] = {"op": protocol.RUN, "spec": _wire_spec(spec)}
        message["live"] = hooks is not None
        new_config, new_secrets = config != self._config, secrets != self._secrets
        if new_config:
            message["config"] = config
        if new_secrets:
            message["secrets"] = secrets
        frame = protocol.encode(message)
        if flight and self._flight_bytes + len(frame) > WINDOW_BYTES:
            return None
        writer = self._writer
        assert writer is not None
        try:
            writer.write(frame)  # flushed once the window is filled: one wake-up of the child
        except (OSError, ValueError) as exc:
            if not flight:
                self._reap()
            raise _Gone from exc
        self._flight_bytes += len(frame)
        if new_config:
            self._config = config
        if new_secrets:
            self._secrets = secrets
        with self._lock:
            self._sent.add(spec.run_id)
        return _InFlight(spec, len(frame), _LazySender(spec, limits), hooks)

    def _flush(self, in_flight: bool) -> bool:
        """Send what was written; False if the child is gone."""
        writer = self._writer
        self._unsent = 0
        try:
            if writer is not None:
                writer.flush()
            return True
        except (OSError, ValueError):
            if not in_flight:
                self._reap()
            return False

    def _begin(self, run: _InFlight, started: Callable[[RunSpec, float], None] | None) -> None:
        run.started = time.time()
        with self._lock:
            self._current = run.spec.run_id
        if started is not None:
            started(run.spec, run.started)

    def _end(self, run_id: str) -> bool:
        """``run_id`` is no longer running; whether it had been interrupted."""
        with self._lock:
            self._sent.discard(run_id)
            interrupted = run_id in self._interrupted
            self._interrupted.discard(run_id)
            timer, self._kill_timer = self._kill_timer, None
        if timer is not None:
            timer.cancel()
        return interrupted

    def _read_outcome(
        self, run: _InFlight, state: ServiceState, redactor: Redactor
    ) -> dict[str, Any] | None:
        """Read the child's frames up to ``run``'s end: its DONE frame, or None if it died."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            return None
        try:
            while True:
                frame = protocol.read_frame(reader)
                if frame is None:
                    return None
                op = frame.get("op")
                if op == protocol.DONE:
                    if frame.get("run_id") != run.spec.run_id:
                        raise protocol.ProtocolError("an outcome for another run")
                    return frame
                if op == protocol.LOG:
                    _add_lines(frame.get("lines") or [], run.logs, redactor, run.hooks)
                elif op == protocol.STEP:
                    _step_frame(frame, run.steps, redactor, run.hooks)
                elif op == protocol.CALL:
                    protocol.write_frame(writer, _answer(frame, state, run.sender))
                    self._unsent = 0  # the flush sent the runs waiting in the buffer too
        except (OSError, ValueError, protocol.ProtocolError):
            self._kill(self._proc, None)
            return None  # it died mid-frame, or lost its way: it is replaced

    def _died(
        self, run: _InFlight, interrupted: bool, redactor: Redactor, limits: ev.EventLimits
    ) -> RunResult:
        """The result of a run whose process ended under it (its emitted events are dropped,
        as they are when an in-process executor dies)."""
        code = self._reap()
        if interrupted:
            status, error = RunStatus.CANCELLED, "cancelled while running (worker process stopped)"
        else:
            status = RunStatus.FAILED
            error = f"isolated worker process died during the run ({describe_exit(code)})"
        result = RunResult(run.spec.run_id, status, run.started, time.time(), run.steps, error)
        result.logs = run.logs
        return seal_result(result, redactor, None, [], limits)

    def _redactor(self, secrets: dict[str, Any]) -> Redactor:
        """The redactor of ``secrets``, made again only when they change."""
        known, redactor = self._redactors
        if secrets != known:
            redactor = Redactor(secrets)
            self._redactors = (secrets, redactor)
        return redactor

    def _tell(self, run_id: str) -> None:
        """Put ``run_id`` on the control pipe: the child stops or skips that run (the caller
        holds the lock)."""
        if self._control is None:
            return
        try:
            os.write(self._control, run_id.encode() + b"\n")
        except OSError:
            pass  # full or closed: the kill after the grace period still stops the run

    def _kill(self, proc: subprocess.Popen[bytes] | None, run_id: str | None) -> None:
        """Kill ``proc`` (only while ``run_id`` is still the current run, if one is given)."""
        with self._lock:
            if proc is None or (run_id is not None and self._current != run_id):
                return
            if proc.poll() is None:
                proc.kill()

    def _reap(self) -> int | None:
        """Close the pipes of the current process, wait for its end; its exit code."""
        with self._lock:
            proc, reader, writer = self._proc, self._reader, self._writer
            control, self._control = self._control, None
            self._proc = self._reader = self._writer = None
        for stream in (reader, writer):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if control is not None:
            os.close(control)
        if proc is None:
            return None
        try:
            return proc.wait(timeout=EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()


def describe_exit(code: int | None) -> str:
    """``exit code 3`` or ``killed by SIGSEGV``."""
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _wire_spec(spec: RunSpec) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "service": spec.service,
        "service_name": spec.service_name,
        "version_id": spec.version_id,
        "steps": spec.steps,
        "event": spec.event,
        "correlation_id": spec.correlation_id,
        "attempt": spec.attempt,
    }


def _result(
    run: _InFlight, outcome: dict[str, Any], redactor: Redactor, limits: ev.EventLimits
) -> RunResult:
    """A run's result from its DONE frame (lines and errors scrubbed, result checked)."""
    _add_lines(outcome.get("lines") or [], run.logs, redactor, run.hooks)
    if outcome.get("dropped"):
        note = [time.time(), "WARNING", "", f"{outcome['dropped']} log lines dropped"]
        _add_lines([note], run.logs, redactor, run.hooks)
    result = RunResult(
        run.spec.run_id,
        RunStatus(outcome["status"]),
        float(outcome["started_at"]),
        float(outcome["finished_at"]),
        steps=[_step_result(s) for s in outcome.get("steps") or []],
        error=outcome.get("error"),
        logs=run.logs,
    )
    if outcome.get("result_error"):
        if result.status is RunStatus.SUCCEEDED:
            result.status = RunStatus.FAILED
        note = f"context.result cannot be stored: {outcome['result_error']}"
        result.error = f"{result.error}; {note}" if result.error else note
    return seal_result(result, redactor, outcome.get("result"), run.sender.emitted(), limits)


def _failed(spec: RunSpec, error: str, redactor: Redactor, limits: ev.EventLimits) -> RunResult:
    now = time.time()
    result = RunResult(spec.run_id, RunStatus.FAILED, now, now, error=error)
    return seal_result(result, redactor, None, [], limits)


def _cancelled(spec: RunSpec, redactor: Redactor, limits: ev.EventLimits) -> RunResult:
    now = time.time()
    result = RunResult(spec.run_id, RunStatus.CANCELLED, now, now, error="cancelled")
    return seal_result(result, redactor, None, [], limits)


def _add_lines(
    lines: list[list[Any]], logs: list[LogLine], redactor: Redactor, hooks: RunHooks | None
) -> None:
    for when, level, step, message in lines:
        line: LogLine = (float(when), str(level), str(step), redactor(str(message)))
        logs.append(line)
        if hooks is not None:
            try:
                hooks.log(line)
            except Exception:  # the ops pipeline must not fail the run
                pass


def _step_result(data: dict[str, Any]) -> StepResult:
    return StepResult(
        str(data["name"]),
        RunStatus(data["status"]),
        float(data["started_at"]),
        float(data["finished_at"]),
        data.get("error"),
    )


def _step_frame(
    frame: dict[str, Any], steps: list[StepResult], redactor: Redactor, hooks: RunHooks | None
) -> None:
    """A live run's step boundary: for the ops hooks, and for the record if the process dies."""
    index, name = int(frame["index"]), str(frame["name"])
    result = _step_result(frame["result"]) if frame.get("result") else None
    if result is not None:
        steps.append(result)
    if hooks is None:
        return
    if result is not None and result.error:
        result = replace(result, error=redactor(result.error))
    try:
        hooks.step(index, name, result)
    except Exception:
        pass


class _LazySender:
    """The run's :class:`EventSender`, made on its first event (most runs send none)."""

    def __init__(self, spec: RunSpec, limits: ev.EventLimits) -> None:
        self._spec = spec
        self._limits = limits
        self._sender: EventSender | None = None

    def send(self, *args: Any, **kwargs: Any) -> str:
        if self._sender is None:
            spec = self._spec
            source = f"fxray/services/{spec.service}"
            self._sender = EventSender(spec.event, spec.run_id, source, spec.shadow, self._limits)
        return self._sender.send(*args, **kwargs)

    def emitted(self) -> list[dict[str, Any]]:
        return self._sender.emitted if self._sender is not None else []


def _answer(frame: dict[str, Any], state: ServiceState, sender: Any) -> dict[str, Any]:
    """The reply to one context call of the script."""
    try:
        value = _call(str(frame.get("name")), frame.get("args") or {}, state, sender)
    except Exception as exc:
        return {"op": protocol.REPLY, "ok": False, "type": type(exc).__name__, "error": str(exc)}
    return {"op": protocol.REPLY, "ok": True, "value": value}


def _call(name: str, args: dict[str, Any], state: ServiceState, sender: Any) -> Any:
    if name == "events.send":
        attributes = args.get("attributes") or {}
        return sender.send(args["type"], args.get("data"), source=args.get("source"), **attributes)
    if name == "state.get":
        found, value, _ = state.entry(args["key"])
        return [found, value]
    if name == "state.all":
        return StateView(state).get()
    if name == "state.put":
        state.put(args["key"], args.get("value"))
        return None
    if name == "state.delete":
        state.delete(args["key"])
        return None
    if name == "state.keys":
        return state.keys()
    if name == "state.entry":
        return list(state.entry(args["key"]))
    if name == "state.cas":
        return state.put_if(args["key"], args.get("value"), int(args["index"]))
    raise ValueError(f"unknown context call {name!r}")
