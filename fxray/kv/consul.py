"""Consul as the key/value store: :class:`ConsulKV`, over py-consul (``pip install py-consul``).

Key layout in Consul. Everything of one installation lives under ``fxray/<instance>/``; the
logical keys of :mod:`fxray.kv` (``fxray/...``) map onto it, except that service secrets get a
subtree of their own, so that one ACL rule protects all of them (Consul's ACL rules match key
prefixes only, so ``.../services/<service>/secrets`` would need a rule per service)::

    fxray/<instance>/settings                        platform settings, redacted JSON (at start)
    fxray/<instance>/services/<service>/config       live config overrides (JSON)
    fxray/<instance>/services/<service>/state/<key>  ``context.state``, one JSON value a key
    fxray/<instance>/secrets/<service>               live secret overrides (JSON)

That is, the logical key ``fxray/<rest>`` is stored at ``fxray/<instance>/<rest>``, and the
logical key ``fxray/services/<service>/secrets`` at ``fxray/<instance>/secrets/<service>``.
Logical keys under ``fxray/secrets/`` are therefore reserved (refused with ``ValueError``); keys
outside ``fxray/`` (the platform uses none) are stored as they are. Service names are unique in
an installation and a service can move between projects, so the layout has no project level.
See docs/consul.md for ACLs and the watch.

Semantics are those of :class:`~fxray.kv.KVStore`, which were modelled on Consul's: ``cas=0`` is
Consul's create-only ``?cas=0``, ``cas=N`` is ``?cas=N`` against the key's ``ModifyIndex``, and
``KVEntry.modify_index`` / ``create_index`` are Consul's ``ModifyIndex`` / ``CreateIndex``.
:meth:`ConsulKV.watch_key` and :meth:`ConsulKV.watch` are Consul blocking queries.
"""

from __future__ import annotations

import os
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import consul

from fxray.kv import (
    ROOT,
    SECRETS,
    SERVICES_PREFIX,
    SETTINGS_KEY,
    KVEntry,
    KVStore,
    _check_cas,
    check_value,
    put_json,
    validate_key,
    validate_prefix,
)

if TYPE_CHECKING:
    from fxray.settings import Settings

__all__ = ["DEFAULT_WAIT_S", "ConsulKV", "published_settings"]

DEFAULT_WAIT_S = 60.0
"""How long a blocking query waits for a change before it answers anyway."""

_ROOT = ROOT + "/"
_INSTANCE = re.compile(r"^[A-Za-z0-9_-]+$")
_SECRET_WORDS = ("password", "secret", "token", "key", "credential")


class ConsulKV(KVStore):
    """A :class:`~fxray.kv.KVStore` in Consul's KV store, for one fxray ``instance``.

    Each thread gets its own py-consul client. Pickling keeps only the address, the token, the
    instance and the TLS and timeout options, so an instance can be passed to Ray actors. With
    ``token=None`` py-consul falls back to the ``CONSUL_HTTP_TOKEN`` environment variable.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8500",
        *,
        token: str | None = None,
        instance: str = "default",
        verify: bool | str = True,
        timeout_s: float = 10.0,
    ) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Consul URL must be http(s)://host[:port], not {url!r}")
        if not _INSTANCE.match(instance):
            raise ValueError(f"instance must match {_INSTANCE.pattern}, not {instance!r}")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._token = token
        self._instance = instance
        self._verify = verify
        self._timeout_s = timeout_s
        self._root = f"{ROOT}/{instance}"
        self._secrets_root = f"{self._root}/{SECRETS}/"
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[consul.Consul] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> ConsulKV:
        """The platform's store; also writes the (redacted) settings to ``<root>/settings``."""
        kv = cls(settings.consul_url, token=settings.consul_token, instance=settings.instance)
        put_json(kv, SETTINGS_KEY, published_settings(settings))
        return kv

    # -- identity and pickling ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self._scheme}://{self._host}:{self._port}"

    @property
    def instance(self) -> str:
        return self._instance

    @property
    def root(self) -> str:
        """The Consul folder of this installation: ``fxray/<instance>``."""
        return self._root

    def __getstate__(self) -> dict[str, Any]:
        return {
            "scheme": self._scheme,
            "host": self._host,
            "port": self._port,
            "token": self._token,
            "instance": self._instance,
            "verify": self._verify,
            "timeout_s": self._timeout_s,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            f"{state['scheme']}://{state['host']}:{state['port']}",
            token=state["token"],
            instance=state["instance"],
            verify=state["verify"],
            timeout_s=state["timeout_s"],
        )

    def __repr__(self) -> str:
        token = ", token=<hidden>" if self._token else ""
        return f"ConsulKV({self.url!r}, instance={self._instance!r}{token})"

    def _client(self) -> consul.Consul:
        if self._pid != os.getpid():
            self._reset()  # forked: the parent's HTTP sessions stay with the parent
        client: consul.Consul | None = getattr(self._local, "client", None)
        if client is None:
            client = consul.Consul(
                host=self._host,
                port=self._port,
                scheme=self._scheme,
                token=self._token,
                verify=self._verify,
                connections_timeout=self._timeout_s,
            )
            if self._token is not None:
                client.token = self._token  # py-consul prefers CONSUL_HTTP_TOKEN otherwise
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    # -- key mapping --------------------------------------------------------------------------

    def consul_key(self, key: str) -> str:
        """Where the logical ``key`` is stored in Consul."""
        validate_key(key)
        if not key.startswith(_ROOT):
            return key
        rest = key[len(_ROOT) :]
        parts = rest.split("/")
        if parts[0] == SECRETS:
            raise ValueError(
                f"KV key {key!r} is reserved: ConsulKV keeps service secrets under "
                f"{self._secrets_root}"
            )
        if len(parts) == 3 and f"{_ROOT}{parts[0]}/" == SERVICES_PREFIX and parts[2] == SECRETS:
            return self._secrets_root + parts[1]
        return f"{self._root}/{rest}"

    def _logical_key(self, consul_key: str) -> str | None:
        """The logical key stored at ``consul_key``; None if it is not one of this store's."""
        if consul_key.startswith(self._root + "/"):
            if consul_key.startswith(self._secrets_root):
                service = consul_key[len(self._secrets_root) :]
                if not service or "/" in service:
                    return None
                return f"{SERVICES_PREFIX}{service}/{SECRETS}"
            rest = consul_key[len(self._root) + 1 :]
            if rest == SECRETS:
                return None
            key = _ROOT + rest
        elif consul_key.startswith(_ROOT):
            return None  # another installation's key
        else:
            key = consul_key
        return key if _is_valid_key(key) else None

    def _scans(self, prefix: str) -> list[str]:
        """Consul prefixes that together hold every logical key starting with ``prefix``."""
        if not prefix.startswith(_ROOT):
            return [prefix]
        scans = [f"{self._root}/{prefix[len(_ROOT) :]}"]
        if SERVICES_PREFIX.startswith(prefix):
            scans.append(self._secrets_root)
        elif prefix.startswith(SERVICES_PREFIX):
            service, slash, after = prefix[len(SERVICES_PREFIX) :].partition("/")
            if not slash or SECRETS.startswith(after):
                scans.append(self._secrets_root + service)
        kept: list[str] = []
        for scan in sorted(scans, key=len):
            if not any(scan.startswith(k) for k in kept):
                kept.append(scan)
        return kept

    # -- KVStore ------------------------------------------------------------------------------

    def get(self, key: str) -> KVEntry | None:
        _, data = self._client().kv.get(self.consul_key(key))
        return None if data is None else _entry(key, data)

    def put(self, key: str, value: bytes, cas: int | None = None) -> bool:
        target = self.consul_key(key)
        value = check_value(value)
        _check_cas(cas)
        return bool(self._client().kv.put(target, value, cas=cas))

    def delete(self, key: str, cas: int | None = None) -> bool:
        target = self.consul_key(key)
        _check_cas(cas)
        return bool(self._client().kv.delete(target, cas=cas))

    def list(self, prefix: str) -> list[KVEntry]:
        found = self._list(prefix, keys_only=False)
        return [_entry(key, data) for key, data in found]

    def keys(self, prefix: str) -> list[str]:
        return [key for key, _ in self._list(prefix, keys_only=True)]

    def _list(self, prefix: str, *, keys_only: bool) -> list[tuple[str, Any]]:
        validate_prefix(prefix)
        client = self._client()
        found: dict[str, Any] = {}
        for scan in self._scans(prefix):
            _, data = client.kv.get(scan, recurse=not keys_only, keys=keys_only)
            for item in data or ():
                key = self._logical_key(item if keys_only else item["Key"])
                if key is not None and key.startswith(prefix):
                    found[key] = item
        return sorted(found.items())

    def close(self) -> None:
        """Close this process's HTTP sessions; the store reconnects lazily if used again."""
        if self._pid != os.getpid():
            self._reset()
            return
        with self._lock:
            clients, self._clients = self._clients, []
            self._local = threading.local()
        for client in clients:
            client.http.session.close()

    # -- blocking queries ---------------------------------------------------------------------

    def watch_key(
        self, key: str, index: int = 0, wait_s: float = DEFAULT_WAIT_S
    ) -> tuple[int, KVEntry | None]:
        """Consul blocking query on one key: ``(new_index, entry or None)``.

        With ``index=0`` it answers at once; otherwise when Consul's index for the key passes
        ``index`` (the key changed) or after ``wait_s``. The new index may change without the
        value changing (Consul's documented behaviour); pass it to the next call.
        """
        new_index, data = self._client().kv.get(
            self.consul_key(key), index=index or None, wait=_wait(wait_s)
        )
        return int(new_index), (None if data is None else _entry(key, data))

    def watch(
        self, prefix: str, index: int = 0, wait_s: float = DEFAULT_WAIT_S
    ) -> tuple[int, list[KVEntry]]:
        """Consul blocking query on a prefix: ``(new_index, the prefix's entries)``.

        Like :meth:`watch_key`, for every key under ``prefix``. The prefix must lie in one
        Consul subtree: it may not span both the secrets subtree and other keys (watch those
        keys with :meth:`watch_key`), else ``ValueError``.
        """
        validate_prefix(prefix)
        scans = self._scans(prefix)
        if len(scans) != 1:
            raise ValueError(
                f"prefix {prefix!r} spans the secrets subtree and other keys; watch them apart"
            )
        new_index, data = self._client().kv.get(
            scans[0], recurse=True, index=index or None, wait=_wait(wait_s)
        )
        entries = []
        for item in data or ():
            key = self._logical_key(item["Key"])
            if key is not None and key.startswith(prefix):
                entries.append(_entry(key, item))
        return int(new_index), sorted(entries, key=lambda e: e.key)


def _is_valid_key(key: str) -> bool:
    """Whether ``key`` is a well-formed logical key (Consul also holds keys like ``a/``)."""
    return bool(key) and "" not in key.split("/")


def _entry(key: str, data: dict[str, Any]) -> KVEntry:
    value = data.get("Value") or b""  # Consul answers null for an empty value
    return KVEntry(key, bytes(value), int(data["ModifyIndex"]), int(data["CreateIndex"]))


def _wait(wait_s: float) -> str:
    if wait_s <= 0:
        raise ValueError(f"wait_s must be > 0, not {wait_s}")
    return f"{max(1, round(wait_s * 1000))}ms"


def published_settings(settings: Settings) -> dict[str, Any]:
    """The settings written to Consul: no Consul token, no admin key, other secrets masked.

    Values of fields (and of Kafka properties) whose names mention a password, secret, token,
    key or credential become ``"***"``; passwords in URLs too.
    """
    data = settings.public_dict()
    data.pop("consul_token", None)
    data.pop("admin_key", None)
    return {name: _redact(name, value) for name, value in data.items()}


def _redact(name: str, value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact(str(k), v) for k, v in value.items()}
    if value is not None and any(word in name.lower() for word in _SECRET_WORDS):
        return "***"
    if isinstance(value, str) and "@" in value and "://" in value:
        return _hide_url_password(value)
    return value


def _hide_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
