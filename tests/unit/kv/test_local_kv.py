"""Contract tests for the embedded KV stores, plus ServiceState and key layout."""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from fxray.kv import (
    KVEntry,
    KVStore,
    ServiceState,
    config_key,
    get_json,
    put_json,
    secrets_key,
    service_key,
    state_prefix,
)
from fxray.kv.local import InMemoryKV, LocalKV


@pytest.fixture(params=["local", "memory"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[KVStore]:
    store: KVStore = LocalKV(tmp_path / "kv.db") if request.param == "local" else InMemoryKV()
    yield store
    store.close()


def test_implements_protocol(kv: KVStore) -> None:
    assert isinstance(kv, KVStore)


def test_get_missing(kv: KVStore) -> None:
    assert kv.get("a/b") is None


def test_put_get_and_indexes(kv: KVStore) -> None:
    assert kv.put("a/b", b"one")
    first = kv.get("a/b")
    assert first is not None
    assert first.key == "a/b"
    assert first.value == b"one"
    assert first.create_index == first.modify_index > 0

    assert kv.put("a/c", b"other")
    assert kv.put("a/b", b"two")
    second = kv.get("a/b")
    assert second is not None
    assert second.value == b"two"
    assert second.create_index == first.create_index
    other = kv.get("a/c")
    assert other is not None
    assert first.modify_index < other.modify_index < second.modify_index


def test_bytes_like_values(kv: KVStore) -> None:
    assert kv.put("k", bytearray(b"\x00\xff"))
    entry = kv.get("k")
    assert entry is not None
    assert entry.value == b"\x00\xff"
    assert type(entry.value) is bytes
    with pytest.raises(TypeError):
        kv.put("k", "text")  # type: ignore[arg-type]


def test_cas_zero_creates_only(kv: KVStore) -> None:
    assert kv.put("k", b"first", cas=0)
    assert not kv.put("k", b"second", cas=0)
    entry = kv.get("k")
    assert entry is not None
    assert entry.value == b"first"


def test_cas_refuses_stale_index(kv: KVStore) -> None:
    kv.put("k", b"v1")
    stale = kv.get("k")
    assert stale is not None
    kv.put("k", b"v2")
    assert not kv.put("k", b"v3", cas=stale.modify_index)
    current = kv.get("k")
    assert current is not None
    assert current.value == b"v2"
    assert kv.put("k", b"v3", cas=current.modify_index)
    assert kv.get("k") == KVEntry("k", b"v3", current.modify_index + 1, stale.create_index)


def test_cas_on_missing_key_refused(kv: KVStore) -> None:
    assert not kv.put("k", b"v", cas=7)
    assert kv.get("k") is None


def test_invalid_cas(kv: KVStore) -> None:
    with pytest.raises(ValueError):
        kv.put("k", b"v", cas=-1)


def test_delete(kv: KVStore) -> None:
    assert kv.delete("missing")
    kv.put("k", b"v")
    assert kv.delete("k")
    assert kv.get("k") is None


def test_delete_with_cas(kv: KVStore) -> None:
    kv.put("k", b"v1")
    stale = kv.get("k")
    assert stale is not None
    kv.put("k", b"v2")
    assert not kv.delete("k", cas=stale.modify_index)
    assert kv.get("k") is not None
    current = kv.get("k")
    assert current is not None
    assert kv.delete("k", cas=current.modify_index)
    assert kv.get("k") is None
    assert kv.delete("k", cas=current.modify_index)


def test_delete_bumps_index(kv: KVStore) -> None:
    kv.put("a", b"")
    before = kv.get("a")
    assert before is not None
    kv.delete("a")
    kv.put("a", b"")
    after = kv.get("a")
    assert after is not None
    assert after.create_index == before.modify_index + 2


def test_list_is_recursive_and_sorted(kv: KVStore) -> None:
    keys = ["a/z", "a/b/c/d", "a/b", "ab/x", "a/b/c", "b/a", "a/\u00e9", "a/A"]
    for i, key in enumerate(keys):
        kv.put(key, str(i).encode())
    expected = sorted(k for k in keys if k.startswith("a/"))
    assert kv.keys("a/") == expected
    assert [e.key for e in kv.list("a/")] == expected
    assert kv.list("a/b/c/d")[0].value == b"1"
    assert kv.keys("a") == sorted(k for k in keys if k.startswith("a"))
    assert kv.keys("") == sorted(keys)
    assert kv.keys("c/") == []
    assert kv.list("nothing") == []


@pytest.mark.parametrize("key", ["", "/a", "a/", "a//b", "/"])
def test_bad_keys_refused(kv: KVStore, key: str) -> None:
    with pytest.raises(ValueError):
        kv.put(key, b"v")
    with pytest.raises(ValueError):
        kv.get(key)
    with pytest.raises(ValueError):
        kv.delete(key)


@pytest.mark.parametrize("prefix", ["/a", "a//"])
def test_bad_prefixes_refused(kv: KVStore, prefix: str) -> None:
    with pytest.raises(ValueError):
        kv.list(prefix)


def test_json_helpers(kv: KVStore) -> None:
    assert get_json(kv, "j", default={"d": 1}) == {"d": 1}
    assert put_json(kv, "j", {"x": [1, 2.5, "é", None]})
    assert get_json(kv, "j") == {"x": [1, 2.5, "é", None]}
    assert not put_json(kv, "j", 1, cas=0)
    with pytest.raises(TypeError, match="'j'"):
        put_json(kv, "j", {1, 2})


def test_key_layout() -> None:
    assert service_key("svc") == "fxray/services/svc"
    assert service_key("svc", "state", "x") == "fxray/services/svc/state/x"
    assert config_key("svc") == "fxray/services/svc/config"
    assert secrets_key("svc") == "fxray/services/svc/secrets"
    assert state_prefix("svc") == "fxray/services/svc/state/"


@pytest.mark.parametrize("parts", [("a/b",), ("svc", ""), ("",), ("svc", "x/y")])
def test_key_parts_validated(parts: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        service_key(*parts)


def test_service_state(kv: KVStore) -> None:
    state = ServiceState(kv, "svc")
    other = ServiceState(kv, "svc2")
    assert state.get("count") is None
    assert state.get("count", 5) == 5
    state.put("count", 1)
    state.put("names", ["a", "b"])
    other.put("count", 99)
    assert state.get("count") == 1
    assert state.get("names") == ["a", "b"]
    assert state.keys() == ["count", "names"]
    assert get_json(kv, "fxray/services/svc/state/count") == 1
    state.delete("count")
    state.delete("count")
    assert state.keys() == ["names"]
    assert other.get("count") == 99


def test_service_state_validation(kv: KVStore) -> None:
    state = ServiceState(kv, "svc")
    with pytest.raises(TypeError, match="'bad'"):
        state.put("bad", object())
    with pytest.raises(TypeError, match="'nan'"):
        state.put("nan", float("nan"))
    with pytest.raises(ValueError):
        state.put("a/b", 1)
    with pytest.raises(ValueError):
        state.get("")
    with pytest.raises(ValueError):
        ServiceState(kv, "a/b")


def test_service_state_update(kv: KVStore) -> None:
    state = ServiceState(kv, "svc")
    assert state.update("n", lambda v: v + 1, default=10) == 11
    assert state.update("n", lambda v: v * 2) == 22
    assert state.get("n") == 22


def test_service_state_update_gives_up(kv: KVStore) -> None:
    state = ServiceState(kv, "svc")
    calls = 0

    def interfering(value: int | None) -> int:
        nonlocal calls
        calls += 1
        state.put("n", -calls)
        return 0

    with pytest.raises(RuntimeError, match=r"'n'.*3 attempts"):
        state.update("n", interfering, retries=2)
    assert calls == 3
    assert state.get("n") == -3


def test_service_state_update_threads(kv: KVStore) -> None:
    state = ServiceState(kv, "svc")

    def work() -> None:
        for _ in range(25):
            state.update("counter", lambda v: (v or 0) + 1)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state.get("counter") == 200


def test_local_kv_persists_and_pickles(tmp_path: Path) -> None:
    kv = LocalKV(tmp_path / "sub" / "kv.db")
    kv.put("k", b"v")
    clone = pickle.loads(pickle.dumps(kv))
    assert clone.path == kv.path
    entry = clone.get("k")
    assert entry is not None
    assert entry.value == b"v"
    clone.put("k2", b"v2")
    kv.close()
    assert kv.get("k2") is not None
    clone.close()
    reopened = LocalKV(tmp_path / "sub" / "kv.db")
    assert reopened.keys("") == ["k", "k2"]
    reopened.put("k3", b"")
    k3 = reopened.get("k3")
    assert k3 is not None
    assert k3.create_index == 3
    reopened.close()


def test_in_memory_kv_refuses_pickle() -> None:
    with pytest.raises(TypeError, match="LocalKV"):
        pickle.dumps(InMemoryKV())


def _count(kv: LocalKV, barrier: Barrier, n: int) -> None:
    state = ServiceState(kv, "svc")
    barrier.wait(timeout=60)
    for _ in range(n):
        state.update("counter", lambda v: (v or 0) + 1)
    kv.close()


def test_update_across_processes(tmp_path: Path) -> None:
    kv = LocalKV(tmp_path / "kv.db")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_count, args=(kv, barrier, 50)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert ServiceState(kv, "svc").get("counter") == 200
    entry = kv.get(service_key("svc", "state", "counter"))
    assert entry is not None
    assert entry.modify_index == 200
    kv.close()
