"""ConsulKV: the KVStore contract of test_local_kv.py, run against the Consul KV test double
(tests/consul_server.py, in-process), plus the Consul key layout, ACLs and the watch."""

from __future__ import annotations

import inspect
import json
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import consul
import pytest

from fxray.kv import ServiceState, config_key, get_json, put_json, secrets_key, service_key
from fxray.kv.consul import ConsulKV, published_settings
from fxray.kv.local import LocalKV
from fxray.kv.watch import KVWatchError, WatchableKV, WatchedValue, watch_overrides
from fxray.settings import Settings
from tests.consul_server import ConsulTestServer
from tests.unit.kv import test_local_kv as contract

# Every contract test that takes the ``kv`` fixture runs here against ConsulKV.
for _name, _test in vars(contract).items():
    if _name.startswith("test_") and "kv" in inspect.signature(_test).parameters:
        globals()[_name] = _test

TOKEN = "platform-token-1234"


@pytest.fixture
def server() -> Iterator[ConsulTestServer]:
    with ConsulTestServer() as double:
        yield double


@pytest.fixture
def kv(server: ConsulTestServer) -> Iterator[ConsulKV]:
    store = ConsulKV(server.url, instance="unit")
    yield store
    store.close()


@pytest.fixture
def raw(server: ConsulTestServer) -> consul.Consul:
    """py-consul straight at the double, to see what ConsulKV stored where."""
    return consul.Consul(host=server.host, port=server.port)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- layout -----------------------------------------------------------------------------------


def test_key_layout_in_consul(kv: ConsulKV, raw: consul.Consul) -> None:
    put_json(kv, config_key("svc"), {"greeting": "hi"})
    put_json(kv, secrets_key("svc"), {"api": "s3cr3t"})
    ServiceState(kv, "svc").put("count", 3)
    _, keys = raw.kv.get("", keys=True)
    assert keys == [
        "fxray/unit/secrets/svc",
        "fxray/unit/services/svc/config",
        "fxray/unit/services/svc/state/count",
    ]
    assert kv.consul_key("other/key") == "other/key"
    assert kv.root == "fxray/unit"
    # listings see the logical layout, secrets included, whatever the prefix
    expected = [config_key("svc"), secrets_key("svc"), service_key("svc", "state", "count")]
    for prefix in ("", "f", "fxray/", "fxray/se", "fxray/services/", "fxray/services/svc/"):
        assert kv.keys(prefix) == expected, prefix
    assert kv.keys("fxray/services/svc/s") == expected[1:]
    assert kv.keys("fxray/services/svc/secrets") == [secrets_key("svc")]
    assert kv.keys("fxray/services/svc/state/") == expected[2:]
    assert kv.keys("fxray/services/sv") == expected
    assert kv.keys("fxray/services/svc2/") == []
    assert [e.key for e in kv.list("fxray/services/svc/")] == expected
    assert get_json(kv, secrets_key("svc")) == {"api": "s3cr3t"}


def test_instances_do_not_see_each_other(server: ConsulTestServer, kv: ConsulKV) -> None:
    other = ConsulKV(server.url, instance="other")
    put_json(kv, config_key("svc"), 1)
    put_json(other, config_key("svc"), 2)
    put_json(other, secrets_key("svc"), 3)
    kv.put("plain/key", b"shared")  # outside fxray/: stored as is, seen by both
    assert kv.keys("") == [config_key("svc"), "plain/key"]
    assert other.keys("") == [config_key("svc"), secrets_key("svc"), "plain/key"]
    assert get_json(kv, config_key("svc")) == 1
    assert kv.get(secrets_key("svc")) is None
    other.close()


def test_reserved_and_foreign_keys(kv: ConsulKV, raw: consul.Consul) -> None:
    with pytest.raises(ValueError, match="reserved"):
        kv.put("fxray/secrets/x", b"v")
    with pytest.raises(ValueError, match="reserved"):
        kv.get("fxray/secrets")
    # keys other tools may leave in Consul that are no logical key are skipped
    raw.kv.put("fxray/unit/folder/", None)
    raw.kv.put("fxray/unit/secrets/a/b", "x")
    raw.kv.put("fxray/unit/secrets", "x")
    assert kv.keys("") == []
    assert kv.put("fxray/secretsx/ok", b"v")
    assert kv.keys("fxray/") == ["fxray/secretsx/ok"]


def test_empty_value_is_null_in_consul(kv: ConsulKV, raw: consul.Consul) -> None:
    assert kv.put("k", b"")
    assert raw.kv.get("k")[1]["Value"] is None
    entry = kv.get("k")
    assert entry is not None
    assert entry.value == b""
    assert kv.list("k")[0].value == b""


def test_cas_against_writes_from_another_client(kv: ConsulKV, raw: consul.Consul) -> None:
    key = service_key("svc", "state", "n")
    assert kv.put(key, b"1", cas=0)
    entry = kv.get(key)
    assert entry is not None
    raw.kv.put(kv.consul_key(key), "2")  # someone else writes in between
    assert not kv.put(key, b"3", cas=entry.modify_index)
    assert not kv.delete(key, cas=entry.modify_index)
    assert ServiceState(kv, "svc").update("n", lambda n: n + 1) == 3


def test_pickles_without_connections(server: ConsulTestServer) -> None:
    kv = ConsulKV(server.url, token=None, instance="unit")
    kv.put("k", b"v")
    state = kv.__getstate__()
    assert set(state) == {"scheme", "host", "port", "token", "instance", "verify", "timeout_s"}
    clone = pickle.loads(pickle.dumps(kv))
    entry = clone.get("k")
    assert entry is not None
    assert entry.value == b"v"
    assert repr(clone) == f"ConsulKV('{server.url}', instance='unit')"
    secret = ConsulKV(server.url, token=TOKEN)
    assert TOKEN not in repr(secret)
    assert pickle.loads(pickle.dumps(secret)).__getstate__()["token"] == TOKEN


@pytest.mark.parametrize("url", ["ftp://h:1", "http://", "http://h:port"])
def test_bad_url(url: str) -> None:
    with pytest.raises(ValueError):
        ConsulKV(url)


def test_bad_instance() -> None:
    with pytest.raises(ValueError):
        ConsulKV(instance="a/b")


# -- blocking queries and the watcher ---------------------------------------------------------


def _later(delay: float, fn: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(delay, fn)
    timer.start()
    return timer


def test_watch_key_blocks_until_a_change(kv: ConsulKV) -> None:
    key = config_key("svc")
    index, entry = kv.watch_key(key)  # index 0: answers at once
    assert entry is None
    writer = ConsulKV(kv.url, instance="unit")
    _later(0.2, lambda: put_json(writer, key, {"v": 1}))
    started = time.monotonic()
    new_index, entry = kv.watch_key(key, index, wait_s=5)
    assert 0.1 < time.monotonic() - started < 3
    assert new_index > index
    assert entry is not None
    assert json.loads(entry.value) == {"v": 1}
    # no change: answers at the end of the wait with the same index
    _later(0.05, lambda: writer.put("unrelated", b"x"))
    started = time.monotonic()
    same, again = kv.watch_key(key, new_index, wait_s=0.4)
    assert time.monotonic() - started >= 0.35
    assert same == new_index
    assert again == entry


def test_watch_prefix(kv: ConsulKV) -> None:
    state = ServiceState(kv, "svc")
    state.put("a", 1)
    prefix = service_key("svc", "state") + "/"
    index, entries = kv.watch(prefix)
    assert [e.key for e in entries] == [prefix + "a"]
    _later(0.1, lambda: state.put("b", 2))
    new_index, entries = kv.watch(prefix, index, wait_s=5)
    assert new_index > index
    assert [e.key for e in entries] == [prefix + "a", prefix + "b"]
    with pytest.raises(ValueError, match="secrets"):
        kv.watch("fxray/services/svc/")


def test_watched_value_follows_changes_without_reads(
    kv: ConsulKV, server: ConsulTestServer, raw: consul.Consul
) -> None:
    key = config_key("svc")
    put_json(kv, key, {"greeting": "hello"})
    watched = WatchedValue(kv, key, wait_s=5)
    server.clear_requests()
    for _ in range(200):
        assert watched.get() == {"greeting": "hello"}
    # reading costs nothing: at most the one blocking query that was already open
    assert len([r for r in server.requests if r.method == "GET"]) <= 1
    value = watched.get()
    value["greeting"] = "mutated"  # each get() is a fresh object
    assert watched.get() == {"greeting": "hello"}

    raw.kv.put(kv.consul_key(key), json.dumps({"greeting": "bonjour"}))
    eventually(lambda: watched.get() == {"greeting": "bonjour"})
    raw.kv.delete(kv.consul_key(key))
    eventually(lambda: watched.get("gone") == "gone")
    gets = [r for r in server.requests if r.method == "GET"]
    assert gets and all(r.blocking for r in gets)
    assert len(gets) <= 4
    watched.close()


def test_watched_value_survives_an_outage(kv: ConsulKV) -> None:
    server = ConsulTestServer().start()
    port = server.port
    store = ConsulKV(server.url, instance="unit")
    put_json(store, config_key("svc"), {"v": 1})
    watched = WatchedValue(store, config_key("svc"), wait_s=0.3)
    server.stop()
    time.sleep(0.5)
    assert watched.get() == {"v": 1}  # the last value read stays in use
    with ConsulTestServer(port=port) as revived:  # Consul back, its data replaced
        put_json(ConsulKV(revived.url, instance="unit"), config_key("svc"), {"v": 2})
        eventually(lambda: watched.get() == {"v": 2}, timeout=10)
    watched.close()


def test_watched_value_without_server_raises() -> None:
    with ConsulTestServer() as server:
        url = server.url
    watched = WatchedValue(ConsulKV(url, timeout_s=0.5), config_key("svc"), first_read_wait_s=0.2)
    with pytest.raises(KVWatchError, match="could not be read"):
        watched.get()
    watched.close()


def test_watch_overrides_only_for_watchable_stores(kv: ConsulKV, tmp_path: Any) -> None:
    local = LocalKV(tmp_path / "kv.db")
    assert not isinstance(local, WatchableKV)
    assert watch_overrides(local, "svc") is None
    assert isinstance(kv, WatchableKV)
    put_json(kv, secrets_key("svc"), {"token": "t"})
    overrides = watch_overrides(kv, "svc", wait_s=1)
    assert overrides is not None
    assert overrides.get() == (None, {"token": "t"})
    overrides.close()
    local.close()


# -- ACLs -------------------------------------------------------------------------------------


def test_secrets_need_the_token() -> None:
    with ConsulTestServer(token=TOKEN, deny_prefixes=["fxray/unit/secrets/"]) as server:
        platform = ConsulKV(server.url, token=TOKEN, instance="unit")
        put_json(platform, config_key("svc"), {"greeting": "hi"})
        put_json(platform, secrets_key("svc"), {"api": "s3cr3t"})
        assert platform.keys("fxray/services/svc/") == [config_key("svc"), secrets_key("svc")]

        anonymous = consul.Consul(host=server.host, port=server.port)
        _, entries = anonymous.kv.get("", recurse=True)
        assert [e["Key"] for e in entries] == ["fxray/unit/services/svc/config"]
        assert all(b"s3cr3t" not in (e["Value"] or b"") for e in entries)
        _, keys = anonymous.kv.get("fxray/", keys=True)
        assert keys == ["fxray/unit/services/svc/config"]
        with pytest.raises(consul.ACLPermissionDenied):
            anonymous.kv.get("fxray/unit/secrets/svc")
        with pytest.raises(consul.ACLPermissionDenied):
            anonymous.kv.put("fxray/unit/secrets/svc", "overwritten")
        wrong = consul.Consul(host=server.host, port=server.port, token="wrong")
        with pytest.raises(consul.ACLPermissionDenied, match="ACL not found"):
            wrong.kv.get("fxray/unit/services/svc/config")
        # fxray without the token: config readable, secrets refused
        reader = ConsulKV(server.url, instance="unit")
        assert reader.keys("fxray/services/svc/") == [config_key("svc")]
        with pytest.raises(consul.ACLPermissionDenied):
            reader.get(secrets_key("svc"))
        assert get_json(platform, secrets_key("svc")) == {"api": "s3cr3t"}


# -- settings ---------------------------------------------------------------------------------


def test_settings_are_published(
    server: ConsulTestServer, raw: consul.Consul, tmp_path: Any
) -> None:
    settings = Settings(
        home=tmp_path,
        instance="unit",
        kv_store="consul",
        consul_url=server.url,
        consul_token=TOKEN,
        database_url="postgresql+psycopg2://fx:dbpass@db/fx",
        kafka_producer_config={"sasl.password": "kpass", "acks": "all"},
    )
    assert TOKEN not in repr(settings)
    assert settings.public_dict()["consul_token"] == TOKEN  # actors get it
    kv = ConsulKV.from_settings(settings)  # what Platform uses for kv_store="consul"
    assert kv.url == server.url
    assert kv.instance == "unit"
    _, entry = raw.kv.get("fxray/unit/settings")
    text = entry["Value"].decode()
    for secret in (TOKEN, "dbpass", "kpass"):
        assert secret not in text
    published = json.loads(text)
    assert published == published_settings(settings)
    assert published["kv_store"] == "consul"
    assert published["database_url"] == "postgresql+psycopg2://fx:***@db/fx"
    assert published["kafka_producer_config"] == {"sasl.password": "***", "acks": "all"}
    assert "consul_token" not in published
    kv.close()
