"""Run a service's scripts in order, in this process: the code executors and ``run-local`` share.

Per run it captures stdout, stderr and logging (only the running thread's), times each step,
turns exceptions and ``sys.exit`` into a step status, and scrubs secret values from logs,
errors and results. Timeouts and process crashes are the executor's business: a hung script
cannot be stopped from inside its own thread, so the executor abandons the process.
"""

from __future__ import annotations

import builtins
import io
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from types import CodeType
from typing import Any, Protocol

from fxray.events import cloudevent as ev
from fxray.runtime.context import EventSender, RunContext, RunInfo, StateView, _activate
from fxray.runtime.runs import (
    LogLine,
    RunResult,
    RunSpec,
    RunStatus,
    StepResult,
    storable_text,
)

_capture = threading.local()
_install_lock = threading.Lock()
_installed = False
MIN_SECRET_LENGTH = 4
MAX_LOG_LINES = 10_000


class RunHooks(Protocol):
    """Receives a run's scrubbed log lines and step boundaries as they happen (the ops
    pipeline's hook, :class:`fxray.ops.publisher.RunOps`)."""

    def log(self, line: LogLine) -> None: ...

    def step(self, index: int, name: str, result: StepResult | None) -> None: ...


class _Capture:
    """The log lines of the run executing in this thread."""

    def __init__(self, redactor: Redactor, hooks: RunHooks | None = None) -> None:
        self.lines: list[LogLine] = []
        self.step = ""
        self.redactor = redactor
        self.hooks = hooks
        self._partial = {"STDOUT": "", "STDERR": ""}
        self.dropped = 0

    def add(self, level: str, message: str) -> None:
        if len(self.lines) >= MAX_LOG_LINES:
            self.dropped += 1
            return
        self.emit((time.time(), level, self.step, self.redactor(message)))

    def emit(self, line: LogLine) -> None:
        """Keep a scrubbed line, and hand it to the hooks (which must not fail the run)."""
        self.lines.append(line)
        if self.hooks is not None:
            try:
                self.hooks.log(line)
            except Exception:
                pass

    def write(self, stream: str, text: str) -> None:
        pending = self._partial[stream] + text
        *complete, rest = pending.split("\n")
        for line in complete:
            self.add(stream, line)
        self._partial[stream] = rest

    def flush_partial(self) -> None:
        for stream, rest in self._partial.items():
            if rest:
                self.add(stream, rest)
            self._partial[stream] = ""


class _ThreadStream(io.TextIOBase):
    """Stands in for sys.stdout/stderr: a capturing thread's writes go to its run."""

    def __init__(self, name: str, original: Any) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        cap: _Capture | None = getattr(_capture, "cap", None)
        if cap is None:
            return self._original.write(text)
        cap.write(self._name, text)
        return len(text)

    def flush(self) -> None:
        if getattr(_capture, "cap", None) is None:
            self._original.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._original, "encoding", "utf-8")


class _CaptureHandler(logging.Handler):
    """Routes log records made in a capturing thread to its run."""

    def emit(self, record: logging.LogRecord) -> None:
        cap: _Capture | None = getattr(_capture, "cap", None)
        if cap is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:  # a bad format string must not fail the run
            message = str(record.msg)
        cap.add(record.levelname, message)


def install_capture() -> None:
    """Route stdout, stderr and logging of capturing threads to their runs (idempotent)."""
    global _installed
    with _install_lock:
        # re-wrap if something (a test runner, a notebook, a script) replaced the streams
        if not isinstance(sys.stdout, _ThreadStream):
            sys.stdout = _ThreadStream("STDOUT", sys.stdout)
        if not isinstance(sys.stderr, _ThreadStream):
            sys.stderr = _ThreadStream("STDERR", sys.stderr)
        if _installed:
            return
        root = logging.getLogger()
        root.addHandler(_CaptureHandler(level=logging.DEBUG))
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        _installed = True


class Redactor:
    """Replaces every secret value (strings of 4+ characters) by ``***``."""

    def __init__(self, secrets: Any) -> None:
        values = {v for v in _leaf_strings(secrets) if len(v) >= MIN_SECRET_LENGTH}
        self._values = sorted(values, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, "***")
        return text

    def deep(self, value: Any) -> Any:
        if not self._values:
            return value
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {self.deep(k): self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


def _leaf_strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaf_strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _leaf_strings(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield str(value)


class CodeCache:
    """Compiled scripts, by path; versions are immutable so a path's code never changes."""

    def __init__(self) -> None:
        self._code: dict[str, CodeType] = {}

    def get(self, path: str | Path) -> CodeType:
        key = str(path)
        code = self._code.get(key)
        if code is None:
            code = compile(Path(key).read_bytes(), key, "exec")
            self._code[key] = code
        return code


class RunCancelled(BaseException):
    """Raised inside a script's thread to stop a cancelled run."""


def execute(
    spec: RunSpec,
    package_dir: Path,
    *,
    config: dict[str, Any],
    secrets: dict[str, Any],
    state: Any,
    code_cache: CodeCache | None = None,
    hooks: RunHooks | None = None,
    limits: ev.EventLimits = ev.DEFAULT_LIMITS,
) -> RunResult:
    """Run ``spec``'s steps from ``package_dir`` in this thread and report what happened.

    ``hooks`` receive the scrubbed log lines and step boundaries while the run goes on.
    """
    install_capture()
    codes = code_cache or CodeCache()
    redactor = Redactor(secrets)
    cap = _Capture(redactor, hooks)
    service_logger = logging.getLogger(f"fxray.service.{spec.service}")
    source = f"fxray/services/{spec.service}"
    sender = EventSender(spec.event, spec.run_id, source, spec.shadow, limits)
    ctx = RunContext(
        event=spec.event,
        run=RunInfo(
            spec.run_id,
            spec.service,
            spec.version_id,
            "",
            spec.correlation_id,
            spec.attempt,
            spec.service_name,
        ),
        config=config,
        secrets=secrets,
        state=StateView(state),
        events=sender,
        log=service_logger,
    )
    result = RunResult(spec.run_id, RunStatus.RUNNING, time.time(), 0.0)
    old_cwd = os.getcwd()
    pkg = str(package_dir)
    _capture.cap = cap
    _activate(ctx)
    sys.path.insert(0, pkg)
    try:
        os.chdir(pkg)
        status = RunStatus.SUCCEEDED
        for index, step in enumerate(spec.steps):
            cap.step = step
            ctx.run = replace(ctx.run, step=step)
            _step_hook(hooks, index, step, None)
            step_result = _run_step(step, os.path.join(pkg, step), codes, cap)
            result.steps.append(step_result)
            if hooks is not None:
                error = redactor(step_result.error) if step_result.error else None
                _step_hook(hooks, index, step, replace(step_result, error=error))
            if step_result.status is not RunStatus.SUCCEEDED:
                status = step_result.status
                result.error = f"step {step!r} {step_result.status.value}: {step_result.error}"
                break
        result.status = status
    finally:
        cap.flush_partial()
        if cap.dropped:
            cap.emit((time.time(), "WARNING", "", f"{cap.dropped} log lines dropped"))
        _capture.cap = None
        _activate(None)
        try:
            sys.path.remove(pkg)
        except ValueError:
            pass
        os.chdir(old_cwd)
    result.finished_at = time.time()
    result.logs = cap.lines
    return seal_result(result, redactor, ctx.result, sender.emitted, limits)


def seal_result(
    result: RunResult,
    redactor: Redactor,
    value: Any,
    emitted: list[dict[str, Any]],
    limits: ev.EventLimits,
) -> RunResult:
    """A run's last touches, in-process or isolated: its emitted events and errors scrubbed
    of secrets, and ``context.result`` (``value``) kept only if it can be stored."""
    result.emitted = [redactor.deep(event) for event in emitted]
    result.result = _storable_result(redactor, value, limits, result)
    if result.error:
        result.error = storable_text(redactor(result.error))
    for step_result in result.steps:
        if step_result.error:
            step_result.error = storable_text(redactor(step_result.error))
    return result


def _storable_result(
    redactor: Redactor, value: Any, limits: ev.EventLimits, result: RunResult
) -> Any:
    """``context.result`` as it will be stored: JSON data within the event limits. Anything
    else fails this run alone, saying why (it would break the batch that records it)."""
    if value is None:
        return None
    try:
        if ev.json_depth(value, limits.max_depth) > limits.max_depth:
            raise ValueError(f"it nests deeper than the limit of {limits.max_depth} levels")
        value = redactor.deep(value)
        size = len(json.dumps(value, allow_nan=False))
        if size > limits.max_bytes:
            raise ValueError(f"it is {size} bytes as JSON, over the limit of {limits.max_bytes}")
    except (TypeError, ValueError, RecursionError) as exc:
        if result.status is RunStatus.SUCCEEDED:
            result.status = RunStatus.FAILED
        note = f"context.result cannot be stored: {exc}"
        result.error = f"{result.error}; {note}" if result.error else note
        return None
    return value


def _step_hook(hooks: RunHooks | None, index: int, name: str, result: StepResult | None) -> None:
    if hooks is not None:
        try:
            hooks.step(index, name, result)
        except Exception:  # the ops pipeline must not fail the run
            pass


def _run_step(step: str, path: str, codes: CodeCache, cap: _Capture) -> StepResult:
    started = time.time()
    status = RunStatus.SUCCEEDED
    error: str | None = None
    try:
        code = codes.get(path)
        exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": builtins})
    except SystemExit as exc:
        if exc.code not in (None, 0):
            status, error = RunStatus.FAILED, f"script called sys.exit({exc.code!r})"
    except RunCancelled:
        status, error = RunStatus.CANCELLED, "cancelled while running"
    except BaseException as exc:
        status, error = RunStatus.FAILED, f"{type(exc).__name__}: {exc}"
        cap.add("ERROR", _script_traceback(exc, path))
    finally:
        _flush_std()
    return StepResult(step, status, started, time.time(), error)


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _script_traceback(exc: BaseException, path: str) -> str:
    """The traceback from the script's own frame down (the platform's frames are noise)."""
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
