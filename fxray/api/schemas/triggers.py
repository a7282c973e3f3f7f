"""Request and response models of triggers (late linking, A/B weights, shadow versions) and
event mappings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from fxray.api.schemas.common import NAME_PATTERN

MAX_FILTERS = 32
MAX_VERSIONS = 32
MAX_FIELDS = 100

Text = Annotated[str, Field(max_length=255)]
Filters = Annotated[
    dict[Annotated[str, Field(max_length=512)], Text],
    Field(
        max_length=MAX_FILTERS,
        description="Attribute or data-field globs: {'source': 'shop/*', 'data.country': 'CH'}",
    ),
]
Weights = Annotated[
    dict[Text, int],
    Field(
        max_length=MAX_VERSIONS,
        description="Version (id, label or hash prefix) -> weight, for A/B splits; "
        "empty: the latest version",
    ),
]


# -- triggers ---------------------------------------------------------------------------------


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: Text = Field(description="An event type, or a glob such as 'orders.*'")
    service: Text = Field(description="The service's name in its project")
    project: Annotated[str, Field(pattern=NAME_PATTERN)] | None = Field(
        default=None,
        description="The service's project: platform-wide keys name it where the service's "
        "name is in several projects (a project key's own project is the default)",
    )
    filters: Filters = Field(default_factory=dict)
    weights: Weights = Field(default_factory=dict)
    shadow_version: Text | None = Field(
        default=None,
        description="A version that also runs on a copy of the traffic; its events are "
        "marked (fxshadow) and not routed onward",
    )
    ordered: bool = Field(
        default=False, description="Run the events of one partition key one at a time"
    )


class TriggerPatch(BaseModel):
    """The fields to change; ``shadow_version: null`` removes the shadow version."""

    model_config = ConfigDict(extra="forbid")

    pattern: Text | None = None
    filters: Filters | None = None
    weights: Weights | None = None
    shadow_version: Text | None = None
    ordered: bool | None = None
    active: bool | None = None


class TriggerOut(BaseModel):
    id: str
    pattern: str
    service: str = Field(description="The service's name in its project")
    project: str
    filters: dict[str, str]
    weights: dict[str, int] = Field(description="Version id -> weight")
    shadow_version: str | None
    ordered: bool
    active: bool
    created_at: float
    updated_at: float


# -- event mappings ---------------------------------------------------------------------------


class FieldMapIn(BaseModel):
    """``{"from": "order.id", "to": "id", "op": "rename"}`` (dotted paths into ``data``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_path: Text = Field(alias="from")
    to_path: Text = Field(alias="to")
    op: Literal["rename", "copy"] = "rename"

    def to_dict(self) -> dict[str, str]:
        return {"from": self.from_path, "to": self.to_path, "op": self.op}


class MappingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_type: Text = Field(description="The event type mapped (exact, not a glob)")
    target_type: Text = Field(description="The type of the events made")
    fields: list[FieldMapIn] = Field(default_factory=list, max_length=MAX_FIELDS)
    map_all: bool = Field(
        default=False,
        description="Start from all of the data (true) or only the listed fields (false)",
    )
    active: bool = True
    project: Annotated[str, Field(max_length=64)] | None = Field(
        default=None, description="The project (platform-wide admin keys only; else the key's)"
    )


class MappingPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_type: Text | None = None
    target_type: Text | None = None
    fields: Annotated[list[FieldMapIn], Field(max_length=MAX_FIELDS)] | None = None
    map_all: bool | None = None
    active: bool | None = None


class MappingOut(BaseModel):
    id: str
    project: str
    source_type: str
    target_type: str
    fields: list[FieldMapIn]
    map_all: bool
    active: bool
    created_at: float
    updated_at: float
