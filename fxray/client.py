"""A Python client for the fxray Management API (``/api/v1``), used by the ``fxray`` CLI.

::

    from fxray.client import FxrayClient

    with FxrayClient("http://127.0.0.1:8080", key="fxk_...") as api:
        api.push_service("examples/order-intake", label="v1")
        api.add_trigger("shop.order.placed", "order-intake")
        event_id = api.send_event("shop.order.placed", {"order_id": "A-1"}, source="shop/web")
        run = api.runs(correlation_id=event_id)[0]
        for line in api.follow_logs(run["id"]):
            print(line["level"], line["message"])

The URL and key default to the ``FXRAY_API_URL`` (``http://127.0.0.1:8080``) and
``FXRAY_API_KEY`` environment variables. Every refused request raises :class:`ApiError` with the
server's message (and its list of problems, if any); an API that cannot be reached raises an
:class:`ApiError` with ``status`` 0.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"
API_PREFIX = "/api/v1"
URL_ENV = "FXRAY_API_URL"
KEY_ENV = "FXRAY_API_KEY"

CLOUDEVENTS_JSON = "application/cloudevents+json"
CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"

UNREACHABLE = 0  # ApiError.status when no HTTP answer came back
PAGE_LIMIT = 500  # the API's largest page


class ApiError(Exception):
    """The API refused a request (``status`` is the HTTP status), or could not be reached
    (``status`` 0). ``message`` is the server's message; ``problems`` lists what was invalid."""

    def __init__(
        self,
        status: int,
        message: str,
        problems: list[Any] | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.problems = list(problems or [])
        self.code = code
        super().__init__(self.describe())

    def describe(self) -> str:
        """The message and every problem, on one line."""
        if not self.problems:
            return self.message
        return f"{self.message}: " + "; ".join(_problem_text(p) for p in self.problems)


def _problem_text(problem: Any) -> str:
    if isinstance(problem, Mapping):
        where = problem.get("location") or problem.get("loc") or problem.get("field")
        what = problem.get("message") or problem.get("msg") or json.dumps(problem, default=str)
        if isinstance(where, list | tuple):
            where = ".".join(str(part) for part in where)
        return f"{where}: {what}" if where else str(what)
    return str(problem)


# -- Server-Sent Events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One Server-Sent Event: its name (``message`` unless set), data lines joined, id."""

    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


def iter_sse(chunks: Iterable[str | bytes]) -> Iterator[SseEvent]:
    """Parse Server-Sent Events from a stream of text or bytes chunks (as the HTML standard
    says; chunk boundaries may fall anywhere, bytes are UTF-8).

    Lines end with CRLF, LF or CR; a blank line ends an event; ``data:`` lines accumulate
    (joined with newlines); a line starting with ``:`` is a comment (heartbeat) and is skipped;
    one space after the colon is dropped; a field without a colon has an empty value; an event
    without data is not dispatched. An unfinished event at the end of the stream is dropped,
    as browsers do.
    """
    event = ""
    data: list[str] = []
    has_data = False
    last_id: str | None = None
    retry: int | None = None
    for number, line in enumerate(_sse_lines(chunks)):
        if number == 0:
            line = line.removeprefix("\ufeff")
        if not line:
            if has_data:
                yield SseEvent(event or "message", "\n".join(data), last_id, retry)
            event, data, has_data, retry = "", [], False, None
            continue
        if line.startswith(":"):
            continue
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
            has_data = True
        elif name == "event":
            event = value
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)


_LINE_END = re.compile(r"\r\n|\r|\n")


def _sse_lines(chunks: Iterable[str | bytes]) -> Iterator[str]:
    """Split a chunked stream into lines at CRLF, LF or CR only (not at other Unicode
    line breaks, which may sit inside JSON strings)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    buffer = ""
    for chunk in chunks:
        text = decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        if not text:
            continue
        buffer += text
        held = buffer.endswith("\r")  # maybe the first half of a CRLF split across chunks
        parts = _LINE_END.split(buffer[:-1] if held else buffer)
        buffer = parts.pop() + ("\r" if held else "")
        yield from parts
    buffer += decoder.decode(b"", final=True)
    parts = _LINE_END.split(buffer)
    yield from parts[:-1] if parts[-1] == "" else parts


# -- the client -------------------------------------------------------------------------------


class FxrayClient:
    """The fxray Management API over HTTP (httpx). Use it as a context manager, or ``close()``."""

    def __init__(
        self,
        url: str | None = None,
        key: str | None = None,
        timeout: float = 30,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from fxray._version import __version__

        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
        if self.url.endswith(API_PREFIX):
            self.url = self.url[: -len(API_PREFIX)]
        self.key = key if key is not None else os.environ.get(KEY_ENV) or None
        self.timeout = timeout
        headers = {"User-Agent": f"fxray-client/{__version__}", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        try:
            self._http = httpx.Client(
                base_url=self.url + API_PREFIX,
                headers=headers,
                timeout=timeout,
                transport=transport,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise ApiError(UNREACHABLE, f"invalid API URL {self.url!r}: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FxrayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FxrayClient({self.url!r})"

    # -- platform -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Liveness (needs no key): ``{"status": "ok", "version", ...}``."""
        return self._call("GET", "/health")

    def info(self) -> dict[str, Any]:
        """The installation (version, instance, event bus, dashboard) and the calling key."""
        return self._call("GET", "/info")

    def status(self) -> dict[str, Any]:
        """What runs where (platform-wide admin key): Ray nodes, routers, executors per version
        with their scaling bounds, backlog and last decision."""
        return self._call("GET", "/status")

    def scale(
        self,
        service: str,
        version: str,
        *,
        project: str | None = None,
        **override: int | None,
    ) -> dict[str, Any]:
        """Override a version's ``min_executors``, ``max_executors``, ``target_backlog``
        (None drops one); returns the manifest's values and the override."""
        path = f"/services/{_seg(service)}/versions/{_seg(version)}/scaling"
        return self._call("PUT", path, json=override, params=_clean({"project": project}))

    # -- projects and keys --------------------------------------------------------------------

    def list_projects(self, *, limit: int | None = None, offset: int | None = None) -> list[Any]:
        return self._list("/projects", limit=limit, offset=offset)

    def create_project(self, name: str, description: str = "") -> dict[str, Any]:
        return self._call("POST", "/projects", json={"name": name, "description": description})

    def list_keys(
        self, project: str, *, limit: int | None = None, offset: int | None = None
    ) -> list[Any]:
        return self._list(f"/projects/{_seg(project)}/keys", limit=limit, offset=offset)

    def create_key(self, project: str, name: str, role: str = "viewer") -> dict[str, Any]:
        """A new key in ``project``: ``{"key": {...}, "token": "..."}`` (the token shown once)."""
        return self._call(
            "POST", f"/projects/{_seg(project)}/keys", json={"name": name, "role": role}
        )

    # -- services -----------------------------------------------------------------------------

    def push_service(
        self,
        path: str | Path | bytes,
        label: str | None = None,
        project: str | None = None,
    ) -> dict[str, Any]:
        """Deploy a service package: a folder (validated and zipped here), a .zip file or zip
        bytes. Returns ``{"service", "version", "created", "triggers"}``."""
        archive, filename = _package_zip(path)
        form = {k: v for k, v in (("label", label), ("project", project)) if v is not None}
        files = {"file": (filename, archive, "application/zip")}
        return self._call("POST", "/services", data=form, files=files)

    def list_services(
        self,
        project: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        **filters: Any,
    ) -> list[Any]:
        return self._list("/services", project=project, limit=limit, offset=offset, **filters)

    def get_service(self, name: str, project: str | None = None) -> dict[str, Any]:
        """The service ``name`` of the key's project (``project``: for a platform-wide key,
        where several projects have a service of that name)."""
        return self._call("GET", f"/services/{_seg(name)}", params=_clean({"project": project}))

    def set_active(
        self, name: str, active: bool = True, project: str | None = None
    ) -> dict[str, Any]:
        """Activate or deactivate a service (takes effect in the routers within a second)."""
        return self._call(
            "PATCH",
            f"/services/{_seg(name)}",
            json={"active": active},
            params=_clean({"project": project}),
        )

    def list_versions(
        self,
        name: str,
        *,
        project: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Any]:
        return self._list(
            f"/services/{_seg(name)}/versions", project=project, limit=limit, offset=offset
        )

    # -- triggers -----------------------------------------------------------------------------

    def add_trigger(
        self,
        pattern: str,
        service: str,
        *,
        filters: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        shadow_version: str | None = None,
        ordered: bool = False,
        project: str | None = None,
    ) -> dict[str, Any]:
        """Link events whose type matches ``pattern`` (exact or glob) to ``service`` (a name in
        the key's project, or in ``project``)."""
        body: dict[str, Any] = {"pattern": pattern, "service": service, "ordered": ordered}
        if project is not None:
            body["project"] = project
        if filters:
            body["filters"] = dict(filters)
        if weights:
            body["weights"] = dict(weights)
        if shadow_version:
            body["shadow_version"] = shadow_version
        return self._call("POST", "/triggers", json=body)

    link = add_trigger

    def list_triggers(
        self,
        service: str | None = None,
        *,
        project: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[Any]:
        return self._list("/triggers", service=service, project=project, limit=limit, offset=offset)

    def remove_trigger(self, trigger_id: str) -> None:
        self._call("DELETE", f"/triggers/{_seg(trigger_id)}")

    unlink = remove_trigger

    # -- events -------------------------------------------------------------------------------

    def send_event(
        self,
        type: str,
        data: Any = None,
        *,
        source: str = "fxray/client",
        **attributes: Any,
    ) -> str:
        """Send one CloudEvent (built and validated here); returns its id."""
        from fxray.events.cloudevent import new_event

        event = new_event(type, data, source=source, **attributes)
        ids = self.send_events([event], batch=False)
        return str(ids[0]) if ids else str(event["id"])

    def send_events(self, events: list[Mapping[str, Any]], *, batch: bool = True) -> list[str]:
        """Send structured CloudEvents (a batch, or one event with ``batch=False``)."""
        from fxray.events.cloudevent import to_json

        if batch:
            content = json.dumps([json.loads(to_json(dict(e))) for e in events]).encode()
            content_type = CLOUDEVENTS_BATCH
        else:
            if len(events) != 1:
                raise ValueError("batch=False sends exactly one event")
            content, content_type = to_json(dict(events[0])), CLOUDEVENTS_JSON
        answer = self._call(
            "POST", "/events", content=content, headers={"Content-Type": content_type}
        )
        return list(answer.get("ids", [])) if isinstance(answer, Mapping) else []

    # -- runs ---------------------------------------------------------------------------------

    def run(
        self,
        service: str,
        params: Mapping[str, Any] | None = None,
        version: str | None = None,
        priority: int | None = None,
        project: str | None = None,
    ) -> dict[str, Any]:
        """Start a manual run: ``{"event_id", "run_id"}`` (the run is queued)."""
        body: dict[str, Any] = {"params": dict(params or {})}
        if version is not None:
            body["version"] = version
        if priority is not None:
            body["priority"] = priority
        return self._call(
            "POST",
            f"/services/{_seg(service)}/runs",
            json=body,
            params=_clean({"project": project}),
        )

    def runs(
        self,
        service: str | None = None,
        status: str | None = None,
        correlation_id: str | None = None,
        *,
        limit: int | None = None,
        offset: int | None = None,
        **filters: Any,
    ) -> list[Any]:
        """Runs, newest first, filtered (``service``, ``status``, ``correlation_id``...)."""
        return self._list(
            "/runs",
            service=service,
            status=status,
            correlation_id=correlation_id,
            limit=limit,
            offset=offset,
            **filters,
        )

    def get_run(self, run_id: str) -> dict[str, Any]:
        """A run's detail: trigger event, version, steps, result, error and logs."""
        return self._call("GET", f"/runs/{_seg(run_id)}")

    def logs(self, run_id: str) -> list[Any]:
        """All of a run's log lines so far, oldest first (every page)."""
        path = f"/runs/{_seg(run_id)}/logs"
        lines: list[Any] = []
        while True:
            answer = self._call("GET", path, params={"limit": PAGE_LIMIT, "offset": len(lines)})
            page = _items(answer)
            lines.extend(page)
            total = answer.get("total") if isinstance(answer, Mapping) else None
            if not page or not isinstance(total, int) or len(lines) >= total:
                return lines

    def follow_logs(self, run_id: str, *, reconnects: int = 5) -> Iterator[Any]:
        """The run's log lines as they come (each a decoded JSON value), ending when the run
        finishes (the server's ``end`` event).

        A stream that drops before the end is resumed after the last line seen
        (``Last-Event-ID``), up to ``reconnects`` times in a row.
        """
        last_id: str | None = None
        failures = 0
        while True:
            yielded = False
            problem: ApiError | None = None
            try:
                for event in self._log_events(run_id, last_id):
                    if event.event == "end":
                        return
                    if event.event not in ("message", "log"):
                        continue
                    last_id = event.id if event.id is not None else last_id
                    yielded, failures = True, 0
                    try:
                        yield json.loads(event.data)
                    except json.JSONDecodeError:
                        yield event.data
            except ApiError as exc:
                if exc.status != UNREACHABLE or (last_id is None and not yielded and not failures):
                    raise  # refused, or never connected: nothing to resume
                problem = exc
            failures += 1
            if (yielded and last_id is None) or failures > reconnects:
                raise problem or ApiError(
                    UNREACHABLE, f"the log stream of run {run_id!r} ended before the run did"
                )
            time.sleep(min(0.5 * failures, 3.0))

    def _log_events(self, run_id: str, last_id: str | None) -> Iterator[SseEvent]:
        path = f"/runs/{_seg(run_id)}/logs/stream"
        timeout = httpx.Timeout(self.timeout, read=None)  # a quiet run is not an error
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        with (
            self._guard(),
            self._http.stream("GET", path, headers=headers, timeout=timeout) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise self._error(response)
            for event in iter_sse(response.iter_bytes()):
                if event.event == "error":
                    raise ApiError(response.status_code, _sse_error(event.data))
                yield event

    def cancel(self, run_id: str) -> dict[str, Any]:
        """Cancel a queued or running run."""
        return self._call("POST", f"/runs/{_seg(run_id)}/cancel")

    def replay(self, run_id: str, version: str | None = None) -> dict[str, Any]:
        """Run a past run's event again (on ``version``, or as before): ``{"event_id",
        "run_id"}``."""
        body = {"version": version} if version is not None else {}
        return self._call("POST", f"/runs/{_seg(run_id)}/replay", json=body)

    # -- plumbing -----------------------------------------------------------------------------

    def get(self, path: str, **params: Any) -> Any:
        """GET any API path (below ``/api/v1``) with query parameters; None values dropped."""
        return self._call("GET", path, params=_clean(params))

    def _list(self, path: str, **params: Any) -> list[Any]:
        return _items(self._call("GET", path, params=_clean(params)))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        with self._guard():
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(
                response.status_code,
                f"unexpected answer from {self.url}{API_PREFIX}{path}: not JSON "
                "(is FXRAY_API_URL the fxray API?)",
            ) from None

    def _guard(self) -> _Transport:
        return _Transport(self)

    def _error(self, response: httpx.Response) -> ApiError:
        status = response.status_code
        message, problems, code = f"HTTP {status} {response.reason_phrase}".strip(), [], None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
            error = body["error"]
            message = str(error.get("message") or message)
            problems = list(error.get("problems") or [])
            code = error.get("code")
        elif isinstance(body, Mapping) and "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else message
            problems = detail if isinstance(detail, list) else []
        elif response.text.strip() and len(response.text) < 300:
            message = f"{message}: {response.text.strip()}"
        if status == 401 and not self.key:
            message += f" (set {KEY_ENV} or pass --key)"
        return ApiError(status, message, problems, code)


class _Transport:
    """Turns httpx transport failures into :class:`ApiError` with a clear message."""

    def __init__(self, client: FxrayClient) -> None:
        self.client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> bool:
        if exc is None or not isinstance(exc, httpx.HTTPError):
            return False
        url = self.client.url
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            message = f"the fxray API is not reachable at {url} (start it with `fxray up`)"
        elif isinstance(exc, httpx.TimeoutException):
            message = f"the fxray API at {url} did not answer within {self.client.timeout:g}s"
        elif isinstance(exc, httpx.UnsupportedProtocol):
            message = f"invalid API URL {url!r}: use http:// or https://"
        elif isinstance(exc, httpx.RemoteProtocolError):
            message = f"the fxray API at {url} closed the connection: {exc}"
        else:
            message = f"cannot talk to the fxray API at {url}: {exc}"
        raise ApiError(UNREACHABLE, message) from exc


def _sse_error(data: str) -> str:
    try:
        body = json.loads(data)
    except json.JSONDecodeError:
        return data or "the log stream failed"
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
    return data


def _items(answer: Any) -> list[Any]:
    if isinstance(answer, Mapping) and "items" in answer:
        return list(answer["items"])
    if isinstance(answer, list):
        return answer
    return [] if answer is None else [answer]


def _clean(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded (so ``a/b`` cannot reach another path)."""
    from urllib.parse import quote

    return quote(str(value), safe="")


def _package_zip(path: str | Path | bytes) -> tuple[bytes, str]:
    """The zip to upload and its file name; a folder is validated and zipped in memory."""
    from fxray.services import load_package

    if isinstance(path, bytes | bytearray | memoryview):
        return bytes(path), "service.zip"
    source = Path(path)
    if source.is_file():
        try:
            return source.read_bytes(), source.name
        except OSError as exc:
            from fxray.services import PackageError

            raise PackageError(
                [f"cannot read {source}: {exc.strerror or exc}"], str(source)
            ) from None
    package = load_package(source)  # raises PackageError listing every problem
    return package.to_zip(), f"{package.name}.zip"


__all__ = ["ApiError", "FxrayClient", "SseEvent", "iter_sse"]
