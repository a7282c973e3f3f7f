"""Embedded key/value stores: :class:`LocalKV` (SQLite, multi-process) and :class:`InMemoryKV`."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fxray.kv import (
    KVEntry,
    KVStore,
    cas_allows_delete,
    cas_allows_put,
    check_value,
    validate_key,
    validate_prefix,
)

__all__ = ["InMemoryKV", "LocalKV"]

_BUSY_TIMEOUT_MS = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key          TEXT PRIMARY KEY,
    value        BLOB NOT NULL,
    create_index INTEGER NOT NULL,
    modify_index INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('index', 0);
"""


class LocalKV(KVStore):
    """A :class:`~fxray.kv.KVStore` in one SQLite file, shared safely by many processes.

    The database runs in WAL mode; writes take ``BEGIN IMMEDIATE`` so check-and-set is atomic
    across processes. Each thread gets its own connection, opened lazily. Pickling keeps only
    the path, so an instance can be shipped to Ray actors and reopens the file there.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._reset()
        self._connection()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    @property
    def path(self) -> Path:
        return self._path

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self._path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._path = Path(state["path"])
        self._reset()

    def __repr__(self) -> str:
        return f"LocalKV({str(self._path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # Forked child: the parent's connections must not be used (or closed) here.
            self._reset()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._open()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path,
            timeout=_BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._init_db(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _init_db(conn: sqlite3.Connection) -> None:
        # Switching to WAL can report "locked" without consulting the busy handler when
        # several processes open a fresh file at once, so retry within the busy timeout.
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _current_index(conn: sqlite3.Connection, key: str) -> int | None:
        row = conn.execute("SELECT modify_index FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _next_index(conn: sqlite3.Connection) -> int:
        conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'index'")
        return conn.execute("SELECT value FROM meta WHERE name = 'index'").fetchone()[0]

    def get(self, key: str) -> KVEntry | None:
        validate_key(key)
        row = (
            self._connection()
            .execute("SELECT key, value, modify_index, create_index FROM kv WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else KVEntry(row[0], bytes(row[1]), row[2], row[3])

    def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        validate_key(key)
        value = check_value(value)
        with self._write() as conn:
            current = self._current_index(conn, key)
            if not cas_allows_put(current, cas):
                return False
            index = self._next_index(conn)
            if current is None:
                conn.execute(
                    "INSERT INTO kv (key, value, create_index, modify_index) VALUES (?, ?, ?, ?)",
                    (key, value, index, index),
                )
            else:
                conn.execute(
                    "UPDATE kv SET value = ?, modify_index = ? WHERE key = ?", (value, index, key)
                )
        return True

    def delete(self, key: str, cas: int | None = None) -> bool:
        validate_key(key)
        with self._write() as conn:
            current = self._current_index(conn, key)
            if not cas_allows_delete(current, cas):
                return False
            if current is not None:
                self._next_index(conn)
                conn.execute("DELETE FROM kv WHERE key = ?", (key,))
        return True

    def _scan(self, columns: str, prefix: str) -> Iterator[tuple[Any, ...]]:
        validate_prefix(prefix)
        cursor = self._connection().execute(
            f"SELECT {columns} FROM kv WHERE key >= ? ORDER BY key", (prefix,)
        )
        try:
            for row in cursor:
                if not row[0].startswith(prefix):
                    break
                yield row
        finally:
            cursor.close()

    def list(self, prefix: str) -> list[KVEntry]:
        return [
            KVEntry(k, bytes(v), m, c)
            for k, v, m, c in self._scan("key, value, modify_index, create_index", prefix)
        ]

    def keys(self, prefix: str) -> list[str]:
        return [row[0] for row in self._scan("key", prefix)]

    def close(self) -> None:
        """Close this process's connections; the store reopens lazily if used again."""
        if self._pid != os.getpid():
            self._reset()
            return
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for conn in connections:
            conn.close()


class InMemoryKV(KVStore):
    """A thread-safe, dict-based :class:`~fxray.kv.KVStore` for tests and run-local mode.

    It lives in one process only, so it refuses to be pickled.
    """

    def __init__(self) -> None:
        self._data: dict[str, KVEntry] = {}
        self._index = 0
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        raise TypeError(
            "InMemoryKV lives in one process and cannot be pickled; "
            "use LocalKV to share a store between processes"
        )

    def __repr__(self) -> str:
        return f"InMemoryKV(<{len(self._data)} keys>)"

    def get(self, key: str) -> KVEntry | None:
        validate_key(key)
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        validate_key(key)
        value = check_value(value)
        with self._lock:
            current = self._data.get(key)
            if not cas_allows_put(None if current is None else current.modify_index, cas):
                return False
            self._index += 1
            created = self._index if current is None else current.create_index
            self._data[key] = KVEntry(key, value, self._index, created)
        return True

    def delete(self, key: str, cas: int | None = None) -> bool:
        validate_key(key)
        with self._lock:
            current = self._data.get(key)
            if not cas_allows_delete(None if current is None else current.modify_index, cas):
                return False
            if current is not None:
                self._index += 1
                del self._data[key]
        return True

    def list(self, prefix: str) -> list[KVEntry]:
        validate_prefix(prefix)
        with self._lock:
            return sorted(
                (e for k, e in self._data.items() if k.startswith(prefix)), key=lambda e: e.key
            )

    def keys(self, prefix: str) -> list[str]:
        return [e.key for e in self.list(prefix)]

    def close(self) -> None:
        """Nothing to release; the data stays available."""
