"""The isolated worker process: runs one version's scripts, one run at a time, for one executor.

Started by :class:`fxray.runtime.isolated.process.IsolatedWorker` as
``python -I -S worker.py --env ENV --shim SHIM --package PKG --fds R,W,C --parent PID``
(``R``/``W``: the frames from and to the executor; ``C``: the control pipe, run ids to stop). ``-I``
and ``-S`` leave out site-packages, the user's site and every ``PYTHON*`` variable, so the
import path is exactly: the package folder, the shim (``fxray.context``), the version's
environment folder and the standard library. This file imports the standard library only (and
``protocol.py``, loaded by its path), all of it before the version's folder goes on the path.

A run has the in-process runner's semantics: the scripts in order with fresh globals, stdout,
stderr and logging captured as log lines, exceptions and ``sys.exit`` turned into step statuses,
the script's own traceback logged. Runs arrive ahead of time and wait in the pipe; a run whose
id is on the control pipe is skipped when its turn comes, or, if it is running, interrupted at
the SIGINT that follows its id (the executor kills the process if the script does not stop).
"""

from __future__ import annotations

import argparse
import builtins
import gc
import importlib
import importlib.util
import io
import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections import deque
from types import CodeType, ModuleType
from typing import Any

MAX_LOG_LINES = 10_000
LIVE_FLUSH_S = 0.2  # a live run's log lines reach the executor at least this often
LIVE_FLUSH_LINES = 500


class RunCancelled(BaseException):
    """Raised in the script on SIGINT: the run was cancelled or timed out."""


class Worker:
    """Serves ``run`` frames from the executor until it closes the pipe or says ``exit``."""

    def __init__(
        self,
        reader: Any,
        writer: Any,
        package_dir: str,
        protocol: ModuleType,
        context_module: ModuleType,
        control: int | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.control = control  # non-blocking read end: ids of runs to stop or skip
        self.stop: set[str] = set()
        self.queued: deque[dict[str, Any]] = deque()  # runs that arrived during a call
        self.run_id = ""
        self.package_dir = package_dir
        self.protocol = protocol
        self.ctx = context_module
        self.codes: dict[str, tuple[str, CodeType]] = {}  # step -> (path, compiled code)
        self.loggers: dict[str, logging.Logger] = {}
        self.state = context_module.StateView(self.call)
        self.events = context_module.EventSender(self.call)
        self.config: dict[str, Any] = {}
        self.secrets: dict[str, Any] = {}
        self.errors: dict[str, type[BaseException]] = {
            "InvalidEvent": context_module.InvalidEvent,
            "EventTooLarge": context_module.EventTooLarge,
            "TypeError": TypeError,
            "ValueError": ValueError,
            "KeyError": KeyError,
            "RuntimeError": RuntimeError,
        }
        self.run_thread = threading.get_ident()
        self.capturing = False
        self.live = False
        self.step = ""
        self.pending: list[list[Any]] = []
        self.partial = {"STDOUT": "", "STDERR": ""}
        self.count = 0
        self.dropped = 0
        self.last_flush = 0.0
        self.in_script = False
        self.masked = 0  # > 0 while a frame is being written or read: SIGINT must wait
        self.cancel_pending = False

    # -- frames -------------------------------------------------------------------------------

    def send(self, message: dict[str, Any] | bytes) -> None:
        """Write a frame (a message, or one already encoded)."""
        frame = message if isinstance(message, bytes) else self.protocol.encode(message)
        self.masked += 1
        try:
            if not isinstance(message, dict) or message["op"] != self.protocol.LOG:
                self._flush_lines()  # a live run's lines go before the step that follows them
            self.writer.write(frame)
            self.writer.flush()
        finally:
            self.masked -= 1
        self._cancel_if_pending()

    def call(self, name: str, args: dict[str, Any]) -> Any:
        """Ask the executor (events.send, state.*) and return its answer, or raise its error."""
        try:
            frame = self.protocol.encode({"op": self.protocol.CALL, "name": name, "args": args})
        except (TypeError, ValueError, RecursionError) as exc:
            if name == "events.send":
                raise self.ctx.InvalidEvent(f"the event is not JSON data: {exc}") from None
            raise TypeError(f"{name}: the value is not JSON-serialisable: {exc}") from None
        self.masked += 1
        try:
            self._flush_lines()
            self.writer.write(frame)
            self.writer.flush()
            while True:  # runs handed over ahead of time may come before the reply
                reply = self.protocol.read_frame(self.reader)
                if reply is None or reply.get("op") != self.protocol.RUN:
                    break
                self.queued.append(reply)
        finally:
            self.masked -= 1
        if reply is None:
            os._exit(0)  # the executor is gone: nobody is left to report to
        self._cancel_if_pending()
        if reply.get("ok"):
            return reply.get("value")
        error = self.errors.get(str(reply.get("type")), RuntimeError)
        raise error(str(reply.get("error")))

    def _cancel_if_pending(self) -> None:
        if self.cancel_pending and self.in_script and not self.masked:
            self.cancel_pending = False
            raise RunCancelled

    def read_control(self) -> None:
        """Take the run ids waiting on the control pipe."""
        if self.control is None:
            return
        data = b""
        while True:
            try:
                chunk = os.read(self.control, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        if data:
            if len(self.stop) > 10_000:
                self.stop.clear()  # ids of runs that had ended before their stop came
            self.stop.update(data.decode(errors="replace").split())

    def on_sigint(self, _signum: int, _frame: Any) -> None:
        self.read_control()
        if not self.in_script or self.run_id not in self.stop:
            return  # meant for a run that has ended: this one goes on
        if self.masked:
            self.cancel_pending = True  # raised once the frame is through
            return
        raise RunCancelled

    # -- log lines ----------------------------------------------------------------------------

    def add(self, level: str, message: str) -> None:
        if self.count >= MAX_LOG_LINES:
            self.dropped += 1
            return
        self.count += 1
        self.pending.append([time.time(), level, self.step, message])
        if (
            self.live
            and not self.masked
            and (
                len(self.pending) >= LIVE_FLUSH_LINES
                or time.monotonic() - self.last_flush >= LIVE_FLUSH_S
            )
        ):
            self.send({"op": self.protocol.LOG, "lines": self._take_lines()})

    def write(self, stream: str, text: str) -> None:
        pending = self.partial[stream] + text
        *complete, rest = pending.split("\n")
        self.partial[stream] = rest
        for line in complete:
            self.add(stream, line)

    def flush_partial(self) -> None:
        for stream, rest in self.partial.items():
            self.partial[stream] = ""
            if rest:
                self.add(stream, rest)

    def _take_lines(self) -> list[list[Any]]:
        lines, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        return lines

    def _flush_lines(self) -> None:
        """Send a live run's pending lines (the caller holds the mask)."""
        if self.live and self.pending:
            self.protocol.write_frame(
                self.writer, {"op": self.protocol.LOG, "lines": self._take_lines()}
            )

    # -- runs ---------------------------------------------------------------------------------

    def serve(self) -> None:
        self.send({"op": self.protocol.READY, "pid": os.getpid(), "path": list(sys.path)})
        while True:
            if self.queued:
                message = self.queued.popleft()
            else:
                message = self.protocol.read_frame(self.reader)
            if message is None or message.get("op") == self.protocol.EXIT:
                return
            if message.get("op") == self.protocol.RUN:
                self.run(message)

    def run(self, message: dict[str, Any]) -> None:
        ctx = self.ctx
        spec = message["spec"]
        if "config" in message:
            self.config = message["config"]
        if "secrets" in message:
            self.secrets = message["secrets"]
        self.live = bool(message.get("live"))
        self.pending, self.count, self.dropped = [], 0, 0
        self.last_flush = time.monotonic()
        started = time.time()
        self.run_id = spec["run_id"]
        self.read_control()
        if self.run_id in self.stop:  # cancelled while it waited in the pipe
            self.stop.discard(self.run_id)
            self.send(self._skipped(spec, started))
            return
        service = spec["service"]
        ids = (spec["run_id"], service, spec["version_id"])
        correlation, attempt = spec["correlation_id"], spec.get("attempt", 1)
        log = self.loggers.get(service)
        if log is None:
            log = self.loggers[service] = logging.getLogger(f"fxray.service.{service}")
        run = ctx.RunContext(
            event=spec["event"],
            run=ctx.RunInfo(*ids, "", correlation, attempt, spec.get("service_name", "")),
            config=dict(self.config),
            secrets=dict(self.secrets),
            state=self.state,
            events=self.events,
            log=log,
        )
        status, error = "succeeded", None
        steps: list[dict[str, Any]] = []
        ctx._activate(run)
        self.capturing = True
        try:
            for index, step in enumerate(spec["steps"]):
                self.step = step
                run.run = ctx.RunInfo(
                    *ids, step, correlation, attempt, spec.get("service_name", "")
                )
                if self.live:
                    self.send({"op": self.protocol.STEP, "index": index, "name": step})
                outcome = self.run_step(step)
                steps.append(outcome)
                if self.live:
                    self.send(
                        {"op": self.protocol.STEP, "index": index, "name": step, "result": outcome}
                    )
                if outcome["status"] != "succeeded":
                    status = outcome["status"]
                    error = f"step {step!r} {status}: {outcome['error']}"
                    break
        finally:
            self.flush_partial()
            self.capturing = False
            self.step = ""
            self.stop.discard(self.run_id)
            ctx._activate(None)
        done = {
            "op": self.protocol.DONE,
            "run_id": spec["run_id"],
            "status": status,
            "error": error,
            "started_at": started,
            "finished_at": time.time(),
            "steps": steps,
            "lines": self._take_lines(),
            "dropped": self.dropped,
            "result": run.result,
            "result_error": None,
        }
        try:  # context.result must be JSON data, without NaN (the in-process rule)
            frame = self.protocol.encode(done, allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            done["result"], done["result_error"] = None, str(exc) or type(exc).__name__
            frame = self.protocol.encode(done)
        self.send(frame)

    def _skipped(self, spec: dict[str, Any], now: float) -> dict[str, Any]:
        return {
            "op": self.protocol.DONE,
            "run_id": spec["run_id"],
            "status": "cancelled",
            "error": "cancelled",
            "started_at": now,
            "finished_at": now,
            "steps": [],
            "lines": [],
            "dropped": 0,
            "result": None,
            "result_error": None,
        }

    def run_step(self, step: str) -> dict[str, Any]:
        started = time.time()
        status, error = "succeeded", None
        cached = self.codes.get(step)
        path = cached[0] if cached else os.path.join(self.package_dir, step)
        try:
            if cached is None:
                with open(path, "rb") as source:
                    cached = self.codes[step] = (path, compile(source.read(), path, "exec"))
            code = cached[1]
            if self.run_id in self.stop:
                raise RunCancelled  # it came between two steps
            self.in_script = True
            try:
                exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": builtins})
            finally:
                self.in_script = False
                self.cancel_pending = False
        except SystemExit as exc:
            if exc.code not in (None, 0):
                status, error = "failed", f"script called sys.exit({exc.code!r})"
        except RunCancelled:
            status, error = "cancelled", "cancelled while running"
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            self.add("ERROR", _script_traceback(exc, path))
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except Exception:
                    pass
        return {
            "name": step,
            "status": status,
            "started_at": started,
            "finished_at": time.time(),
            "error": error,
        }


class _Stream(io.TextIOBase):
    """Stands in for sys.stdout/stderr: the run thread's writes during a run become log lines."""

    def __init__(self, name: str, original: Any, worker: Worker) -> None:
        self._name = name
        self._original = original
        self._worker = worker

    def _captures(self) -> bool:
        return self._worker.capturing and threading.get_ident() == self._worker.run_thread

    def write(self, text: str) -> int:
        if not self._captures():
            return self._original.write(text)
        self._worker.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        if not self._captures():
            self._original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")


class _Handler(logging.Handler):
    """Log records of the run thread during a run become log lines."""

    def __init__(self, worker: Worker) -> None:
        super().__init__(level=logging.DEBUG)
        self._worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        worker = self._worker
        if not worker.capturing or threading.get_ident() != worker.run_thread:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:  # a bad format string must not fail the run
            message = str(record.msg)
        worker.add(record.levelname, message)


def _script_traceback(exc: BaseException, path: str) -> str:
    """The traceback from the script's own frame down (the worker's frames are noise)."""
    frames = traceback.extract_tb(exc.__traceback__)
    for index, frame in enumerate(frames):
        if frame.filename == path:
            frames = frames[index:]
            break
    else:
        frames = traceback.StackSummary()  # it never ran (a syntax error): the error alone
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(frames)]
    lines.extend(traceback.format_exception_only(type(exc), exc))
    return "".join(lines).rstrip()


def _load_protocol() -> ModuleType:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol.py")
    spec = importlib.util.spec_from_file_location("_fxray_isolated_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _die_with_parent(parent: int) -> None:
    """Be killed when the executor's process dies, even while a script hangs (Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere: the worker ends when it reads the end of its pipe
    if parent and os.getppid() != parent:
        os._exit(1)  # the executor died before the line above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fxray-isolated-worker")
    parser.add_argument("--env", default="")
    parser.add_argument("--shim", required=True)
    parser.add_argument("--package", required=True)
    parser.add_argument("--fds", required=True, help="READ,WRITE,CONTROL: the pipes")
    parser.add_argument("--parent", type=int, default=0)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent)
    read_fd, write_fd, control_fd = (int(fd) for fd in args.fds.split(","))
    protocol = _load_protocol()
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "wb")
    # everything the worker needs is imported: now the version's own folder goes on the path
    sys.path[:0] = [p for p in (args.package, args.shim, args.env) if p]
    context_module = importlib.import_module("fxray.context")
    os.chdir(args.package)
    worker = Worker(reader, writer, args.package, protocol, context_module, control_fd)
    sys.stdout = _Stream("STDOUT", sys.stdout, worker)
    sys.stderr = _Stream("STDERR", sys.stderr, worker)
    root = logging.getLogger()
    root.addHandler(_Handler(worker))
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    signal.signal(signal.SIGINT, worker.on_sigint)
    # a signal mask survives exec: the executor's thread may have SIGINT blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    gc.freeze()
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
