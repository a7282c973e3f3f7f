"""Tests for the Management API client (``fxray.client``) and the CLI commands over it
(``fxray.cli.remote``), against a fake server (httpx.MockTransport): no Ray, no API."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from fxray.cli import app
from fxray.cli import remote as cli_remote
from fxray.cli.output import UsageProblem, out
from fxray.client import ApiError, FxrayClient, SseEvent, iter_sse
from fxray.services import PackageError, load_package, load_package_bytes

Handler = Callable[[httpx.Request], httpx.Response]


def client(
    handler: Handler, key: str | None = "k-123", url: str = "http://api.test"
) -> FxrayClient:
    return FxrayClient(url, key, transport=httpx.MockTransport(handler))


def error(status: int, message: str, problems: list[Any] | None = None) -> httpx.Response:
    body: dict[str, Any] = {"code": "x", "message": message}
    if problems is not None:
        body["problems"] = problems
    return httpx.Response(status, json={"error": body})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_service(root: Path, name: str = "hello") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({"name": name, "execution_order": ["a.py"]}))
    (root / "a.py").write_text("print('hi')\n")
    return root


# -- URL, key, requests -----------------------------------------------------------------------


def test_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXRAY_API_URL", "http://example.test:9000/api/v1/")
    monkeypatch.setenv("FXRAY_API_KEY", "env-key")
    api = FxrayClient()
    assert api.url == "http://example.test:9000"
    assert api.key == "env-key"
    monkeypatch.delenv("FXRAY_API_URL")
    monkeypatch.delenv("FXRAY_API_KEY")
    api = FxrayClient()
    assert api.url == "http://127.0.0.1:8080"
    assert api.key is None


def test_requests_carry_the_key_under_api_v1() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [{"id": "r1"}], "total": 1})

    api = client(handler)
    assert api.runs(service="svc", status=None, limit=5) == [{"id": "r1"}]
    request = seen[0]
    assert request.url.path == "/api/v1/runs"
    assert dict(request.url.params) == {"service": "svc", "limit": "5"}  # None dropped
    assert request.headers["authorization"] == "Bearer k-123"


def test_path_segments_are_encoded() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, json={})

    client(handler).get_run("../projects")
    assert seen == ["/api/v1/runs/..%2Fprojects"]


def test_no_content_answers_none() -> None:
    api = client(lambda r: httpx.Response(204))
    assert api.remove_trigger("t1") is None


def test_bodies_of_writes() -> None:
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, json.loads(request.content or b"null")))
        return httpx.Response(202, json={"event_id": "e", "run_id": "r"})

    api = client(handler)
    api.add_trigger("shop.*", "svc", weights={"v1": 70, "v2": 30}, shadow_version="v3")
    api.run("svc", {"n": 1}, version="v2", priority=7)
    api.replay("r0")
    api.replay("r0", version="v1")
    api.set_active("svc", False)
    assert seen == [
        (
            "POST",
            "/api/v1/triggers",
            {
                "pattern": "shop.*",
                "service": "svc",
                "ordered": False,
                "weights": {"v1": 70, "v2": 30},
                "shadow_version": "v3",
            },
        ),
        ("POST", "/api/v1/services/svc/runs", {"params": {"n": 1}, "version": "v2", "priority": 7}),
        ("POST", "/api/v1/runs/r0/replay", {}),
        ("POST", "/api/v1/runs/r0/replay", {"version": "v1"}),
        ("PATCH", "/api/v1/services/svc", {"active": False}),
    ]


# -- errors -----------------------------------------------------------------------------------


def test_server_errors_keep_message_and_problems() -> None:
    problems = [
        {"location": "body.pattern", "message": "Field required"},
        {"location": "body.service", "message": "Field required"},
    ]
    api = client(lambda r: error(422, "the request is invalid", problems))
    with pytest.raises(ApiError) as caught:
        api.add_trigger("", "")
    exc = caught.value
    assert exc.status == 422
    assert exc.message == "the request is invalid"
    assert exc.problems == problems
    assert str(exc) == (
        "the request is invalid: body.pattern: Field required; body.service: Field required"
    )


@pytest.mark.parametrize(
    ("response", "status", "message"),
    [
        (error(404, "run 'x' not found"), 404, "run 'x' not found"),
        (error(409, "service 'a' exists"), 409, "service 'a' exists"),
        (httpx.Response(404, json={"detail": "Not Found"}), 404, "Not Found"),
        (httpx.Response(502, text="<html>bad gateway</html>"), 502, "HTTP 502 Bad Gateway"),
        (httpx.Response(500, content=b""), 500, "HTTP 500 Internal Server Error"),
    ],
)
def test_error_shapes(response: httpx.Response, status: int, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        client(lambda r: response).get_run("x")
    assert caught.value.status == status
    assert caught.value.message.startswith(message)


def test_string_problems_are_listed() -> None:
    api = client(lambda r: error(422, "the service package is invalid", ["manifest.json: no name"]))
    with pytest.raises(ApiError, match=r"invalid: manifest.json: no name$"):
        api.info()


def test_missing_key_gets_a_hint() -> None:
    answer = error(401, "an API key is required")
    with pytest.raises(ApiError, match=r"required \(set FXRAY_API_KEY or pass --key\)"):
        client(lambda r: answer, key=None).info()
    with pytest.raises(ApiError) as caught:
        client(lambda r: error(401, "the API key is not valid")).info()
    assert caught.value.message == "the API key is not valid"


def test_success_that_is_not_json_is_an_error() -> None:
    with pytest.raises(ApiError, match="not JSON"):
        client(lambda r: httpx.Response(200, text="<html>hello</html>")).info()


def test_connection_refused_says_where_and_how_to_start() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(ApiError) as caught:
        FxrayClient(url, "k", timeout=5).health()
    assert caught.value.status == 0
    assert (
        str(caught.value) == f"the fxray API is not reachable at {url} (start it with `fxray up`)"
    )


def test_timeouts_and_bad_urls() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ApiError, match=r"did not answer within 30s"):
        client(slow).health()
    with pytest.raises(ApiError, match="invalid API URL"):
        FxrayClient("ftp://somewhere", "k").health()


# -- services and events ----------------------------------------------------------------------


def test_push_service_zips_a_folder(tmp_path: Path) -> None:
    folder = write_service(tmp_path / "svc")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"service": {"name": "hello"}, "created": True})

    answer = client(handler).push_service(folder, label="v1", project="shop")
    assert answer["created"] is True
    request = seen[0]
    assert request.method == "POST"
    assert request.url.path == "/api/v1/services"
    assert request.headers["content-type"].startswith("multipart/form-data")
    parts = _multipart(request)
    assert parts["label"] == b"v1"
    assert parts["project"] == b"shop"
    uploaded = load_package_bytes(parts["file"])
    assert uploaded.content_hash == load_package(folder).content_hash


def test_push_service_sends_a_zip_file_as_is(tmp_path: Path) -> None:
    archive = tmp_path / "svc.zip"
    archive.write_bytes(load_package(write_service(tmp_path / "svc")).to_zip())
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={})

    client(handler).push_service(archive)
    parts = _multipart(seen[0])
    assert parts["file"] == archive.read_bytes()
    assert "label" not in parts


def test_push_service_checks_the_folder_before_uploading(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{")
    with pytest.raises(PackageError):
        client(handler).push_service(tmp_path / "bad")
    with pytest.raises(PackageError, match="no such folder or file"):
        client(handler).push_service(tmp_path / "missing")


def _multipart(request: httpx.Request) -> dict[str, bytes]:
    """name -> bytes of each part of a multipart/form-data request."""
    from email.parser import BytesParser
    from email.policy import HTTP

    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + request.content)
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }


def test_send_event_posts_a_structured_cloudevent() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content)
        return httpx.Response(202, json={"ids": [body["id"]]})

    event_id = client(handler).send_event(
        "shop.order.placed", {"order_id": "A-1"}, source="shop/web", subject="A-1"
    )
    request = seen[0]
    assert request.url.path == "/api/v1/events"
    assert request.headers["content-type"] == "application/cloudevents+json"
    body = json.loads(request.content)
    assert body["id"] == event_id
    assert body["specversion"] == "1.0"
    assert body["type"] == "shop.order.placed"
    assert body["source"] == "shop/web"
    assert body["subject"] == "A-1"
    assert body["data"] == {"order_id": "A-1"}


def test_send_events_posts_a_batch() -> None:
    from fxray.events.cloudevent import new_event

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json={"ids": [e["id"] for e in json.loads(request.content)]})

    events = [new_event("a.b", {"n": n}) for n in range(3)]
    assert client(handler).send_events(events) == [e["id"] for e in events]
    assert seen[0].headers["content-type"] == "application/cloudevents-batch+json"


# -- Server-Sent Events -----------------------------------------------------------------------

STREAM = (
    ": connected\n"
    "\n"
    'data: {"level": "INFO", "message": "one"}\n'
    "\n"
    ": heartbeat\n"
    "event: log\n"
    "id: 2\n"
    "data: first line\n"
    "data:second line\n"
    "data\n"
    "\n"
    "event: empty\n"
    "\n"
    "retry: 1500\n"
    "data:  two spaces\n"
    "\n"
    "event: end\n"
    'data: {"status": "succeeded"}\n'
    "\n"
    "data: unfinished"
)
EXPECTED = [
    SseEvent("message", '{"level": "INFO", "message": "one"}'),
    SseEvent("log", "first line\nsecond line\n", "2"),
    SseEvent("message", " two spaces", "2", 1500),
    SseEvent("end", '{"status": "succeeded"}', "2"),
]


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_parsing(newline: str) -> None:
    text = STREAM.replace("\n", newline)
    assert list(iter_sse([text])) == EXPECTED
    assert list(iter_sse([text.encode()])) == EXPECTED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_parsing_at_any_chunk_boundary(newline: str) -> None:
    data = ("\ufeff" + STREAM + "\n\n" + 'data: "caf\u00e9 \u2028 \u00fc"\n\n').replace(
        "\n", newline
    )
    raw = data.encode()
    expected = [
        *EXPECTED,
        SseEvent("message", "unfinished", "2"),
        SseEvent("message", '"caf\u00e9 \u2028 \u00fc"', "2"),
    ]
    for cut in range(len(raw) + 1):
        assert list(iter_sse([raw[:cut], raw[cut:]])) == expected, cut
    assert list(iter_sse(raw[i : i + 1] for i in range(len(raw)))) == expected


def _sse_response(*events: str, status: int = 200) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/runs/r1/logs/stream"
        assert request.headers["accept"] == "text/event-stream"
        body = "".join(events).encode()
        chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
        return httpx.Response(
            status,
            headers={"content-type": "text/event-stream"},
            stream=httpx.ByteStream(b"".join(chunks)),
        )

    return handler


def test_follow_logs_yields_lines_until_end() -> None:
    handler = _sse_response(
        ": ping\n\n",
        'data: {"time": 1.0, "level": "INFO", "step": "a.py", "message": "hello"}\n\n',
        ": ping\n\n",
        'data: [2.0, "STDOUT", "b.py", "multi\\nline"]\n\n',
        "event: end\ndata: {}\n\n",
        'data: {"message": "after the end"}\n\n',
    )
    lines = list(client(handler).follow_logs("r1"))
    assert lines == [
        {"time": 1.0, "level": "INFO", "step": "a.py", "message": "hello"},
        [2.0, "STDOUT", "b.py", "multi\nline"],
    ]


def test_logs_reads_every_page() -> None:
    lines = [{"index": i, "level": "INFO", "step": "a.py", "message": str(i)} for i in range(1203)]
    offsets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        limit, offset = int(request.url.params["limit"]), int(request.url.params["offset"])
        offsets.append(str(offset))
        page = lines[offset : offset + limit]
        return httpx.Response(
            200, json={"items": page, "total": len(lines), "limit": limit, "offset": offset}
        )

    assert client(handler).logs("r1") == lines
    assert offsets == ["0", "500", "1000"]


def test_follow_logs_resumes_after_a_dropped_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fxray.client.time.sleep", lambda s: None)
    streams = [
        'id: 0\nevent: log\ndata: {"message": "a"}\n\n'
        'id: 1\nevent: log\ndata: {"message": "b"}\n\n',
        "",  # reconnected, nothing new yet, dropped again
        'id: 2\nevent: log\ndata: {"message": "c"}\n\n'
        'event: end\ndata: {"status": "succeeded"}\n\n',
    ]
    resumed: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        resumed.append(request.headers.get("last-event-id"))
        return httpx.Response(200, stream=httpx.ByteStream(streams[len(resumed) - 1].encode()))

    lines = list(client(handler).follow_logs("r1"))
    assert lines == [{"message": "a"}, {"message": "b"}, {"message": "c"}]
    assert resumed == [None, "1", "1"]


def test_follow_logs_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fxray.client.time.sleep", lambda s: None)
    calls: list[int] = []

    def no_ids(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, stream=httpx.ByteStream(b'data: {"message": "a"}\n\n'))

    stream = client(no_ids).follow_logs("r1")
    assert next(stream) == {"message": "a"}
    with pytest.raises(ApiError, match="ended before the run did"):
        next(stream)  # resuming would repeat lines: no ids to resume after
    assert calls == [1]
    calls.clear()

    def empty(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, stream=httpx.ByteStream(b": ping\n\n"))

    with pytest.raises(ApiError, match="ended before the run did"):
        list(client(empty).follow_logs("r1", reconnects=2))
    assert len(calls) == 3


def test_follow_logs_errors() -> None:
    with pytest.raises(ApiError, match="run 'r1' not found") as caught:
        list(client(lambda r: error(404, "run 'r1' not found")).follow_logs("r1"))
    assert caught.value.status == 404
    handler = _sse_response('event: error\ndata: {"error": {"message": "store gone"}}\n\n')
    with pytest.raises(ApiError, match="store gone"):
        list(client(handler).follow_logs("r1"))


# -- CLI argument parsing ---------------------------------------------------------------------


def test_parse_weights() -> None:
    assert cli_remote.parse_weights("v1=70,v2=30") == {"v1": 70, "v2": 30}
    assert cli_remote.parse_weights(" svc@abc = 1 , v2=0 ") == {"svc@abc": 1, "v2": 0}
    assert cli_remote.parse_weights(None) == {}
    for bad, why in [
        ("v1", "not VERSION=WEIGHT"),
        ("v1=70,", "not VERSION=WEIGHT"),
        ("=5", "not VERSION=WEIGHT"),
        ("v1=ten", "not a whole number"),
        ("v1=-1", "must not be negative"),
        ("v1=1,v1=2", "given twice"),
    ]:
        with pytest.raises(UsageProblem, match=why):
            cli_remote.parse_weights(bad)


def test_parse_filters() -> None:
    assert cli_remote.parse_filters(["source=shop/*", "data.q=a=b", "subject="]) == {
        "source": "shop/*",
        "data.q": "a=b",
        "subject": "",
    }
    assert cli_remote.parse_filters(None) == {}
    with pytest.raises(UsageProblem, match="not KEY=VALUE"):
        cli_remote.parse_filters(["source"])
    with pytest.raises(UsageProblem, match="given twice"):
        cli_remote.parse_filters(["a=1", "a=2"])


def test_parse_json(tmp_path: Path) -> None:
    assert cli_remote.parse_json('{"a": [1, 2]}', "--data") == {"a": [1, 2]}
    (tmp_path / "d.json").write_text('{"b": true}')
    assert cli_remote.parse_json(f"@{tmp_path / 'd.json'}", "--data") == {"b": True}
    with pytest.raises(UsageProblem, match=r"--data is not valid JSON \(line 1, column 2"):
        cli_remote.parse_json("{oops", "--data")
    with pytest.raises(UsageProblem, match="cannot read --data file"):
        cli_remote.parse_json(f"@{tmp_path / 'missing.json'}", "--data")


def test_log_fields() -> None:
    assert cli_remote.log_fields({"level": "ERROR", "step": "a.py", "message": "x"})[1:] == (
        "ERROR",
        "a.py",
        "x",
    )
    assert cli_remote.log_fields([1.0, "STDOUT", "b.py", "y"]) == (1.0, "STDOUT", "b.py", "y")
    assert cli_remote.log_fields("plain") == (None, "INFO", "", "plain")


# -- CLI against a fake server ----------------------------------------------------------------


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Route the CLI's client to a fake server: ``routes[(method, path)]`` -> response."""
    import fxray.client as client_module

    routes: dict[Any, Any] = {}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = routes.get((request.method, request.url.path))
        if answer is None:
            return error(404, f"no route {request.method} {request.url.path}")
        return answer(request) if callable(answer) else answer

    class Fake(FxrayClient):
        def __init__(self, url: str | None = None, key: str | None = None, **kw: Any) -> None:
            super().__init__(url, key, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(client_module, "FxrayClient", Fake)
    monkeypatch.setenv("FXRAY_API_URL", "http://api.test")
    monkeypatch.setenv("FXRAY_API_KEY", "k-cli")
    monkeypatch.delenv("FXRAY_DEBUG", raising=False)
    monkeypatch.setattr(out, "_width", 160)  # tables on one line per row
    yield {"routes": routes, "seen": seen}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


RUN = {  # as GET /runs/{id} answers
    "id": "6f1c0a4e-run",
    "service": "hello",
    "project": "shop",
    "version": {"id": "hello@0123456789ab", "label": "v2"},
    "trigger_id": "t1",
    "event_id": "ev-1",
    "event_type": "greet",
    "correlation_id": "ev-1",
    "status": "failed",
    "priority": 5,
    "attempt": 1,
    "shadow": False,
    "created_at": 1_700_000_000.0,
    "started_at": 1_700_000_000.0,
    "finished_at": 1_700_000_000.25,
    "duration_ms": 250.0,
    "error": "a.py: boom",
    "trigger_event": {"id": "ev-1", "type": "greet", "source": "shop/web", "data": {}},
    "steps": [
        {
            "name": "a.py",
            "status": "failed",
            "started_at": 1_700_000_000.0,
            "finished_at": 1_700_000_000.0125,
            "duration_ms": 12.5,
            "error": "boom",
        }
    ],
    "result": None,
    "logs": [{"index": 0, "time": 1.0, "level": "ERROR", "step": "a.py", "message": "it [broke]"}],
}


def test_cli_runs_show_and_logs(fake_api: dict[str, Any]) -> None:
    routes = fake_api["routes"]
    routes["GET", "/api/v1/runs"] = httpx.Response(200, json={"items": [RUN], "total": 1})
    routes["GET", "/api/v1/runs/6f1c0a4e-run"] = httpx.Response(200, json=RUN)
    routes["GET", "/api/v1/runs/6f1c0a4e-run/logs"] = httpx.Response(
        200, json={"items": RUN["logs"], "total": 1, "limit": 50, "offset": 0}
    )
    listed = invoke("runs", "--service", "hello", "--status", "failed", "--limit", "5")
    assert listed.exit_code == 0, listed.output
    assert "6f1c0a4e-run" in listed.stdout and "0123456789ab (v2)" in listed.stdout
    assert dict(fake_api["seen"][-1].url.params) == {
        "service": "hello",
        "status": "failed",
        "limit": "5",
    }
    assert fake_api["seen"][-1].headers["authorization"] == "Bearer k-cli"
    as_json = invoke("runs", "--json")
    assert json.loads(as_json.stdout) == [RUN]
    shown = invoke("run", "show", "6f1c0a4e-run")
    assert shown.exit_code == 0, shown.output
    for text in ("failed", "hello@0123456789ab (v2)", "shop/web", "12.5 ms", "boom", "it [broke]"):
        assert text in shown.stdout
    assert json.loads(invoke("run", "show", "6f1c0a4e-run", "--json").stdout) == RUN
    logs = invoke("logs", "6f1c0a4e-run")
    assert logs.exit_code == 0, logs.output
    assert "[a.py] ERROR it [broke]" in logs.stdout


def test_cli_follow_prints_the_final_status(fake_api: dict[str, Any]) -> None:
    routes = fake_api["routes"]
    routes["GET", "/api/v1/runs/r1/logs/stream"] = _sse_response(
        'data: {"level": "STDOUT", "step": "a.py", "message": "hi"}\n\n', "event: end\ndata: {}\n\n"
    )
    routes["GET", "/api/v1/runs/r1"] = httpx.Response(200, json={**RUN, "id": "r1"})
    result = invoke("logs", "r1", "--follow")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["[a.py] STDOUT hi", "failed hello in 250 ms: a.py: boom"]


def test_cli_trigger_add_sends_parsed_options(fake_api: dict[str, Any]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, json={"id": "t1", **json.loads(request.content)})

    fake_api["routes"]["POST", "/api/v1/triggers"] = answer
    result = invoke(
        "trigger", "add", "shop.*", "hello", "--weights", "v1=70,v2=30",
        "--filter", "source=shop/*", "--filter", "data.country=CH", "--shadow", "v3", "--ordered",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "linked shop.* -> hello (trigger t1)" in result.stdout
    assert json.loads(fake_api["seen"][-1].content) == {
        "pattern": "shop.*",
        "service": "hello",
        "ordered": True,
        "filters": {"source": "shop/*", "data.country": "CH"},
        "weights": {"v1": 70, "v2": 30},
        "shadow_version": "v3",
    }


def test_a_service_is_named_within_a_project_for_platform_wide_keys(
    fake_api: dict[str, Any],
) -> None:
    """Service names are per project: ``project`` goes along as ``?project=`` (or in the body
    of a new trigger) where given, and not at all where not."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "total": 0, "event_id": "e", "run_id": "r"})

    api = client(handler)
    api.get_service("orders", project="shop")
    api.set_active("orders", False, project="shop")
    api.list_versions("orders", project="shop")
    api.run("orders", project="shop")
    api.list_triggers("orders", project="shop")
    api.add_trigger("shop.*", "orders", project="shop")
    api.get_service("orders")
    assert [(r.method, r.url.path, dict(r.url.params)) for r in seen] == [
        ("GET", "/api/v1/services/orders", {"project": "shop"}),
        ("PATCH", "/api/v1/services/orders", {"project": "shop"}),
        ("GET", "/api/v1/services/orders/versions", {"project": "shop"}),
        ("POST", "/api/v1/services/orders/runs", {"project": "shop"}),
        ("GET", "/api/v1/triggers", {"service": "orders", "project": "shop"}),
        ("POST", "/api/v1/triggers", {}),
        ("GET", "/api/v1/services/orders", {}),
    ]
    assert json.loads(seen[5].content)["project"] == "shop"

    routes = fake_api["routes"]
    routes["POST", "/api/v1/services/orders/runs"] = httpx.Response(
        202, json={"event_id": "e1", "run_id": "r1"}
    )
    routes["GET", "/api/v1/runs"] = httpx.Response(200, json={"items": [], "total": 0})
    started = invoke("run", "start", "orders", "--project", "shop")
    assert started.exit_code == 0, started.output
    assert dict(fake_api["seen"][-1].url.params) == {"project": "shop"}
    assert invoke("runs", "--service", "orders", "--project", "shop").exit_code == 0
    assert dict(fake_api["seen"][-1].url.params) == {
        "service": "orders",
        "project": "shop",
        "limit": "50",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["event", "send", "greet", "--data", "{bad"], "--data is not valid JSON"),
        (["trigger", "add", "a", "b", "--weights", "v1:70"], "is not VERSION=WEIGHT"),
        (["trigger", "add", "a", "b", "--filter", "nokey"], "is not KEY=VALUE"),
        (["run", "start", "hello", "--params", "[1]"], "--params must be a JSON object"),
    ],
)
def test_cli_bad_usage_exits_2_before_sending(
    fake_api: dict[str, Any], args: list[str], message: str
) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert fake_api["seen"] == []


def test_cli_refused_request_exits_1_with_the_server_message(fake_api: dict[str, Any]) -> None:
    fake_api["routes"]["POST", "/api/v1/runs/r9/replay"] = error(
        422, "service 'hello' has no version 'v9'"
    )
    result = invoke("replay", "r9", "--version", "v9")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: service 'hello' has no version 'v9'"


def test_cli_unreachable_api_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXRAY_DEBUG", raising=False)
    url = f"http://127.0.0.1:{closed_port()}"
    result = invoke("service", "list", "--url", url, "--key", "k")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: the fxray API is not reachable at {url} (start it with `fxray up`)"
    )


def test_cli_push_of_an_invalid_folder_lists_problems(tmp_path: Path, fake_api: dict) -> None:
    (tmp_path / "svc").mkdir()
    result = invoke("service", "push", str(tmp_path / "svc"))
    assert result.exit_code == 1
    assert "manifest.json" in result.stderr
    assert fake_api["seen"] == []


def test_cli_push_says_where_the_version_runs_and_why(tmp_path: Path, fake_api: dict) -> None:
    summary = (
        "runs in an isolated worker process because pydantic==1.10.13 installs pydantic "
        "1.10.13; the platform runs pydantic 2.14.4"
    )
    version = {
        "id": "hello@0123456789ab",
        "label": None,
        "requirements": ["pydantic==1.10.13"],
        "isolation": {"mode": "process", "summary": summary, "note": None},
    }
    answer = {"service": {"name": "hello", "project": "shop"}, "version": version, "created": True}
    fake_api["routes"]["POST", "/api/v1/services"] = httpx.Response(201, json=answer)
    result = invoke("service", "push", str(write_service(tmp_path / "svc")))
    assert result.exit_code == 0, result.output
    assert f"  {summary}" in result.stdout
    in_process = {"mode": "in-process", "summary": "runs in the executor's process"}
    plain = {**version, "requirements": [], "isolation": in_process}
    fake_api["routes"]["POST", "/api/v1/services"] = httpx.Response(
        201, json={**answer, "version": plain}
    )
    quiet = invoke("service", "push", str(write_service(tmp_path / "svc")))
    assert quiet.exit_code == 0 and "runs in" not in quiet.stdout  # nothing to decide
