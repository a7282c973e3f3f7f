"""Per-version dependency environments, cached by the content hash of the requirements.

Ray's own ``pip`` runtime_env clones the whole base virtualenv (~375 MB, 7-14 s here) and
keeps it only for one Ray session. fxray instead installs *only the service's requirements*
with ``pip install --target`` into ``<home>/envs/<requirements hash>/``, once per node and
for good, and puts that folder first on the executor's ``PYTHONPATH`` through its
runtime_env. A second version with the same requirements (or a restarted cluster) starts warm.

``env_backend = "ray-pip"`` keeps Ray's own mechanism (for clusters without shared storage).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

READY_MARKER = ".fxray-ready"  # written last: a folder without it is unfinished


class EnvBuildError(RuntimeError):
    """Installing a version's requirements failed; the message carries pip's own words."""


@dataclass(frozen=True, slots=True)
class EnvBuild:
    path: Path
    cached: bool
    seconds: float


def ensure_env(
    requirements: Sequence[str],
    requirements_hash: str,
    envs_dir: Path,
    *,
    index_url: str | None = None,
    timeout_s: float = 600.0,
) -> EnvBuild:
    """The folder holding ``requirements`` installed; built on first use, then reused.

    Safe when several processes ask for the same environment at once (a file lock per hash).
    """
    started = time.monotonic()
    target = envs_dir / requirements_hash
    if (target / READY_MARKER).exists():
        return EnvBuild(target, True, time.monotonic() - started)
    built = fill_env_folder(
        requirements_hash,
        envs_dir,
        lambda staging: _pip_install(list(requirements), staging, index_url, timeout_s),
        ready_text="\n".join(requirements) + "\n",
    )
    return EnvBuild(target, not built, time.monotonic() - started)


def fill_env_folder(
    requirements_hash: str,
    envs_dir: Path,
    fill: Callable[[Path], None],
    ready_text: str = "",
) -> bool:
    """Make ``envs_dir/<requirements_hash>`` with ``fill(staging folder)``, under the hash's
    file lock, and rename it into place with its ready marker once complete (a crash leaves no
    half-made environment); False if another process had made it already."""
    envs_dir.mkdir(parents=True, exist_ok=True)
    target = envs_dir / requirements_hash
    with open(envs_dir / f"{requirements_hash}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / READY_MARKER).exists():
            return False
        staging = Path(tempfile.mkdtemp(prefix=f".{requirements_hash[:12]}-", dir=envs_dir))
        try:
            fill(staging)
            (staging / READY_MARKER).write_text(ready_text)
            if target.exists():
                shutil.rmtree(target)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return True


def _pip_install(
    requirements: list[str], target: Path, index_url: str | None, timeout_s: float
) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-input",
        "--disable-pip-version-check", "--no-warn-script-location", "--target", str(target),
    ]  # fmt: skip
    if index_url:
        command += ["--index-url", index_url]
    try:
        done = subprocess.run(
            command + requirements, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise EnvBuildError(f"installing {requirements} took over {timeout_s:.0f}s") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        raise EnvBuildError(f"pip could not install {requirements}:\n{tail}")


def runtime_env_for(
    version_id: str,
    requirements: Sequence[str],
    env_path: Path | None,
    backend: str = "fxray",
) -> dict[str, Any]:
    """The Ray runtime_env of one version's executors.

    Every version gets its own (``FXRAY_VERSION`` differs), so A/B versions never share a
    worker process; the dependencies come from the cached folder or from Ray's ``pip``.
    """
    env: dict[str, Any] = {"env_vars": {"FXRAY_VERSION": version_id}}
    if requirements:
        if backend == "ray-pip":
            env["pip"] = list(requirements)
        elif env_path is not None:
            env["env_vars"]["PYTHONPATH"] = str(env_path)
    return env
