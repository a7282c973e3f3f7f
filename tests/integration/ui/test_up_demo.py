"""``fxray up --demo``: the newcomer's command keeps the sample shop running and prints the web
UI's address and a key that signs in."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

SHOP = ("order-intake", "fraud-score", "invoice")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_up_demo_prints_the_ui_and_a_key_that_signs_in(tmp_path: Path) -> None:
    port = _free_port()
    # a Ray of its own (short socket paths), never one another test or `ray start` left running
    ray_tmp = tempfile.mkdtemp(prefix="fxu", dir="/tmp")
    env = {
        **os.environ,
        "FXRAY_RAY_NUM_CPUS": "1",
        "FXRAY_HOME": str(tmp_path / "unused"),
        "RAY_TMPDIR": ray_tmp,
    }
    for name in ("FXRAY_DATABASE_URL", "FXRAY_EVENT_BUS", "FXRAY_OPS_SINK"):
        env.pop(name, None)
    log = tmp_path / "up.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fxray.cli", "up", "--demo", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"fxray up --demo exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no UI after 180 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        printed = log.read_text()
        assert f"fxray web UI on {url}/" in printed, printed
        token = re.search(r"^\s+(fxk_\S+)$", printed, re.MULTILINE)
        assert token, printed

        with httpx.Client(base_url=url, timeout=10, follow_redirects=True) as browser:
            form = browser.get("/signin")
            signin_token = re.search(r'name="signin_token" value="([^"]+)"', form.text)
            assert signin_token
            signed = browser.post(
                "/signin",
                data={"api_key": token.group(1), "signin_token": signin_token.group(1)},
            )
            assert signed.status_code == 200 and signed.url.path == "/"
            services = browser.get("/services")
            for name in SHOP:
                assert f">{name}</a>" in services.text
            deadline = time.monotonic() + 120
            while "order-intake" not in browser.get("/runs").text:
                assert time.monotonic() < deadline, "no runs of the shop"
                time.sleep(1)
        assert not (tmp_path / "unused").exists()  # the demo's home is a temporary one
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)
