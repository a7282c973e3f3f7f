"""``fxray up`` end to end: a real server process, its first admin key, the API over HTTP."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import stop_process

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    port = _free_port()
    env = {
        **os.environ,
        "FXRAY_HOME": str(tmp_path / "home"),
        "FXRAY_INSTANCE": f"up{uuid.uuid4().hex[:6]}",
        "FXRAY_RAY_NUM_CPUS": "1",
    }
    env.pop("FXRAY_DATABASE_URL", None)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fxray.cli", "up", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"fxray up did not serve the API:\n{log.read_text()}")
    yield url, log, proc
    stop_process(proc)


def test_up_prints_an_admin_key_once_and_serves_the_api(
    server: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, log, _ = server
    printed = log.read_text()
    match = re.search(r"export FXRAY_API_KEY=(\S+)", printed)
    assert match, printed
    headers = {"Authorization": f"Bearer {match.group(1)}"}
    info = httpx.get(f"{url}/api/v1/info", headers=headers, timeout=10)
    assert info.status_code == 200, info.text
    assert info.json()["caller"]["role"] == "admin"
    assert httpx.get(f"{url}/api/v1/info", timeout=10).status_code == 401
    assert httpx.get(f"{url}/openapi.json", timeout=10).json()["info"]["title"] == "fxray"
    assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
