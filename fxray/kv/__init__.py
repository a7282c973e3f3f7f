"""Key/value storage with Consul-like semantics, and the per-service state built on it.

Every store implements :class:`KVStore`: byte values under ``/``-separated string keys, a
global, monotonically increasing index that stamps each write (like Consul's raft index),
and check-and-set writes keyed on an entry's ``modify_index``.

Key layout (all keys live under :data:`ROOT`)::

    fxray/services/<service>/config        service configuration (JSON)
    fxray/services/<service>/secrets       service secrets (JSON)
    fxray/services/<service>/state/<key>   persistent state of a service (JSON, one value a key)
    fxray/settings                         the platform's settings, redacted (Consul only)

Stores may place these logical keys differently: :class:`~fxray.kv.consul.ConsulKV` puts them
under ``fxray/<instance>/`` and the secrets in a subtree of their own (see docs/consul.md).

Build keys with :func:`service_key` (or :func:`config_key`, :func:`secrets_key`,
:func:`state_prefix`); each part is one path segment, so it may be neither empty nor
contain ``/``.

Prefix matching in :meth:`KVStore.list` / :meth:`KVStore.keys` is plain string matching, as in
Consul: ``"a/b"`` matches ``"a/b/c"`` and ``"a/bc"``; end the prefix with ``/`` to list a folder.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "CONFIG",
    "ROOT",
    "SECRETS",
    "SERVICES_PREFIX",
    "SETTINGS_KEY",
    "STATE",
    "KVEntry",
    "KVStore",
    "ServiceState",
    "cas_allows_delete",
    "cas_allows_put",
    "check_value",
    "config_key",
    "get_json",
    "put_json",
    "secrets_key",
    "service_key",
    "state_prefix",
    "validate_key",
    "validate_prefix",
]

ROOT = "fxray"
SERVICES_PREFIX = f"{ROOT}/services/"
CONFIG = "config"
SECRETS = "secrets"
STATE = "state"
SETTINGS_KEY = f"{ROOT}/settings"


@dataclass(frozen=True, slots=True)
class KVEntry:
    """One stored key; the indexes are values of the store's global write index."""

    key: str
    value: bytes
    modify_index: int
    create_index: int


@runtime_checkable
class KVStore(Protocol):
    """A Consul-like key/value store.

    ``cas`` (check-and-set) arguments: ``None`` means unconditional; ``0`` means "only if the
    key does not exist"; ``N > 0`` means "only if the key's ``modify_index`` is ``N``".
    """

    def get(self, key: str) -> KVEntry | None:
        """Return the entry for ``key``, or ``None`` if there is none."""
        ...

    def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        """Write ``value`` under ``key`` if ``cas`` allows; return whether it was written."""
        ...

    def delete(self, key: str, cas: int | None = None) -> bool:
        """Delete ``key`` if ``cas`` allows.

        As in Consul, returns ``False`` only when an existing key fails the ``cas`` check;
        deleting a key that does not exist succeeds.
        """
        ...

    def list(self, prefix: str) -> list[KVEntry]:
        """Return all entries whose key starts with ``prefix`` (recursively), sorted by key."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Return all keys starting with ``prefix`` (recursively), sorted."""
        ...

    def close(self) -> None:
        """Release resources held by the store."""
        ...


def validate_key(key: str) -> str:
    """Return ``key`` if it is a well-formed key, else raise ``ValueError``.

    A key is a non-empty ``/``-separated path with no empty segments, so it may not start
    or end with ``/`` or contain ``//``.
    """
    if not isinstance(key, str):
        raise TypeError(f"KV key must be a str, not {type(key).__name__}")
    if not key:
        raise ValueError("KV key must not be empty")
    if "" in key.split("/"):
        raise ValueError(
            f"invalid KV key {key!r}: it must not start or end with '/' or contain '//'"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a usable listing prefix (``""`` lists everything)."""
    if not isinstance(prefix, str):
        raise TypeError(f"KV prefix must be a str, not {type(prefix).__name__}")
    if prefix.startswith("/") or "//" in prefix:
        raise ValueError(f"invalid KV prefix {prefix!r}: it must not start with '/' or hold '//'")
    return prefix


def check_value(value: bytes) -> bytes:
    """Return ``value`` as ``bytes``; raise ``TypeError`` if it is not bytes-like."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"KV value must be bytes, not {type(value).__name__}")


def _check_cas(cas: int | None) -> None:
    if cas is not None and (isinstance(cas, bool) or not isinstance(cas, int) or cas < 0):
        raise ValueError(f"cas must be None or a non-negative int, not {cas!r}")


def cas_allows_put(current_index: int | None, cas: int | None) -> bool:
    """Whether a put with ``cas`` may proceed, given the key's modify_index (None: absent)."""
    _check_cas(cas)
    if cas is None:
        return True
    if cas == 0:
        return current_index is None
    return current_index == cas


def cas_allows_delete(current_index: int | None, cas: int | None) -> bool:
    """Whether a delete with ``cas`` may proceed, given the key's modify_index (None: absent)."""
    _check_cas(cas)
    return cas is None or current_index is None or current_index == cas


def service_key(service: str, *parts: str) -> str:
    """Return ``fxray/services/<service>/<parts...>``; each part must be one path segment."""
    for part in (service, *parts):
        if not isinstance(part, str):
            raise TypeError(f"key part must be a str, not {type(part).__name__}: {part!r}")
        if not part:
            raise ValueError(f"empty key part in service key {(service, *parts)!r}")
        if "/" in part:
            raise ValueError(f"key part {part!r} must not contain '/'")
    return SERVICES_PREFIX + "/".join((service, *parts))


def config_key(service: str) -> str:
    """Return ``fxray/services/<service>/config``."""
    return service_key(service, CONFIG)


def secrets_key(service: str) -> str:
    """Return ``fxray/services/<service>/secrets``."""
    return service_key(service, SECRETS)


def state_prefix(service: str) -> str:
    """Return ``fxray/services/<service>/state/``."""
    return service_key(service, STATE) + "/"


def _dumps(key: str, value: Any) -> bytes:
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"value for key {key!r} is not JSON-serialisable: {exc}") from exc
    return text.encode()


def get_json(kv: KVStore, key: str, default: Any = None) -> Any:
    """Return the JSON-decoded value of ``key``, or ``default`` if it does not exist."""
    entry = kv.get(key)
    return default if entry is None else json.loads(entry.value)


def put_json(kv: KVStore, key: str, value: Any, cas: int | None = None) -> bool:
    """Store ``value`` as JSON under ``key``; ``TypeError`` if it is not JSON-serialisable."""
    return kv.put(key, _dumps(key, value), cas=cas)


class ServiceState:
    """Persistent key/value state of one service (``context.state`` in service scripts).

    Values are stored as JSON under ``fxray/services/<service>/state/<key>``, so they
    round-trip as JSON types (tuples come back as lists, dict keys as strings).
    """

    def __init__(self, kv: KVStore, service: str) -> None:
        self._kv = kv
        self._service = service
        self._prefix = state_prefix(service)

    @property
    def service(self) -> str:
        return self._service

    def _key(self, key: str) -> str:
        return service_key(self._service, STATE, key)

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it is not set."""
        return get_json(self._kv, self._key(key), default)

    def put(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value`` (must be JSON-serialisable)."""
        self._kv.put(self._key(key), _dumps(key, value))

    def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        self._kv.delete(self._key(key))

    def keys(self) -> list[str]:
        """Return the names of all set keys, sorted."""
        return [k.removeprefix(self._prefix) for k in self._kv.keys(self._prefix)]

    def entry(self, key: str) -> tuple[bool, Any, int]:
        """``(found, value, index)`` of ``key``: the index to give :meth:`put_if` (0: absent)."""
        entry = self._kv.get(self._key(key))
        if entry is None:
            return False, None, 0
        return True, json.loads(entry.value), entry.modify_index

    def put_if(self, key: str, value: Any, index: int) -> bool:
        """Set ``key`` only if it is unchanged since :meth:`entry` gave ``index`` (0: only if
        it is still absent); False on a conflicting write."""
        return self._kv.put(self._key(key), _dumps(key, value), cas=index)

    def update(
        self,
        key: str,
        fn: Callable[[Any], Any],
        default: Any = None,
        retries: int = 100,
    ) -> Any:
        """Atomically replace the value of ``key`` with ``fn(current)`` and return it.

        ``current`` is the stored value, or ``default`` if the key is not set. The write is a
        check-and-set, so concurrent updates from any process are never lost; on a conflict
        the read-modify-write is retried (``fn`` may therefore run more than once and should
        have no side effects). Raises ``RuntimeError`` if the first attempt and all
        ``retries`` retries conflict.
        """
        if retries < 0:
            raise ValueError(f"retries must be >= 0, not {retries}")
        for attempt in range(retries + 1):
            found, current, index = self.entry(key)
            new = fn(current if found else default)
            if self.put_if(key, new, index):
                return new
            if attempt < retries:
                time.sleep(random.uniform(0, min(0.05, 0.0005 * 2**attempt)))
        raise RuntimeError(
            f"state key {key!r} of service {self._service!r}: update gave up after "
            f"{retries + 1} attempts, each conflicting with a concurrent write"
        )

    def __repr__(self) -> str:
        return f"ServiceState(service={self._service!r}, kv={self._kv!r})"
