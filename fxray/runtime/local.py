"""Run a service's scripts in this process, without Ray or a cluster (``fxray run-local``).

For script authors: the scripts see the same ``context`` as on the platform (params, config,
secrets, state, events, log), log lines are captured and secret values redacted the same way,
and the manifest's ``timeout_s`` is honoured. State persists between local runs in a JSON file
(:class:`JsonFileKV`); emitted events are reported, not published.

The service's ``requirements.txt`` is installed once into a cached folder (as the platform's
executors do) and put first on ``sys.path`` for the run; pass ``install=False`` to use what is
installed in the current environment instead.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fxray.events import cloudevent as ev
from fxray.kv import ServiceState
from fxray.kv.local import InMemoryKV
from fxray.runtime import runner
from fxray.runtime.runs import RunResult, RunSpec, RunStatus
from fxray.services import ServicePackage, load_package, validate_params

DEFAULT_STATE_FILE = ".fxray-local-state.json"
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_GRACE_S = 2.0
STATE_FORMAT = "fxray-local-state/1"
_BYTES_TAG = "$base64"

__all__ = [
    "DEFAULT_STATE_FILE",
    "JsonFileKV",
    "LocalRunError",
    "default_envs_dir",
    "make_event",
    "run_local",
]


class LocalRunError(RuntimeError):
    """A local run cannot start (bad state file, requirements that do not install...)."""


class JsonFileKV(InMemoryKV):
    """A :class:`~fxray.kv.KVStore` kept in memory and saved to a JSON file.

    The file is read when the store is made and written (atomically) by :meth:`save` or
    :meth:`close`. Values that are JSON are stored readably, other bytes as base64. One process
    at a time: concurrent local runs sharing a file may lose each other's writes.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._load()

    def __repr__(self) -> str:
        return f"JsonFileKV({str(self.path)!r})"

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LocalRunError(f"cannot read state file {self.path}: {exc}") from None
        entries = raw.get("entries", {}) if isinstance(raw, dict) else None
        if not isinstance(entries, dict):
            raise LocalRunError(
                f"state file {self.path} is not an fxray local state file "
                f"(expected an object with 'entries')"
            )
        try:
            for key, value in entries.items():
                self.put(key, _encode(value))
        except (TypeError, ValueError, binascii.Error) as exc:
            raise LocalRunError(f"state file {self.path} has a bad entry: {exc}") from None

    def save(self) -> None:
        """Write every entry to the file (via a temporary file, so a crash leaves it whole)."""
        body = {
            "format": STATE_FORMAT,
            "entries": {entry.key: _decode(entry.value) for entry in self.list("")},
        }
        text = json.dumps(body, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".fxray-state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def close(self) -> None:
        """Save the entries; the store stays usable."""
        self.save()


def _decode(value: bytes) -> Any:
    try:
        decoded = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {_BYTES_TAG: base64.b64encode(value).decode()}
    if isinstance(decoded, dict) and list(decoded) == [_BYTES_TAG]:
        return {_BYTES_TAG: base64.b64encode(value).decode()}
    return decoded


def _encode(value: Any) -> bytes:
    if isinstance(value, dict) and list(value) == [_BYTES_TAG]:
        return base64.b64decode(value[_BYTES_TAG], validate=True)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def default_envs_dir() -> Path:
    """Where local runs cache installed requirements: ``$FXRAY_LOCAL_ENVS`` or the user cache."""
    explicit = os.environ.get("FXRAY_LOCAL_ENVS")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "fxray" / "envs"


def make_event(value: Any, package: ServicePackage) -> dict[str, Any]:
    """The triggering CloudEvent of a local run.

    A mapping with ``specversion`` is taken as a CloudEvent (and validated); anything else is
    the data of a ``fxray.run.manual`` event for the service. As with a manual run on the
    platform, that data is checked against ``parameters.json`` (defaults filled in) when the
    package declares parameters. Raises ``InvalidEvent`` or ``ParameterError``.
    """
    if isinstance(value, Mapping) and "specversion" in value:
        return ev.from_dict(dict(value))
    data = value
    if package.parameters:
        data = validate_params(package.parameters, value)
    return ev.new_event(ev.MANUAL_RUN, data, source="fxray/local", **{ev.TARGET: package.name})


def run_local(
    package_dir: str | Path,
    event: Any,
    *,
    config: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    state_path: str | Path | None = None,
    timeout_s: float | None = None,
    install: bool = True,
    envs_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> RunResult:
    """Run the service in ``package_dir`` (a folder or .zip) once, in this process.

    ``event`` is a CloudEvent dict or plain data (see :func:`make_event`). ``config`` and
    ``secrets`` replace the package's ``config.json`` / ``secrets.json``. State is kept in
    ``state_path`` (default :data:`DEFAULT_STATE_FILE` in the current folder). The run stops
    with status ``timed_out`` after ``timeout_s`` (default: the manifest's, else 300 s).
    ``progress`` receives one-line notes (e.g. while requirements install).

    Raises ``PackageError`` for an invalid package, ``InvalidEvent``/``ParameterError`` for a
    bad event and :class:`LocalRunError` when the run cannot start.
    """
    package = load_package(package_dir)
    cloud_event = make_event(event, package)
    state_file = Path(state_path or DEFAULT_STATE_FILE).resolve()
    kv = JsonFileKV(state_file)
    env_path = _requirements_env(package, install, envs_dir, progress)
    timeout = float(timeout_s or package.manifest.timeout_s or DEFAULT_TIMEOUT_S)
    spec = RunSpec(
        run_id=str(uuid.uuid4()),
        service=package.name,
        version_id=f"local-{package.short_hash}",
        package_hash=package.content_hash,
        steps=package.steps,
        event=cloud_event,
        correlation_id=ev.correlation_id(cloud_event),
        trigger_id="local",
        priority=package.manifest.priority,
        timeout_s=timeout,
    )
    execute = _execute_isolated if _isolated(package, env_path, progress) else _execute
    try:
        with _package_folder(Path(package_dir), package) as folder:
            return execute(
                spec,
                folder,
                config=package.config if config is None else config,
                secrets=package.secrets if secrets is None else secrets,
                state=ServiceState(kv, package.name),
                env_path=env_path,
            )
    finally:
        kv.save()


def _isolated(
    package: ServicePackage, env_path: Path | None, progress: Callable[[str], None] | None
) -> bool:
    """Whether the run goes to an isolated worker process, as on the platform: the manifest
    asks for it, or (``auto``) the installed requirements clash with this process's packages."""
    from fxray.services.clashes import env_clashes

    requested = package.manifest.isolation
    clashes = env_clashes(env_path) if requested == "auto" and env_path is not None else []
    isolated = requested == "process" or bool(clashes)
    if isolated and progress is not None:
        why = "; ".join(c.describe() for c in clashes) or "the manifest asks for it"
        progress(f"running in an isolated worker process: {why}")
    return isolated


def _requirements_env(
    package: ServicePackage,
    install: bool,
    envs_dir: str | Path | None,
    progress: Callable[[str], None] | None,
) -> Path | None:
    if not package.requirements or not install:
        return None
    from fxray.actors import envs

    root = Path(envs_dir).expanduser() if envs_dir else default_envs_dir()
    wanted = ", ".join(package.requirements)
    if progress is not None and not (root / package.requirements_hash / envs.READY_MARKER).exists():
        progress(f"installing requirements ({wanted}) into {root} (first use only)")
    try:
        build = envs.ensure_env(package.requirements, package.requirements_hash, root)
    except (envs.EnvBuildError, OSError) as exc:
        raise LocalRunError(f"cannot install the requirements ({wanted}): {exc}") from None
    if progress is not None and not build.cached:
        progress(f"installed requirements in {build.seconds:.1f}s")
    return build.path


@contextmanager
def _package_folder(path: Path, package: ServicePackage) -> Iterator[Path]:
    """The package's folder: ``path`` itself, or a temporary copy of a zip's files."""
    if path.is_dir():
        yield path.resolve()
        return
    with tempfile.TemporaryDirectory(prefix="fxray-local-") as tmp:
        root = Path(tmp)
        for name, data in package.files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        yield root


def _execute(
    spec: RunSpec,
    folder: Path,
    *,
    config: dict[str, Any],
    secrets: dict[str, Any],
    state: ServiceState,
    env_path: Path | None,
) -> RunResult:
    """Run ``spec`` on a worker thread, so its timeout can be enforced from here."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = runner.execute(
                spec, folder, config=config, secrets=secrets, state=state
            )
        except runner.RunCancelled:
            pass  # the timeout hit before the first step began
        except BaseException as exc:  # a platform error, not the script's: re-raised below
            box["error"] = exc

    started = time.time()
    if env_path is not None:
        sys.path.insert(0, str(env_path))
    thread = threading.Thread(target=work, name="fxray-local-run", daemon=True)
    thread.start()
    thread.join(spec.timeout_s)
    timed_out = thread.is_alive()
    if timed_out:
        _raise_in_thread(thread, runner.RunCancelled)
        thread.join(TIMEOUT_GRACE_S)
    if env_path is not None and not thread.is_alive():
        try:
            sys.path.remove(str(env_path))
        except ValueError:
            pass
    if "error" in box:
        raise box["error"]
    result: RunResult | None = box.get("result")
    if not timed_out and result is not None:
        return result
    if result is None:
        result = RunResult(spec.run_id, RunStatus.TIMED_OUT, started, time.time())
    return result.mark_timed_out(spec.timeout_s)


def _execute_isolated(
    spec: RunSpec,
    folder: Path,
    *,
    config: dict[str, Any],
    secrets: dict[str, Any],
    state: ServiceState,
    env_path: Path | None,
) -> RunResult:
    """Run ``spec`` in a worker process whose import path is the package, the requirements
    folder, the ``fxray.context`` shim and the standard library (see
    :mod:`fxray.runtime.isolated`)."""
    from fxray.runtime.isolated import IsolatedWorker

    worker = IsolatedWorker(folder, env_path)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = worker.execute(spec, config=config, secrets=secrets, state=state)
        except BaseException as exc:  # a platform error, not the script's: re-raised below
            box["error"] = exc

    thread = threading.Thread(target=work, name="fxray-local-run", daemon=True)
    try:
        thread.start()
        thread.join(spec.timeout_s)
        timed_out = thread.is_alive()
        if timed_out:
            worker.interrupt(spec.run_id, TIMEOUT_GRACE_S)  # killed after the grace period
            thread.join()
    finally:
        worker.close()
    if "error" in box:
        raise box["error"]
    result: RunResult = box["result"]
    return result.mark_timed_out(spec.timeout_s) if timed_out else result


def _raise_in_thread(thread: threading.Thread, exc_type: type[BaseException]) -> None:
    """Ask ``thread`` to raise ``exc_type`` at its next bytecode (C calls are not interrupted)."""
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(exc_type)
        )
