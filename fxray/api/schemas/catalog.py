"""Response models of the event catalog: event types, their data's JSON Schema and its
history."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventTypeOut(BaseModel):
    type: str
    count: int = Field(description="Events of this type seen")
    first_seen: float = Field(description="Unix time of the earliest event (its `time`)")
    last_seen: float = Field(description="Unix time of the latest event (its `time`)")
    emitters: list[str] = Field(description="Services whose runs emitted events of this type")
    linked_services: list[str] = Field(
        description="Services with an active trigger whose pattern matches this type"
    )
    schema_version: int = Field(description="The schema's version (0: no schema yet)")


class EventTypeDetailOut(EventTypeOut):
    model_config = ConfigDict(populate_by_name=True)

    json_schema: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description="JSON Schema (draft 2020-12 subset) of the events' `data`",
    )


class SchemaChangeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    version: int
    at: float = Field(description="Unix time the schema changed")
    changes: list[str] = Field(description="What changed from the previous version, in words")
    json_schema: dict[str, Any] = Field(alias="schema", description="The schema from then on")
