"""Request and response models of projects and their API keys."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fxray.api.auth import Role
from fxray.api.schemas.common import NAME_PATTERN


class ProjectIn(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, description="Lower-case letters, digits, . _ -")
    description: str = Field(default="", max_length=2000)


class ProjectOut(BaseModel):
    name: str
    description: str
    created_at: float


class KeyIn(BaseModel):
    name: str = Field(min_length=1, max_length=128, description="What the key is for")
    role: Role = "viewer"


class KeyOut(BaseModel):
    id: str
    name: str
    project: str | None
    role: Role
    created_at: float
    last_used_at: float | None
    revoked: bool


class NewKeyOut(BaseModel):
    key: KeyOut
    token: str = Field(description="The secret key; shown only in this answer")
