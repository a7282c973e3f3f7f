"""A **test double** of Consul's KV HTTP API, standard library only. Not Consul.

No Consul can be installed on the test machines, so fxray's Consul adapter is tested against this
server. It follows Consul's documented HTTP API for what fxray and py-consul's KV tests use:

* ``GET /v1/kv/<key>`` with ``?recurse``, ``?keys`` (+ ``?separator``), ``?raw``; answers are
  JSON lists of ``{"Key", "Value" (base64, ``null`` when empty), "Flags", "CreateIndex",
  "ModifyIndex", "LockIndex", "Session"}``; 404 for a missing key or an empty listing; an
  ``X-Consul-Index`` header on every read.
* blocking queries: ``?index=N&wait=5s`` answers at once if the result's index is above ``N``,
  else when a key under the queried key/prefix changes, else at the end of the wait. The index
  is Consul's: a key's ``ModifyIndex``, or for a missing key the store's index; a listing's is
  the highest ``ModifyIndex`` or deletion index under the prefix.
* ``PUT /v1/kv/<key>`` with ``?cas=<index>`` (0: create only), ``?flags``; ``DELETE`` with
  ``?cas`` and ``?recurse``; writes answer ``true``/``false``. Values over 512 KiB: 413.
* ``/v1/status/leader`` and ``/v1/status/peers``.
* ACLs, simplified: started with ``token``, a request carrying that token (``X-Consul-Token``,
  ``Authorization: Bearer`` or ``?token=``) may do anything; a request with another token gets
  403 "ACL not found"; a request without a token is *anonymous*: it may read and write anything
  except under ``deny_prefixes``, where reads answer 403, writes answer 403 and listings leave
  the keys out (as Consul filters listings by ACL).

Not implemented: sessions (``acquire``/``release`` answer 400), transactions, datacenters,
consistency modes (accepted and ignored), tombstone reaping.

Run it from a test (``with ConsulTestServer() as server: ... server.url``) or on its own::

    python tests/consul_server.py --port 18500 [--token T --deny-prefix fxray/prod/secrets/]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["ConsulTestServer", "Request"]

MAX_VALUE_BYTES = 512 * 1024
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0
_DURATION = re.compile(r"([\d.]+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(slots=True)
class _Entry:
    key: str
    value: bytes
    flags: int
    create_index: int
    modify_index: int

    def to_json(self) -> dict[str, Any]:
        return {
            "Key": self.key,
            "Value": base64.b64encode(self.value).decode() if self.value else None,
            "Flags": self.flags,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
            "LockIndex": 0,
            "Session": "",
        }


@dataclass(frozen=True, slots=True)
class Request:
    """One request the server answered (for tests that count calls)."""

    method: str
    path: str  # /v1/kv/<key> decoded, or another endpoint's path
    params: dict[str, str]
    token: str | None
    status: int = 0

    @property
    def key(self) -> str | None:
        return self.path.removeprefix("/v1/kv/") if self.path.startswith("/v1/kv/") else None

    @property
    def blocking(self) -> bool:
        return self.method == "GET" and int(self.params.get("index") or 0) > 0


@dataclass
class _Store:
    """The KV data and its raft-like index; every method runs under ``cond``."""

    token: str | None
    deny_prefixes: tuple[str, ...]
    cond: threading.Condition = field(default_factory=threading.Condition)
    data: dict[str, _Entry] = field(default_factory=dict)
    index: int = 1  # as if raft held one entry: the first write gets 2, never the empty index
    changed: dict[str, int] = field(default_factory=dict)  # key -> index of last write/delete
    requests: list[Request] = field(default_factory=list)
    closing: bool = False

    def _bump(self, keys: Iterable[str]) -> int:
        self.index += 1
        for key in keys:
            self.changed[key] = self.index
        self.cond.notify_all()
        return self.index

    def put(self, key: str, value: bytes, flags: int | None, cas: int | None) -> bool:
        current = self.data.get(key)
        if cas is not None:
            if cas == 0 and current is not None:
                return False
            if cas > 0 and (current is None or current.modify_index != cas):
                return False
        index = self._bump([key])
        if current is None:
            self.data[key] = _Entry(key, value, flags or 0, index, index)
        else:
            current.value = value
            current.modify_index = index
            if flags is not None:
                current.flags = flags
        return True

    def delete(self, key: str, recurse: bool, cas: int | None) -> bool:
        if recurse:
            doomed = [k for k in self.data if k.startswith(key)]
        else:
            current = self.data.get(key)
            if current is None:
                return True
            if cas is not None and current.modify_index != cas:
                return False
            doomed = [key]
        if doomed:
            self._bump(doomed)
            for k in doomed:
                del self.data[k]
        return True

    def result_index(self, key: str, prefix: bool) -> int:
        """The ``X-Consul-Index`` of a read, as Consul computes it."""
        if prefix:
            if key == "":
                return self.index
            indexes = [i for k, i in self.changed.items() if k.startswith(key)]
            return max([*indexes, 0]) or self.index
        entry = self.data.get(key)
        return entry.modify_index if entry is not None else self.index

    def changed_since(self, seen: int, key: str, prefix: bool) -> bool:
        if prefix:
            return any(i > seen for k, i in self.changed.items() if k.startswith(key))
        return self.changed.get(key, 0) > seen

    def block(self, key: str, prefix: bool, min_index: int, wait_s: float) -> None:
        """Hold a blocking query until its index passes ``min_index`` or the wait ends."""
        deadline = time.monotonic() + wait_s
        while not self.closing and self.result_index(key, prefix) <= min_index:
            seen = self.index
            while not self.closing and not self.changed_since(seen, key, prefix):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.cond.wait(remaining)


def _parse_duration(text: str) -> float:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * _UNITS[u] for n, u in parts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read ``ConsulTestServer.requests`` instead

    # -- plumbing ---------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes | str | Any = b"",
        *,
        index: int | None = None,
        content_type: str = "application/json",
    ) -> None:
        if isinstance(body, str):
            payload = body.encode()
            content_type = "text/plain; charset=utf-8"
        elif isinstance(body, bytes):
            payload = body
        else:
            payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if index is not None:
            self.send_header("X-Consul-Index", str(index))
            self.send_header("X-Consul-KnownLeader", "true")
            self.send_header("X-Consul-LastContact", "0")
        self.end_headers()
        self.wfile.write(payload)
        self._status = status

    def _parse(self) -> tuple[str, dict[str, str], str | None]:
        parts = urlsplit(self.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        params = {name: values[-1] for name, values in query.items()}
        token = self.headers.get("X-Consul-Token") or params.pop("token", None)
        auth = self.headers.get("Authorization", "")
        if not token and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        return unquote(parts.path), params, token or None

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self, method: str) -> None:
        self._status = 0
        path, params, token = self._parse()
        body = self._body()
        store = self.server.store
        try:
            self._route(method, path, params, token, body)
        except (ValueError, KeyError) as exc:
            self._send(400, f"bad request: {exc}")
        finally:
            with store.cond:
                store.requests.append(Request(method, path, params, token, self._status))

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_POST(self) -> None:
        self._handle("POST")

    # -- ACL --------------------------------------------------------------------------------

    def _privileged(self, token: str | None) -> bool | None:
        """True: may do anything; False: anonymous; None: a token Consul does not know."""
        store = self.server.store
        if store.token is None or token == store.token:
            return True
        return None if token else False

    def _denied(self, key: str, privileged: bool) -> bool:
        return not privileged and any(key.startswith(p) for p in self.server.store.deny_prefixes)

    # -- routes -----------------------------------------------------------------------------

    def _route(
        self, method: str, path: str, params: dict[str, str], token: str | None, body: bytes
    ) -> None:
        if path == "/v1/status/leader" and method == "GET":
            return self._send(200, json.dumps("127.0.0.1:8300").encode())
        if path == "/v1/status/peers" and method == "GET":
            return self._send(200, ["127.0.0.1:8300"])
        if not path.startswith("/v1/kv/"):
            return self._send(404, f"no such endpoint: {method} {path}")
        privileged = self._privileged(token)
        if privileged is None:
            return self._send(403, "ACL not found")
        key = path[len("/v1/kv/") :]
        if method == "GET":
            return self._get(key, params, privileged)
        if method == "PUT":
            return self._put(key, params, privileged, body)
        if method == "DELETE":
            return self._delete(key, params, privileged)
        return self._send(405, f"method {method} not allowed")

    def _get(self, key: str, params: dict[str, str], privileged: bool) -> None:
        store = self.server.store
        listing = "recurse" in params or "keys" in params
        min_index = int(params.get("index") or 0)
        wait_s = min(_parse_duration(params["wait"]), MAX_WAIT_S) if "wait" in params else None
        with store.cond:
            if min_index > 0:
                store.block(key, listing, min_index, DEFAULT_WAIT_S if wait_s is None else wait_s)
            index = store.result_index(key, listing)
            if not listing:
                if self._denied(key, privileged):
                    return self._send(403, "Permission denied")
                entry = store.data.get(key)
                if entry is None:
                    return self._send(404, b"", index=index)
                if "raw" in params:
                    return self._send(
                        200, entry.value, index=index, content_type="application/octet-stream"
                    )
                return self._send(200, [entry.to_json()], index=index)
            entries = sorted(
                (e for k, e in store.data.items() if k.startswith(key)), key=lambda e: e.key
            )
            entries = [e for e in entries if not self._denied(e.key, privileged)]
            if "keys" in params:
                keys = [e.key for e in entries]
                separator = params.get("separator")
                if separator:
                    keys = sorted({_up_to(k, key, separator) for k in keys})
                answer: Any = keys
            else:
                answer = [e.to_json() for e in entries]
        if not answer:
            return self._send(404, b"", index=index)
        return self._send(200, answer, index=index)

    def _put(self, key: str, params: dict[str, str], privileged: bool, body: bytes) -> None:
        if not key:
            return self._send(400, "Missing key name")
        if "acquire" in params or "release" in params:
            return self._send(400, "sessions are not supported by this Consul test double")
        if len(body) > MAX_VALUE_BYTES:
            return self._send(413, f"Request body too large, max size: {MAX_VALUE_BYTES} bytes")
        if self._denied(key, privileged):
            return self._send(403, "Permission denied")
        cas = int(params["cas"]) if "cas" in params else None
        flags = int(params["flags"]) if "flags" in params else None
        if (cas is not None and cas < 0) or (flags is not None and not 0 <= flags < 2**64):
            raise ValueError("cas and flags must be unsigned integers")
        store = self.server.store
        with store.cond:
            done = store.put(key, body, flags, cas)
        self._send(200, done)

    def _delete(self, key: str, params: dict[str, str], privileged: bool) -> None:
        recurse = "recurse" in params
        if not key and not recurse:
            return self._send(400, "Missing key name")
        overlaps = any(
            p.startswith(key) or key.startswith(p) for p in self.server.store.deny_prefixes
        )
        if not privileged and (overlaps if recurse else self._denied(key, privileged)):
            return self._send(403, "Permission denied")
        cas = int(params["cas"]) if "cas" in params else None
        store = self.server.store
        with store.cond:
            done = store.delete(key, recurse, cas)
        self._send(200, done)


def _up_to(key: str, prefix: str, separator: str) -> str:
    """``?keys&separator``: a key cut after the first separator that follows the prefix."""
    cut = key.find(separator, len(prefix))
    return key if cut < 0 else key[: cut + len(separator)]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: _Store) -> None:
        super().__init__(address, _Handler)
        self.store = store
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:  # before the handler thread starts, so stop() sees it
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that went away mid-answer (a blocking query whose caller was stopped, a node
        # killed by a test) is normal for a server; anything else is printed as usual
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Cut every open connection, as a server that goes down does (keep-alive included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class ConsulTestServer:
    """The test double, served from a background thread; use as a context manager."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        deny_prefixes: Iterable[str] = (),
    ) -> None:
        self._store = _Store(token=token, deny_prefixes=tuple(deny_prefixes))
        self._server = _Server((host, port), self._store)
        self._thread: threading.Thread | None = None
        self._serving = False

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def deny_prefixes(self) -> tuple[str, ...]:
        """Key prefixes that requests without the token may not read or write."""
        with self._store.cond:
            return self._store.deny_prefixes

    @deny_prefixes.setter
    def deny_prefixes(self, prefixes: Iterable[str]) -> None:
        with self._store.cond:
            self._store.deny_prefixes = tuple(prefixes)

    @property
    def index(self) -> int:
        """The store's current write index."""
        with self._store.cond:
            return self._store.index

    @property
    def requests(self) -> list[Request]:
        """Every request answered so far, oldest first."""
        with self._store.cond:
            return list(self._store.requests)

    def clear_requests(self) -> None:
        with self._store.cond:
            self._store.requests.clear()

    def start(self) -> ConsulTestServer:
        """Serve from a daemon thread."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.1},
                name="consul-test-double",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`stop` is called from another one."""
        self._serving = True
        self._server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop serving; blocking queries still held answer at once."""
        with self._store.cond:
            self._store.closing = True
            self._store.cond.notify_all()
        if self._serving:
            self._serving = False
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._server.drop_connections()
        self._server.server_close()

    def __enter__(self) -> ConsulTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Consul KV API test double (not Consul).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--token", default=None, help="the one token allowed everything")
    parser.add_argument(
        "--deny-prefix",
        action="append",
        default=[],
        help="key prefix that requests without a token may not read or write (repeatable)",
    )
    args = parser.parse_args(argv)
    server = ConsulTestServer(
        args.host, args.port, token=args.token, deny_prefixes=args.deny_prefix
    )
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.stop).start())
    print(f"Consul KV test double listening on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
