"""Live KV values kept current by blocking queries on a daemon thread (no polling loop).

A store that can watch (:class:`WatchableKV`, e.g. :class:`~fxray.kv.consul.ConsulKV`) lets an
executor cache a service's config and secrets overrides: :class:`WatchedValue` reads the key
once, then holds a blocking query open on a daemon thread and swaps in each new value as soon as
the store answers. Readers never touch the store, so a batch costs no KV read, and the next batch
after a change sees it without a redeploy.

If the store becomes unreachable, the last value read stays in use and the thread retries with a
back-off (logging the key and the error, never a value).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Protocol, runtime_checkable

from fxray.kv import KVEntry, KVStore, config_key, secrets_key

__all__ = [
    "WATCH_WAIT_S",
    "KVWatchError",
    "ServiceOverrides",
    "WatchableKV",
    "WatchedValue",
    "watch_overrides",
]

log = logging.getLogger(__name__)

WATCH_WAIT_S = 60.0
"""How long each blocking query waits for a change before it is renewed."""

_FIRST_READ_WAIT_S = 5.0
_MIN_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 10.0


@runtime_checkable
class WatchableKV(KVStore, Protocol):
    """A :class:`~fxray.kv.KVStore` with blocking reads of one key."""

    def watch_key(
        self, key: str, index: int = 0, wait_s: float = WATCH_WAIT_S
    ) -> tuple[int, KVEntry | None]:
        """``(new_index, entry or None)``: at once if ``index`` is 0, else on a change or after
        ``wait_s``. The index may move without the value changing."""
        ...


class KVWatchError(RuntimeError):
    """A watched key has never been read successfully."""


class WatchedValue:
    """The JSON value of one key, kept current on a daemon thread by blocking queries.

    The first read happens in the constructor; if it fails, the thread keeps trying and
    :meth:`get` waits up to ``first_read_wait_s`` for it, then raises :class:`KVWatchError`.
    """

    def __init__(
        self,
        kv: WatchableKV,
        key: str,
        *,
        wait_s: float = WATCH_WAIT_S,
        first_read_wait_s: float = _FIRST_READ_WAIT_S,
    ) -> None:
        self._kv = kv
        self._key = key
        self._wait_s = wait_s
        self._first_read_wait_s = first_read_wait_s
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._stop = threading.Event()
        self._raw: bytes | None = None
        self._index = 0
        self._updates = 0
        self._error: BaseException | None = None
        try:
            self._poll(0)
        except Exception as exc:
            self._failed(exc, _MIN_BACKOFF_S)
        self._thread = threading.Thread(target=self._loop, name=f"fxray-watch:{key}", daemon=True)
        self._thread.start()

    @property
    def key(self) -> str:
        return self._key

    @property
    def index(self) -> int:
        """The store's index of the value held (0 before the first read)."""
        with self._lock:
            return self._index

    @property
    def updates(self) -> int:
        """How many answers from the store have been taken in (one per read)."""
        with self._lock:
            return self._updates

    def get(self, default: Any = None) -> Any:
        """The key's current value, JSON-decoded (a fresh object each call); ``default`` if the
        key does not exist. Raises :class:`KVWatchError` if the key could never be read."""
        if not self._loaded.wait(self._first_read_wait_s):
            with self._lock:
                error = self._error
            raise KVWatchError(f"KV key {self._key!r} could not be read") from error
        with self._lock:
            raw = self._raw
        return default if raw is None else json.loads(raw)

    def close(self) -> None:
        """Stop watching (the thread ends when its current blocking query answers)."""
        self._stop.set()

    def __repr__(self) -> str:
        return f"WatchedValue({self._key!r}, index={self.index})"

    def _poll(self, index: int) -> None:
        new_index, entry = self._kv.watch_key(self._key, index, self._wait_s)
        with self._lock:
            # Consul: an index that goes backwards (e.g. a restored snapshot) means start over
            self._index = new_index if new_index >= index else 0
            self._raw = None if entry is None else entry.value
            self._updates += 1
            self._error = None
        self._loaded.set()

    def _failed(self, exc: BaseException, backoff: float) -> None:
        with self._lock:
            self._error = exc
        log.warning(
            "watching KV key %r failed (%s: %s); retrying in %.1fs",
            self._key,
            type(exc).__name__,
            exc,
            backoff,
        )

    def _loop(self) -> None:
        backoff = _MIN_BACKOFF_S
        while not self._stop.is_set():
            index = self.index
            started = time.monotonic()
            try:
                self._poll(index)
            except Exception as exc:
                self._failed(exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            backoff = _MIN_BACKOFF_S
            if index and self.index == index and time.monotonic() - started < 0.05:
                self._stop.wait(0.1)  # a store that answered at once without a change: rate-limit


class ServiceOverrides:
    """A service's live ``config`` and ``secrets`` overrides, each a :class:`WatchedValue`."""

    def __init__(self, kv: WatchableKV, service: str, *, wait_s: float = WATCH_WAIT_S) -> None:
        self.config = WatchedValue(kv, config_key(service), wait_s=wait_s)
        self.secrets = WatchedValue(kv, secrets_key(service), wait_s=wait_s)

    def get(self) -> tuple[Any, Any]:
        """``(config, secrets)`` overrides as stored (None where a key is not set)."""
        return self.config.get(), self.secrets.get()

    def close(self) -> None:
        self.config.close()
        self.secrets.close()


def watch_overrides(
    kv: KVStore, service: str, *, wait_s: float = WATCH_WAIT_S
) -> ServiceOverrides | None:
    """Watched overrides of ``service`` if ``kv`` can watch, else None (read them directly)."""
    return ServiceOverrides(kv, service, wait_s=wait_s) if isinstance(kv, WatchableKV) else None
