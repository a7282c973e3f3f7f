"""/api/v1 routes: events in (the CloudEvents HTTP protocol binding) and signed webhooks.

``POST /events`` takes the three content modes of the CloudEvents HTTP binding:

* structured: ``Content-Type: application/cloudevents+json``, the event as JSON;
* binary: the attributes in ``ce-*`` headers (percent-encoded), the body is ``data`` and its
  ``Content-Type`` the ``datacontenttype``;
* batch: ``Content-Type: application/cloudevents-batch+json``, a JSON array of events.

A webhook lets an outside system send plain JSON: ``POST /webhooks/{id}`` with the header
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body, keyed by the webhook's
secret>``. The body becomes the ``data`` of a CloudEvent of the webhook's type.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Annotated, Any
from urllib.parse import unquote

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from dateutil.parser import isoparse
from fastapi import APIRouter, Path, Request, status
from starlette.concurrency import run_in_threadpool

from fxray.api.auth import Caller, require_platform_admin, require_project
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.events import (
    EventId,
    EventIds,
    NewWebhookOut,
    WebhookIn,
    WebhookOut,
    WebhookPatch,
)
from fxray.events import cloudevent as ev
from fxray.events.mappings import MAPPING_ID
from fxray.store import NotFound

router = APIRouter()
events_router = APIRouter(tags=["events"])
webhooks_router = APIRouter(tags=["webhooks"])

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
MAX_BATCH_EVENTS = 1000
BATCH_SIZE_FACTOR = 10  # a batch may be this many times settings.max_event_bytes
SIGNATURE_HEADER = "x-hub-signature-256"
DELIVERY_HEADERS = ("x-github-delivery", "x-request-id", "x-delivery-id", "x-webhook-id")
WEBHOOK_EXTENSION = "fxwebhook"
# attributes only the platform sets: they steer routing or claim a cause the sender is not
RESERVED_TYPES = ev.PLATFORM_TYPES | {ev.ASSET_UPLOADED}
"""Event types only the platform sends (an asset event says a file really was stored)."""
RESERVED_ATTRIBUTES = frozenset(
    {
        ev.TARGET,
        ev.VERSION,
        ev.PRIORITY,
        ev.SHADOW,
        ev.RUN_ID,
        ev.REPLAY_OF,
        MAPPING_ID,
        WEBHOOK_EXTENSION,
    }
)
_JSON_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]*\+)?json(;.*)?$", re.IGNORECASE)
_EVENT_TYPE = re.compile(r"^\S{1,255}$")
_DELIVERY_ID = re.compile(r"^[\x21-\x7e]{1,255}$")
_DUMMY_SECRET = secrets.token_bytes(32)

_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["specversion", "id", "source", "type"],
    "properties": {
        "specversion": {"type": "string", "enum": ["1.0"]},
        "id": {"type": "string", "minLength": 1},
        "source": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "subject": {"type": "string"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"type": "string"},
        "dataschema": {"type": "string"},
        "data": {},
        "data_base64": {"type": "string"},
    },
    "additionalProperties": True,
}
_BINARY_HEADERS = [
    {
        "name": f"ce-{name}",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": f"Binary mode: the event's {name}",
    }
    for name in ("specversion", "id", "source", "type", "subject", "time")
]


# -- events in --------------------------------------------------------------------------------


def event_problems(body: Any, *, binary: bool = False) -> list[str]:
    """Every problem that keeps ``body`` from being a valid structured CloudEvent 1.0 that a
    client may send ([] if none); ``binary`` names attributes by their ``ce-*`` headers."""
    if not isinstance(body, dict):
        return ["a CloudEvent must be a JSON object"]
    problems = []
    if body.get("specversion") != "1.0":
        problems.append(f"specversion must be '1.0', got {body.get('specversion')!r}")
    missing = [name for name in ("id", "source", "type") if name not in body]
    problems += [
        f"missing required header 'ce-{name}'" if binary else f"missing required attribute {name!r}"
        for name in missing
    ]
    if isinstance(body.get("type"), str) and body["type"] in RESERVED_TYPES:
        problems.append(
            f"type {body['type']!r} is reserved for the platform (start runs with "
            "POST /services/{name}/runs, store files with POST /projects/{project}/assets)"
        )
    problems += [
        f"attribute {name!r} is set by the platform only"
        for name in sorted(RESERVED_ATTRIBUTES & body.keys())
    ]
    attributes = {k: v for k, v in body.items() if k not in ("data", "data_base64")}
    for name, value in list(attributes.items()):
        if not isinstance(value, str | int) or isinstance(value, float):
            kind = "null" if value is None else type(value).__name__
            problems.append(f"attribute {name!r} must be a string, integer or boolean, not {kind}")
            del attributes[name]
    data = body.get("data")
    if "time" in attributes:
        try:
            attributes["time"] = isoparse(attributes["time"])
        except (ValueError, TypeError, OverflowError):
            problems.append(f"time {body['time']!r} is not an RFC 3339 timestamp")
            del attributes["time"]
    if "data_base64" in body:
        if "data" in body:
            problems.append("an event has data or data_base64, not both")
        try:
            data = base64.b64decode(body["data_base64"], validate=True)
        except (ValueError, TypeError):
            problems.append("data_base64 is not base64")
    try:
        CloudEvent(attributes, data)
    except BaseCloudEventException as exc:
        errors = getattr(exc, "errors", None)
        if isinstance(errors, dict):
            for name, errs in errors.items():
                if name in missing or name == "specversion":
                    continue  # said above
                problems += [f"{name}: {err}" for err in errs]
        else:
            problems.append(str(exc))
    except (ValueError, TypeError, OverflowError) as exc:
        problems.append(f"invalid attribute: {exc}")
    if not problems:
        try:
            ev.from_dict(body)
        except ev.InvalidEvent as exc:
            problems.append(str(exc))
    return problems


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 as soon as it is known to be over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes, over the {limit} byte limit")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _binary_event(request: Request, raw: bytes) -> tuple[dict[str, Any], list[str]]:
    """The structured form of a binary-mode request, and the problems met decoding it."""
    body: dict[str, Any] = {}
    problems = []
    for name, value in request.headers.items():
        name = name.lower()
        if name.startswith("ce-"):
            attribute = name[3:]
            if attribute in ("data", "data_base64"):
                problems.append(f"header {name!r}: the data is the body, not a header")
                continue
            body[attribute] = unquote(value)
    content_type = request.headers.get("content-type")
    if content_type:
        body["datacontenttype"] = content_type
    if raw:
        kind = body.get("datacontenttype")
        if kind is None or _JSON_TYPE.match(kind):
            try:
                body["data"] = ev.strict_json(raw)
            except ValueError as exc:
                problems.append(f"the body (data) is not JSON: {exc}")
        elif kind.lower().startswith("text/"):
            try:
                body["data"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                problems.append("the body (text data) is not UTF-8")
        else:
            body["data_base64"] = base64.b64encode(raw).decode()
    return body, problems + event_problems(body, binary=True)


@events_router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        413: {"description": "The body or an event is too large"},
        415: {"description": "Not a CloudEvents content mode"},
        422: {"description": "Invalid events; every problem is listed"},
    },
    openapi_extra={
        "parameters": _BINARY_HEADERS,
        "requestBody": {
            "required": True,
            "content": {
                STRUCTURED: {"schema": _EVENT_SCHEMA},
                BATCH: {"schema": {"type": "array", "items": _EVENT_SCHEMA}},
                "application/json": {
                    "schema": {},
                    "description": "Binary mode: the data, with the attributes in ce-* headers",
                },
            },
        },
    },
)
async def send_events(request: Request, caller: Caller, platform: PlatformDep) -> EventIds:
    """Publish events in a CloudEvents HTTP content mode (developer); answers their ids.

    Structured (``application/cloudevents+json``), batch
    (``application/cloudevents-batch+json``: a JSON array), or binary (``ce-id``,
    ``ce-type``, ``ce-source``, ``ce-specversion`` and extension ``ce-*`` headers; the body is
    the data, its ``Content-Type`` the ``datacontenttype``). Events keep the ``source`` sent.
    """
    if caller.project is None:
        require_platform_admin(caller)
    else:
        require_project(caller, caller.project, "developer")
    limit = platform.settings.max_event_bytes
    media = _media_type(request)
    if media == STRUCTURED:
        raw = await read_body(request, limit)
        try:
            body = ev.strict_json(raw)
        except ValueError as exc:
            raise invalid("the body is not JSON", [str(exc)]) from None
        problems = event_problems(body)
        if problems:
            raise invalid("the event is invalid", problems)
        events = [body]
    elif media == BATCH:
        raw = await read_body(request, limit * BATCH_SIZE_FACTOR)
        try:
            body = ev.strict_json(raw)
        except ValueError as exc:
            raise invalid("the body is not JSON", [str(exc)]) from None
        if not isinstance(body, list):
            raise invalid("a batch must be a JSON array of events")
        if len(body) > MAX_BATCH_EVENTS:
            raise ApiError(413, f"a batch holds at most {MAX_BATCH_EVENTS} events")
        problems = [
            f"event {number}: {problem}"
            for number, item in enumerate(body, start=1)
            for problem in event_problems(item)
        ]
        if problems:
            raise invalid("the batch is invalid", problems)
        events = body
    elif media.startswith("application/cloudevents"):
        raise ApiError(415, f"unsupported CloudEvents format {media!r}: use {STRUCTURED}")
    elif any(name.lower().startswith("ce-") for name in request.headers):
        raw = await read_body(request, limit)
        event, problems = _binary_event(request, raw)
        if problems:
            raise invalid("the event is invalid", problems)
        events = [event]
    else:
        raise ApiError(
            415,
            f"unsupported content type {media or '(none)'!r}: send {STRUCTURED}, {BATCH}, "
            "or the data with ce-* headers (binary mode)",
        )
    if events:
        await run_in_threadpool(platform.publish, events)
    return EventIds(ids=[str(e["id"]) for e in events])


# -- webhooks ---------------------------------------------------------------------------------


def _webhook(record: Any) -> WebhookOut:
    return WebhookOut(
        id=record.id,
        project=record.project,
        name=record.name,
        event_type=record.event_type,
        source=record.source,
        active=record.active,
        created_at=record.created_at,
        url=f"/api/v1/webhooks/{record.id}",
    )


@webhooks_router.get("/projects/{project}/webhooks")
def list_webhooks(
    project: str, caller: Caller, store: StoreDep, paging: Paging
) -> Page[WebhookOut]:
    """The project's webhooks (project admin); secrets are never shown again."""
    require_project(caller, project, "admin")
    store.get_project(project)
    return paging.page([_webhook(w) for w in store.list_webhooks(project)])


@webhooks_router.post("/projects/{project}/webhooks", status_code=status.HTTP_201_CREATED)
def create_webhook(project: str, body: WebhookIn, caller: Caller, store: StoreDep) -> NewWebhookOut:
    """A webhook that turns signed JSON posts into events of ``event_type`` (project admin)."""
    require_project(caller, project, "admin")
    store.get_project(project)
    problems = []
    if not _EVENT_TYPE.match(body.event_type):
        problems.append(f"event_type {body.event_type!r} cannot contain white space")
    if body.event_type in RESERVED_TYPES:
        problems.append(f"event_type {body.event_type!r} is reserved for the platform")
    if body.source is not None and not body.source.strip():
        problems.append("source cannot be blank")
    if problems:
        raise invalid("the webhook is invalid", problems)
    record, secret = store.create_webhook(project, body.name, body.event_type, body.source)
    return NewWebhookOut(webhook=_webhook(record), secret=secret)


@webhooks_router.patch("/projects/{project}/webhooks/{webhook_id}")
def update_webhook(
    project: str, webhook_id: str, body: WebhookPatch, caller: Caller, store: StoreDep
) -> WebhookOut:
    """Deactivate a webhook, or activate it again, keeping its secret (project admin)."""
    _require_webhook(project, webhook_id, caller, store)
    return _webhook(store.set_webhook_active(webhook_id, body.active))


@webhooks_router.delete(
    "/projects/{project}/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT
)
def delete_webhook(project: str, webhook_id: str, caller: Caller, store: StoreDep) -> None:
    _require_webhook(project, webhook_id, caller, store)
    store.delete_webhook(webhook_id)


def _require_webhook(project: str, webhook_id: str, caller: Any, store: Any) -> None:
    """The caller is an admin of ``project``, which has the webhook ``webhook_id``."""
    require_project(caller, project, "admin")
    try:
        webhook = store.get_webhook(webhook_id)
    except NotFound:
        webhook = None
    if webhook is None or webhook.project != project:
        raise not_found(f"webhook {webhook_id!r}")


def signature_of(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _webhook_and_secret(store: Any, webhook_id: str) -> tuple[Any, str] | None:
    if len(webhook_id) > 64:
        return None
    try:
        webhook = store.get_webhook(webhook_id)
        secret = store.webhook_secret(webhook_id)
    except NotFound:
        return None
    return (webhook, secret) if webhook.active else None


def _delivery_id(request: Request) -> str:
    for name in DELIVERY_HEADERS:
        value = request.headers.get(name, "").strip()
        if _DELIVERY_ID.match(value):
            return value
    return str(uuid.uuid4())


@webhooks_router.post(
    "/webhooks/{webhook_id}",
    status_code=status.HTTP_202_ACCEPTED,
    include_in_schema=True,
    responses={
        401: {"description": "Missing or wrong X-Hub-Signature-256"},
        404: {"description": "No such (active) webhook"},
        413: {"description": "The body is too large"},
        415: {"description": "A Content-Type other than JSON"},
        422: {"description": "The body is not JSON"},
    },
    openapi_extra={
        "parameters": [
            {
                "name": "X-Hub-Signature-256",
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "sha256=<hex HMAC-SHA256 of the raw body with the secret>",
            }
        ],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
    },
)
async def receive_webhook(
    request: Request,
    store: StoreDep,
    platform: PlatformDep,
    webhook_id: Annotated[str, Path(description="The webhook's id")],
) -> EventId:
    """Receive a signed JSON post from an outside system (no API key: the signature is the
    authentication) and publish it as a CloudEvent of the webhook's type. The body is JSON
    (``Content-Type`` ``application/json``, any ``+json`` type, or none)."""
    limit = platform.settings.max_event_bytes
    raw = await read_body(request, limit)
    found = await run_in_threadpool(_webhook_and_secret, store, webhook_id)
    # the same work whether the webhook exists or not: its existence is not told by timing
    key = found[1].encode() if found else _DUMMY_SECRET
    expected = signature_of(key, raw)
    given = request.headers.get(SIGNATURE_HEADER, "")
    valid = hmac.compare_digest(expected.encode(), given.strip().encode("latin-1", "replace"))
    if found is None:
        raise not_found(f"webhook {webhook_id!r}")
    if not given:
        raise ApiError(401, "the X-Hub-Signature-256 header is missing")
    if not valid:
        raise ApiError(401, "the X-Hub-Signature-256 signature does not match the body")
    webhook = found[0]
    kind = request.headers.get("content-type")
    if kind is not None and not _JSON_TYPE.match(kind.strip()):
        raise ApiError(
            415,
            f"a webhook takes a JSON body (Content-Type application/json), not {kind[:100]!r}",
        )
    try:
        data = ev.strict_json(raw)
    except ValueError as exc:
        raise invalid("the body is not JSON", [str(exc)]) from None
    try:
        event = ev.new_event(
            webhook.event_type,
            data,
            source=webhook.source,
            id=_delivery_id(request),
            **{WEBHOOK_EXTENSION: webhook.id},
        )
    except ev.InvalidEvent as exc:
        raise invalid("the webhook call cannot become a CloudEvent", [str(exc)]) from None
    await run_in_threadpool(platform.publish, [event])
    return EventId(id=str(event["id"]))


router.include_router(events_router)
router.include_router(webhooks_router)
