"""Tests for the local package store and materialize()."""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fxray.packages import PackageNotFound, PackageStore, materialize
from fxray.packages.local import LocalPackageStore

FILES = {
    "service.py": "def main(context):\n    return 1\n",
    "lib/helpers.py": "X = 1\n",
    "lib/data/config.json": '{"a": 1}\n',
}


def make_zip(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buf.getvalue()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CountingStore:
    """Wraps a store, counting get() calls and optionally holding them at a barrier."""

    def __init__(self, inner: PackageStore, barrier: threading.Barrier | None = None) -> None:
        self.inner = inner
        self.barrier = barrier
        self.gets = 0
        self._lock = threading.Lock()

    def put(self, content_hash: str, data: bytes) -> None:
        self.inner.put(content_hash, data)

    def get(self, content_hash: str) -> bytes:
        with self._lock:
            self.gets += 1
        if self.barrier is not None:
            self.barrier.wait(timeout=10)
        return self.inner.get(content_hash)

    def exists(self, content_hash: str) -> bool:
        return self.inner.exists(content_hash)


@pytest.fixture
def store(tmp_path: Path) -> LocalPackageStore:
    return LocalPackageStore(tmp_path / "store")


@pytest.fixture
def package(store: LocalPackageStore) -> str:
    data = make_zip(FILES)
    content_hash = digest(data)
    store.put(content_hash, data)
    return content_hash


def assert_unpacked(directory: Path) -> None:
    found = {
        p.relative_to(directory).as_posix(): p.read_text()
        for p in directory.rglob("*")
        if p.is_file()
    }
    assert found == FILES


def test_put_get_exists(store: LocalPackageStore) -> None:
    data = make_zip(FILES)
    content_hash = digest(data)
    assert isinstance(store, PackageStore)
    assert not store.exists(content_hash)
    store.put(content_hash, data)
    assert store.exists(content_hash)
    assert store.get(content_hash) == data
    assert (store.root / f"{content_hash}.zip").is_file()
    assert [p.name for p in store.root.iterdir()] == [f"{content_hash}.zip"]


def test_put_is_idempotent(store: LocalPackageStore, package: str) -> None:
    before = store.get(package)
    store.put(package, before)
    store.put(package, before)
    assert store.get(package) == before
    assert len(list(store.root.iterdir())) == 1


def test_missing_package(store: LocalPackageStore) -> None:
    missing = "0" * 64
    with pytest.raises(PackageNotFound) as info:
        store.get(missing)
    assert isinstance(info.value, KeyError)
    assert missing in str(info.value)
    assert not store.exists(missing)


def test_store_pickles(store: LocalPackageStore, package: str) -> None:
    clone = pickle.loads(pickle.dumps(store))
    assert clone.root == store.root
    assert clone.get(package) == store.get(package)


@pytest.mark.parametrize(
    "bad", ["", "abc", "A" * 64, "g" * 64, "0" * 63, "0" * 65, "../" + "0" * 61, "0" * 64 + "\n"]
)
def test_bad_hash_refused(store: LocalPackageStore, tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="content hash"):
        store.put(bad, b"data")
    with pytest.raises(ValueError, match="content hash"):
        store.get(bad)
    with pytest.raises(ValueError, match="content hash"):
        store.exists(bad)
    with pytest.raises(ValueError, match="content hash"):
        materialize(store, bad, tmp_path / "cache")


def test_materialize_and_cache_hit(store: LocalPackageStore, package: str, tmp_path: Path) -> None:
    counting = CountingStore(store)
    cache = tmp_path / "cache"
    first = materialize(counting, package, cache)
    assert first == cache / package
    assert_unpacked(first)
    assert counting.gets == 1
    second = materialize(counting, package, cache)
    assert second == first
    assert counting.gets == 1
    assert [p.name for p in cache.iterdir()] == [package]


def test_materialize_missing_package(store: LocalPackageStore, tmp_path: Path) -> None:
    with pytest.raises(PackageNotFound):
        materialize(store, "f" * 64, tmp_path / "cache")
    assert not (tmp_path / "cache" / ("f" * 64)).exists()


def test_concurrent_materialize(store: LocalPackageStore, package: str, tmp_path: Path) -> None:
    counting = CountingStore(store, barrier=threading.Barrier(4))
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: materialize(counting, package, cache), range(4)))
    assert counting.gets == 4
    assert results == [cache / package] * 4
    assert [p.name for p in cache.iterdir()] == [package]
    assert_unpacked(cache / package)


@pytest.mark.parametrize(
    "entry", ["../evil.py", "lib/../../evil.py", "/abs/evil.py", "..\\evil.py"]
)
def test_zip_slip_refused(store: LocalPackageStore, tmp_path: Path, entry: str) -> None:
    data = make_zip({"ok.py": "", entry: "pwned"})
    content_hash = digest(data)
    store.put(content_hash, data)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="unsafe zip entry"):
        materialize(store, content_hash, cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "evil.py").exists()
