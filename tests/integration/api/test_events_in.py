"""Events in: the CloudEvents HTTP binding (structured, binary, batch) and signed webhooks."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from fxray.api.routes.events import signature_of
from tests.integration.conftest import write_service

if TYPE_CHECKING:
    from tests.integration.api.conftest import ApiHarness, ProjectKeys

ECHO = """
from fxray import context
event = context.event
context.result = {
    "data": event.get("data"),
    "attributes": {k: v for k, v in event.items() if k not in ("data", "data_base64")},
}
"""
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


@pytest.fixture(scope="module")
def linked(sqlite_api: ApiHarness, tmp_path_factory: pytest.TempPathFactory) -> Linked:
    """A project with a service linked to every ``in.<tag>.*`` event."""
    project = sqlite_api.project()
    tag = uuid.uuid4().hex[:6]
    folder = write_service(
        tmp_path_factory.mktemp("svc"),
        f"echo-{tag}",
        {"main.py": ECHO},
        trigger_events=[f"in.{tag}.*"],
    )
    sqlite_api.platform.deploy(folder, project=project.name)
    return Linked(sqlite_api, project, tag)


class Linked:
    def __init__(self, api: ApiHarness, project: ProjectKeys, tag: str) -> None:
        self.api, self.project, self.tag = api, project, tag

    def type(self, name: str) -> str:
        return f"in.{self.tag}.{name}"

    def post(self, body: Any = None, *, content: bytes | None = None, **headers: str) -> Any:
        headers = {**self.project.developer, **headers}
        if content is None and body is not None:
            content = json.dumps(body).encode()
        return self.api.client.post("/api/v1/events", content=content, headers=headers)

    def run_of(self, event_id: str) -> Any:
        (run,) = self.api.platform.wait_for_runs(event_id=event_id, timeout=60)
        assert run.status == "succeeded", run.error
        return run.result


def _event(type: str, **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "test/events-in",
        "type": type,
        **extra,
    }


def test_structured_mode(linked: Linked) -> None:
    event = _event(
        linked.type("structured"), data={"n": 1}, subject="s1", time="2024-05-01T10:00:00Z"
    )
    answer = linked.post(event, **{"Content-Type": f"{STRUCTURED}; charset=utf-8"})
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"ids": [event["id"]]}
    result = linked.run_of(event["id"])
    assert result["data"] == {"n": 1}
    assert result["attributes"]["source"] == "test/events-in"  # as sent
    assert result["attributes"]["subject"] == "s1"


def test_binary_mode_with_an_extension_header(linked: Linked) -> None:
    event_id = str(uuid.uuid4())
    answer = linked.post(
        content=b'{"order": 7}',
        **{
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-type": linked.type("binary"),
            "ce-source": "https://shop.example/orders",
            "ce-time": "2024-05-01T10:00:00Z",
            "ce-tenant": "acme%20corp",  # percent-encoded, per the HTTP binding
        },
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"ids": [event_id]}
    result = linked.run_of(event_id)
    assert result["data"] == {"order": 7}
    assert result["attributes"]["tenant"] == "acme corp"
    assert result["attributes"]["datacontenttype"] == "application/json"
    assert result["attributes"]["source"] == "https://shop.example/orders"

    text_id = str(uuid.uuid4())
    text = linked.post(
        content=b"plain words",
        **{
            "Content-Type": "text/plain",
            "ce-specversion": "1.0",
            "ce-id": text_id,
            "ce-type": linked.type("text"),
            "ce-source": "test",
        },
    )
    assert text.status_code == 202, text.text
    assert linked.run_of(text_id)["data"] == "plain words"


def test_batch_mode(linked: Linked) -> None:
    events = [_event(linked.type("batch"), data={"i": i}) for i in range(3)]
    answer = linked.post(events, **{"Content-Type": BATCH})
    assert answer.status_code == 202, answer.text
    assert answer.json()["ids"] == [e["id"] for e in events]
    assert [linked.run_of(e["id"])["data"] for e in events] == [{"i": i} for i in range(3)]
    assert linked.post([], **{"Content-Type": BATCH}).json() == {"ids": []}


def test_invalid_events_list_every_problem(linked: Linked) -> None:
    bad = {
        "specversion": "0.3",
        "source": "",
        "type": "fxray.run.manual",
        "fxtarget": "x",
        "fxreplayof": "r",
    }
    answer = linked.post(bad, **{"Content-Type": STRUCTURED})
    assert answer.status_code == 422
    problems = answer.json()["error"]["problems"]
    assert any("specversion" in p for p in problems)
    assert any("'id'" in p for p in problems)
    assert any("source" in p for p in problems)
    assert any("reserved" in p for p in problems)
    assert any("fxtarget" in p for p in problems)
    assert any("fxreplayof" in p for p in problems)
    assert len(problems) == 6, problems

    batch = [_event(linked.type("ok")), {"specversion": "1.0"}, _event("a", time="yesterday")]
    answer = linked.post(batch, **{"Content-Type": BATCH})
    assert answer.status_code == 422
    problems = answer.json()["error"]["problems"]
    assert [p.split(":")[0] for p in problems] == ["event 2"] * 3 + ["event 3"]
    assert linked.post({"a": 1}, **{"Content-Type": BATCH}).status_code == 422
    assert linked.post(content=b"{nope", **{"Content-Type": STRUCTURED}).status_code == 422
    nan = linked.post(content=b'{"data": NaN}', **{"Content-Type": STRUCTURED})
    assert nan.status_code == 422

    binary = linked.post(
        content=b"{broken",
        **{"Content-Type": "application/json", "ce-type": "x", "ce-source": "y"},
    )
    assert binary.status_code == 422
    problems = binary.json()["error"]["problems"]
    assert "missing required header 'ce-id'" in problems
    assert "missing required header 'ce-specversion'" not in problems  # it is checked as 1.0
    assert any("specversion" in p for p in problems)
    assert any("not JSON" in p for p in problems)
    # nothing of an invalid request was published
    assert linked.api.platform.runs(event_id=batch[0]["id"]) == []


def test_unsupported_content_types_and_sizes(linked: Linked) -> None:
    plain = linked.post({"type": "x"}, **{"Content-Type": "application/json"})
    assert plain.status_code == 415
    assert plain.json()["error"]["code"] == "unsupported_media_type"
    assert linked.post(content=b"x", **{"Content-Type": "text/plain"}).status_code == 415
    avro = linked.post(content=b"x", **{"Content-Type": "application/cloudevents+avro"})
    assert avro.status_code == 415
    limit = linked.api.platform.settings.max_event_bytes
    big = _event(linked.type("big"), data={"blob": "x" * limit})
    answer = linked.post(big, **{"Content-Type": STRUCTURED})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_large"
    almost = _event(linked.type("big"), data={"blob": "x" * (limit - 300)})
    assert linked.post([almost, almost], **{"Content-Type": BATCH}).status_code == 202


def test_sending_events_needs_the_developer_role(linked: Linked) -> None:
    event = _event(linked.type("role"))
    body = json.dumps(event).encode()
    client = linked.api.client
    headers = {"Content-Type": STRUCTURED}
    viewer = client.post(
        "/api/v1/events", content=body, headers={**headers, **linked.project.viewer}
    )
    assert viewer.status_code == 403
    assert client.post("/api/v1/events", content=body, headers=headers).status_code == 401
    admin = client.post("/api/v1/events", content=body, headers={**headers, **linked.api.admin})
    assert admin.status_code == 202


def test_webhooks(linked: Linked) -> None:
    api, project = linked.api, linked.project
    base = f"/api/v1/projects/{project.name}/webhooks"
    spec = {"name": "shop", "event_type": linked.type("webhook")}
    assert api.client.post(base, json=spec, headers=project.developer).status_code == 403
    assert (
        api.client.post(base, json={**spec, "event_type": "a b"}, headers=project.admin).status_code
        == 422
    )
    made = api.client.post(base, json=spec, headers=project.admin)
    assert made.status_code == 201, made.text
    webhook, secret = made.json()["webhook"], made.json()["secret"]
    assert webhook["source"] == f"fxray/webhooks/{webhook['id']}"
    listed = api.client.get(base, headers=project.admin).json()
    assert [w["id"] for w in listed["items"]] == [webhook["id"]]
    assert "secret" not in json.dumps(listed)
    other = api.project()
    assert (
        api.client.get(f"/api/v1/projects/{other.name}/webhooks", headers=project.admin).status_code
        == 404
    )

    url = webhook["url"]
    body = json.dumps({"action": "opened", "number": 12}).encode()
    good = {"X-Hub-Signature-256": signature_of(secret, body), "X-GitHub-Delivery": "gh-1"}
    # no API key: the signature is the authentication
    answer = api.client.post(url, content=body, headers=good)
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"id": "gh-1"}
    result = linked.run_of("gh-1")
    assert result["data"] == {"action": "opened", "number": 12}
    assert result["attributes"]["type"] == spec["event_type"]
    assert result["attributes"]["fxwebhook"] == webhook["id"]
    assert result["attributes"]["source"] == webhook["source"]

    fresh = api.client.post(
        url, content=body, headers={"X-Hub-Signature-256": good["X-Hub-Signature-256"]}
    )
    assert fresh.status_code == 202 and uuid.UUID(fresh.json()["id"])
    wrong = api.client.post(
        url, content=body, headers={"X-Hub-Signature-256": signature_of("nope", body)}
    )
    assert wrong.status_code == 401
    assert api.client.post(url, content=body).status_code == 401
    tampered = api.client.post(url, content=body + b" ", headers=good)
    assert tampered.status_code == 401
    text = b"not json"
    not_json = api.client.post(
        url, content=text, headers={"X-Hub-Signature-256": signature_of(secret, text)}
    )
    assert not_json.status_code == 422
    huge = b"[" + b"1," * api.platform.settings.max_event_bytes + b"1]"
    assert api.client.post(url, content=huge, headers=good).status_code == 413
    unknown = api.client.post("/api/v1/webhooks/nope", content=body, headers=good)
    assert unknown.status_code == 404

    one = f"{base}/{webhook['id']}"
    off = {"active": False}
    assert api.client.patch(one, json=off, headers=project.developer).status_code == 403
    assert api.client.patch(one, json={"active": "no"}, headers=project.admin).status_code == 422
    turned_off = api.client.patch(one, json=off, headers=project.admin)
    assert turned_off.status_code == 200 and turned_off.json()["active"] is False
    assert api.client.post(url, content=body, headers=good).status_code == 404
    other_admin = api.client.patch(
        f"/api/v1/projects/{other.name}/webhooks/{webhook['id']}", json=off, headers=project.admin
    )
    assert other_admin.status_code == 404
    on = api.client.patch(one, json={"active": True}, headers=project.admin)
    assert on.status_code == 200 and on.json()["active"] is True
    assert api.client.post(url, content=body, headers=good).status_code == 202  # same secret

    delete = one
    assert api.client.delete(delete, headers=project.developer).status_code == 403
    assert api.client.delete(delete, headers=project.admin).status_code == 204
    assert api.client.post(url, content=body, headers=good).status_code == 404


def test_openapi_documents_the_binding(linked: Linked) -> None:
    doc = linked.api.client.get("/openapi.json").json()
    events = doc["paths"]["/api/v1/events"]["post"]
    assert {STRUCTURED, BATCH} <= set(events["requestBody"]["content"])
    receiver = doc["paths"]["/api/v1/webhooks/{webhook_id}"]["post"]
    assert "security" not in receiver
    assert doc["paths"]["/api/v1/mappings"]["post"]["tags"] == ["mappings"]


def test_events_sent_are_routed_once_each(linked: Linked) -> None:
    events = [_event(linked.type("once"), data={"i": i}) for i in range(5)]
    linked.post(events, **{"Content-Type": BATCH})
    linked.post(events[0], **{"Content-Type": STRUCTURED})  # the same event again
    linked.api.platform.wait_idle(timeout=60)
    for event in events:
        assert len(linked.api.platform.runs(event_id=event["id"])) == 1


def test_asset_events_come_only_from_the_assets_api(linked: Linked) -> None:
    answer = linked.post(_event("fxray.asset.uploaded"), **{"Content-Type": STRUCTURED})
    assert answer.status_code == 422
    assert any("reserved" in p for p in answer.json()["error"]["problems"])


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deep_events_are_refused_at_every_http_entry(linked: Linked) -> None:
    api, project = linked.api, linked.project
    # 63 levels of data: 64 with the event itself, the default limit: accepted and run
    fine = _event(linked.type("deep"), data=_nested(62))
    assert linked.post(fine, **{"Content-Type": STRUCTURED}).status_code == 202
    linked.run_of(fine["id"])
    for depth in (64, 900, 5_000):
        deep = _event(linked.type("deep"), data=_nested(depth))
        content = json.dumps(deep).encode() if depth < 900 else None
        if content is None:  # json.dumps itself recurses: write the nesting by hand
            prefix = json.dumps({k: v for k, v in deep.items() if k != "data"})[:-1]
            content = f'{prefix}, "data": {"[" * depth}1{"]" * depth}}}'.encode()
        answer = linked.post(content=content, **{"Content-Type": STRUCTURED})
        assert answer.status_code == 422, (depth, answer.text)
        assert "nest" in answer.text, answer.text
    batch = [_event(linked.type("deep")), _event(linked.type("deep"), data=_nested(70))]
    answer = linked.post(batch, **{"Content-Type": BATCH})
    assert answer.status_code == 422 and "event 2 nests deeper" in answer.text, answer.text

    base = f"/api/v1/projects/{project.name}/webhooks"
    made = api.client.post(
        base, json={"name": "deep", "event_type": linked.type("hook")}, headers=project.admin
    ).json()
    body = json.dumps({"payload": _nested(70)}).encode()
    signed = {"X-Hub-Signature-256": signature_of(made["secret"], body)}
    answer = api.client.post(made["webhook"]["url"], content=body, headers=signed)
    assert answer.status_code == 422 and "nests deeper" in answer.text, answer.text
