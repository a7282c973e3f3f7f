"""Response models of events in (the CloudEvents HTTP binding), and request and response
models of signed webhooks."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# -- events in --------------------------------------------------------------------------------


class EventIds(BaseModel):
    ids: list[str] = Field(description="The ids of the accepted events, in order")


class EventId(BaseModel):
    id: str = Field(description="The id of the event the webhook call became")


# -- webhooks ---------------------------------------------------------------------------------


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, description="What calls it")
    event_type: str = Field(
        min_length=1, max_length=255, description="The type of the events it makes"
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=255,
        description="The events' source (default: fxray/webhooks/<id>)",
    )


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    active: bool = Field(
        strict=True, description="false: its posts answer 404 until it is turned on again"
    )


class WebhookOut(BaseModel):
    id: str
    project: str
    name: str
    event_type: str
    source: str
    active: bool
    created_at: float
    url: str = Field(description="Where the outside system posts (no API key; signed body)")


class NewWebhookOut(BaseModel):
    webhook: WebhookOut
    secret: str = Field(
        description="The HMAC-SHA256 signing secret; shown only in this answer. Sign the raw "
        "body and send X-Hub-Signature-256: sha256=<hex digest>"
    )
