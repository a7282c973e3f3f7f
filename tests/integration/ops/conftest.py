"""Ops pipeline fixtures: Kafka from ``FXRAY_KAFKA_BOOTSTRAP``, Elasticsearch from
``FXRAY_TEST_ES_URL`` (``scripts/testinfra.sh up`` starts osmem-server, an in-memory emulator of
the OpenSearch API; point it at a real Elasticsearch or OpenSearch to use that instead), and a
private osmem-server process for the tests that stop Elasticsearch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from elasticsearch import Elasticsearch, NotFoundError

from fxray import Platform
from fxray.ops.elastic import EsConfig

BOOTSTRAP = os.environ.get("FXRAY_KAFKA_BOOTSTRAP", "")
ES_URL = os.environ.get("FXRAY_TEST_ES_URL", "")
# osmem and OpenSearch need plain application/json; real Elasticsearch accepts it too
ES_COMPAT = os.environ.get("FXRAY_TEST_ES_COMPAT", "opensearch")


def require(value: str, variable: str) -> str:
    """The server address in ``variable``: fail under FXRAY_REQUIRE_SERVERS, else skip."""
    if not value:
        what = f"{variable} is not set (run scripts/testinfra.sh up, or `make test`)"
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail(what, pytrace=False)
        pytest.skip(what)
    return value


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.1)


def es_of(platform: Platform) -> tuple[Elasticsearch, EsConfig]:
    config = EsConfig.from_settings(platform.settings)
    return config.client(retries=2), config


def count(client: Elasticsearch, index: str, query: dict[str, Any] | None = None) -> int:
    try:
        return int(client.count(index=index, query=query or {"match_all": {}})["count"])
    except NotFoundError:
        return 0


def search_all(
    client: Elasticsearch, index: str, query: dict[str, Any], size: int = 1000
) -> list[dict[str, Any]]:
    try:
        answer = client.search(index=index, query=query, size=size)
    except NotFoundError:
        return []
    return [h["_source"] for h in answer["hits"]["hits"]]


@pytest.fixture
def ops_platform(make_platform: Callable[..., Platform]) -> Callable[..., Platform]:
    """Platforms on Kafka with the ops sink on, with topics and indices of their own."""
    require(BOOTSTRAP, "FXRAY_KAFKA_BOOTSTRAP")

    def make(es_url: str | None = None, **overrides: Any) -> Platform:
        url = es_url or require(ES_URL, "FXRAY_TEST_ES_URL")
        tag = uuid.uuid4().hex[:8]
        return make_platform(
            event_bus="kafka",
            kafka_bootstrap=BOOTSTRAP,
            events_topic=f"fx.it.events.{tag}",
            deadletter_topic=f"fx.it.dlq.{tag}",
            ops_runs_topic=f"fx.it.ops.runs.{tag}",
            ops_logs_topic=f"fx.it.ops.logs.{tag}",
            ops_sink="elasticsearch",
            es_url=url,
            es_compat=ES_COMPAT,
            ops_index_prefix=f"it{tag}",
            **overrides,
        )

    return make


@dataclass
class OsmemProcess:
    """A private osmem-server, to stop (SIGSTOP: unreachable, memory kept) and resume."""

    process: subprocess.Popen[bytes]
    url: str

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server for good (connections are refused; its memory is gone)."""
        self.process.terminate()
        self.process.wait(10)

    def start(self) -> None:
        """Start a new, empty server on the same address."""
        address = self.url.removeprefix("http://").rstrip("/")
        self.process, log = _start_osmem(address)
        os.unlink(log.name)  # the server keeps writing to it; nothing reads it
        wait_for(lambda: _answers(self.url), 10, "osmem-server answers again")


@pytest.fixture
def osmem() -> Iterator[OsmemProcess]:
    """An osmem-server of this test's own on a free port (skips if it is not installed)."""
    pytest.importorskip("osmem_server")
    process, log = _start_osmem("127.0.0.1:0")
    holder: OsmemProcess | None = None
    try:

        def ready() -> str | None:
            assert process.poll() is None, "osmem-server exited"
            with open(log.name) as lines:
                first = lines.readline()
            if not first.startswith("{"):
                return None
            url = json.loads(first)["url"]
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    return url if answer.status == 200 else None
            except OSError:
                return None

        url = wait_for(ready, 10, "osmem-server answers")
        assert process.poll() is None
        holder = OsmemProcess(process, url)
        yield holder
    finally:
        if holder is not None:
            process = holder.process
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        os.unlink(log.name)


def _start_osmem(address: str) -> tuple[subprocess.Popen[bytes], Any]:
    import osmem_server

    log = tempfile.NamedTemporaryFile(prefix="osmem-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [osmem_server.resolve_binary(), "-addr", address, "-no-stdin-watch", "-no-ja"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, log


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False
