"""A platform with ``kv_store="consul"`` against the Consul KV test double (tests/consul_server.py,
in-process): live config through blocking queries, state with check-and-set, secrets behind
an ACL token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import consul
import pytest

from fxray import Platform
from fxray.kv import ServiceState
from fxray.kv.consul import ConsulKV
from tests.consul_server import ConsulTestServer

TOKEN = "platform-token-5678"


@pytest.fixture
def double() -> Iterator[ConsulTestServer]:
    with ConsulTestServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def consul_platform(
    double: ConsulTestServer, make_platform: Callable[..., Platform]
) -> Callable[..., Platform]:
    """Platforms on the double, holding the token (set up after, torn down before, it)."""

    def make(**overrides: Any) -> Platform:
        return make_platform(
            kv_store="consul", consul_url=double.url, consul_token=TOKEN, **overrides
        )

    return make


def client(server: ConsulTestServer, token: str | None = None) -> consul.Consul:
    return consul.Consul(host=server.host, port=server.port, token=token)


def run_once(platform: Platform, service: str) -> Any:
    event = platform.run(service)
    (run,) = platform.wait_for_runs(event_id=event["id"], timeout=120)
    assert run.status == "succeeded", run.error
    return run.result


def seen_soon(platform: Platform, value: str, within_s: float = 2.0) -> bool:
    """A run sees ``value`` within ``within_s`` of the write: the watch delivers a change
    asynchronously, so a run that starts in the few ms before may still see the old one."""
    deadline = time.monotonic() + within_s
    while True:
        if run_once(platform, "greeter") == value:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_config_change_in_consul_reaches_the_next_run_without_reads_per_batch(
    double: ConsulTestServer,
    consul_platform: Callable[..., Platform],
    service_dir: Callable[..., Path],
) -> None:
    platform = consul_platform(executors_max_per_version=1)
    assert isinstance(platform.kv, ConsulKV)
    code = "from fxray import context\ncontext.result = context.config['greeting']\n"
    platform.deploy(service_dir("greeter", {"g.py": code, "config.json": '{"greeting": "hi"}'}))
    root = f"fxray/{platform.settings.instance}"
    config_path = f"{root}/services/greeter/config"
    watched = {config_path, f"{root}/secrets/greeter"}
    admin = client(double, TOKEN)  # py-consul straight at Consul, not through fxray

    def gets() -> list[Any]:
        return [r for r in double.requests if r.method == "GET" and r.key in watched]

    assert run_once(platform, "greeter") == "hi"  # the package's config.json
    admin.kv.put(config_path, json.dumps({"greeting": "hello"}))
    assert seen_soon(platform, "hello")  # no redeploy
    time.sleep(0.5)  # let the watchers renew their blocking queries
    before = len(gets())
    for _ in range(10):
        assert run_once(platform, "greeter") == "hello"
    assert len(gets()) - before <= 1  # ten batches, no KV read (at most one spurious wake)
    admin.kv.put(config_path, json.dumps({"greeting": "bonjour"}))
    assert seen_soon(platform, "bonjour")

    reads = gets()
    # one plain read per key when the executor started; everything else a blocking query
    assert sorted(r.key for r in reads if not r.blocking) == sorted(watched)
    assert len(reads) < 13  # at least 13 runs


COUNTER = """\
import time
from fxray import context


def slow_increment(count):
    time.sleep(0.01)  # widen the read-modify-write window so parallel runs collide
    return (count or 0) + 1


context.result = context.state.update("count", slow_increment)
"""


def test_concurrent_state_updates_lose_nothing(
    double: ConsulTestServer,
    consul_platform: Callable[..., Platform],
    service_dir: Callable[..., Path],
) -> None:
    platform = consul_platform(executors_max_per_version=2)
    platform.deploy(service_dir("counter", {"count.py": COUNTER}, max_concurrency=2))
    for _ in range(40):
        platform.run("counter")
    runs = platform.wait_for_runs(service="counter", count=40, timeout=240)
    assert [r.status for r in runs] == ["succeeded"] * 40
    # every update saw a distinct value: none was lost or applied twice
    assert sorted(r.result for r in runs) == list(range(1, 41))
    assert ServiceState(platform.kv, "counter").get("count") == 40
    key = f"fxray/{platform.settings.instance}/services/counter/state/count"
    _, entry = client(double, TOKEN).kv.get(key)
    assert entry["Value"] == b"40"
    writes = [r for r in double.requests if r.method == "PUT" and r.key == key]
    assert all("cas" in r.params for r in writes)
    assert len(writes) >= 40  # more than 40 when parallel runs collided and retried
    print(f"{len(writes)} check-and-set writes for 40 updates")


def test_secrets_stay_out_of_listings_without_the_token(
    double: ConsulTestServer,
    consul_platform: Callable[..., Platform],
    service_dir: Callable[..., Path],
) -> None:
    platform = consul_platform()
    root = f"fxray/{platform.settings.instance}"
    double.deny_prefixes = [f"{root}/secrets/"]  # the ACL policy of docs/consul.md
    secret = "s3cr3t-value-42"
    code = (
        "from fxray import context\n"
        "context.result = [context.config, len(context.secrets['api_key'])]\n"
    )
    platform.deploy(service_dir("vault", {"v.py": code}))
    platform.configure("vault", config={"mode": "live"}, secrets={"api_key": secret})
    assert run_once(platform, "vault") == [{"mode": "live"}, len(secret)]

    anonymous = client(double)
    _, entries = anonymous.kv.get(f"{root}/", recurse=True)
    keys = [e["Key"] for e in entries]
    assert f"{root}/services/vault/config" in keys
    assert not [k for k in keys if "secrets" in k]
    assert all(secret.encode() not in (e["Value"] or b"") for e in entries)
    _, names = anonymous.kv.get("", keys=True)
    assert not [k for k in names if k.startswith(f"{root}/secrets")]
    with pytest.raises(consul.ACLPermissionDenied):
        anonymous.kv.get(f"{root}/secrets/vault")
    with pytest.raises(consul.ACLPermissionDenied):
        client(double, "not-the-token").kv.get(f"{root}/services/vault/config")
    # the published settings hold no token either
    _, published = anonymous.kv.get(f"{root}/settings")
    assert TOKEN.encode() not in published["Value"]
    # with the platform's token the secret is there, in its own subtree
    _, entry = client(double, TOKEN).kv.get(f"{root}/secrets/vault")
    assert json.loads(entry["Value"]) == {"api_key": secret}
