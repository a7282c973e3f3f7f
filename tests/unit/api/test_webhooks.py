"""The webhook receiver against hostile posts: every one is answered with a clear 4xx, and
nothing is published unless the body is signed, JSON, within the limits and of a JSON type.

The app runs over a real :class:`~fxray.Platform` object that is not started: a SQLite state
store, and a fake bus that keeps what is published (no Ray, no servers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from fxray import Platform, Settings
from fxray.api import create_app
from fxray.api.routes.events import signature_of
from fxray.bus import OutgoingRecord
from fxray.store import StateStore

MAX_EVENT_BYTES = 4096


@dataclass
class FakeBus:
    published: list[tuple[str, OutgoingRecord]] = field(default_factory=list)

    def produce(self, topic: str, records: list[OutgoingRecord]) -> None:
        self.published.extend((topic, record) for record in records)


@dataclass
class Receiver:
    client: TestClient
    bus: FakeBus
    url: str
    secret: str

    def post(self, body: bytes, **headers: str) -> tuple[int, str]:
        signed = {"X-Hub-Signature-256": signature_of(self.secret, body), **headers}
        answer = self.client.post(self.url, content=body, headers=signed)
        return answer.status_code, answer.text


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    settings = Settings(home=tmp_path, instance="t", max_event_bytes=MAX_EVENT_BYTES)
    platform = Platform(settings)
    platform.store = store = StateStore(f"sqlite:///{tmp_path / 'state.db'}")
    platform.bus = bus = FakeBus()  # type: ignore[assignment]
    store.create_project("shop")
    webhook, secret = store.create_webhook("shop", "orders", "shop.order")
    with TestClient(create_app(platform)) as client:
        yield Receiver(client, bus, f"/api/v1/webhooks/{webhook.id}", secret)
    store.close()


def test_a_signed_json_post_is_published_once(receiver: Receiver) -> None:
    body = json.dumps({"order": 7}).encode()
    status, text = receiver.post(body, **{"Content-Type": "application/json; charset=utf-8"})
    assert status == 202, text
    ((_, record),) = receiver.bus.published
    event = json.loads(record.value)
    assert (event["type"], event["data"]) == ("shop.order", {"order": 7})


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Hub-Signature-256": ""}, 401),
        ({"X-Hub-Signature-256": "sha256=" + "0" * 64}, 401),
        ({"X-Hub-Signature-256": "sha1=abc"}, 401),
        ({"X-Hub-Signature-256": ("sha256=é" + "0" * 63).encode("latin-1")}, 401),  # not ASCII
    ],
)
def test_bad_signatures_publish_nothing(
    receiver: Receiver, headers: dict[str, str | bytes], status: int
) -> None:
    answer = receiver.client.post(receiver.url, content=b'{"a": 1}', headers=headers)
    assert answer.status_code == status, answer.text
    assert "signature" in answer.json()["error"]["message"].lower()
    assert receiver.bus.published == []


def test_a_signature_for_another_body_or_webhook_is_refused(receiver: Receiver) -> None:
    body = b'{"a": 1}'
    other = {"X-Hub-Signature-256": signature_of("another secret", body)}
    assert receiver.client.post(receiver.url, content=body, headers=other).status_code == 401
    tampered = {"X-Hub-Signature-256": signature_of(receiver.secret, body)}
    answer = receiver.client.post(receiver.url, content=body + b" ", headers=tampered)
    assert answer.status_code == 401
    unknown = receiver.client.post("/api/v1/webhooks/" + "x" * 65, content=body, headers=other)
    assert unknown.status_code == 404
    assert receiver.bus.published == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b'{"a": NaN}', "not JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),  # past Python's parser
    ],
)
def test_bodies_that_are_not_json_are_refused(
    receiver: Receiver, body: bytes, message: str
) -> None:
    # the deepest one is over the size limit too: it is refused for that first
    status, text = receiver.post(body)
    if len(body) > MAX_EVENT_BYTES:
        assert status == 413, text
    else:
        assert status == 422 and message in text, text
    assert receiver.bus.published == []


def test_json_nested_past_the_parser_within_the_size_limit(receiver: Receiver) -> None:
    body = b"[" * 1500 + b"]" * 1500  # 3,000 bytes: under the limit, past the recursion limit
    status, text = receiver.post(body)
    assert status == 422 and "nested too deeply" in text, text
    assert receiver.bus.published == []


def test_data_nested_deeper_than_events_may_be_is_refused(receiver: Receiver) -> None:
    body = b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}"
    status, text = receiver.post(body)
    assert status == 422 and "nests deeper" in text, text
    assert receiver.bus.published == []


def test_bodies_over_the_size_limit_are_refused_even_without_a_length(
    receiver: Receiver,
) -> None:
    body = b'{"a": "' + b"x" * MAX_EVENT_BYTES + b'"}'
    assert receiver.post(body)[0] == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed, cut off at the limit
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    signed = {"X-Hub-Signature-256": signature_of(receiver.secret, body)}
    answer = receiver.client.post(receiver.url, content=chunks(), headers=signed)
    assert answer.status_code == 413
    assert receiver.bus.published == []


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"],
)
def test_bodies_of_other_content_types_are_refused(receiver: Receiver, content_type: str) -> None:
    status, text = receiver.post(b'{"a": 1}', **{"Content-Type": content_type})
    assert status == 415 and "application/json" in text, text
    assert receiver.bus.published == []


@pytest.mark.parametrize("content_type", ["application/json", "application/vnd.github+json"])
def test_json_content_types_are_taken(receiver: Receiver, content_type: str) -> None:
    status, text = receiver.post(b'{"a": 1}', **{"Content-Type": content_type})
    assert status == 202, text
    assert len(receiver.bus.published) == 1


def test_delivery_ids_that_cannot_be_event_ids_are_replaced(receiver: Receiver) -> None:
    for delivery in ("x" * 300, "has space", ""):
        status, text = receiver.post(b"{}", **{"X-GitHub-Delivery": delivery})
        assert status == 202, text
        assert json.loads(text)["id"] != delivery
    status, text = receiver.post(b"{}", **{"X-GitHub-Delivery": "gh-42"})
    assert json.loads(text)["id"] == "gh-42"
