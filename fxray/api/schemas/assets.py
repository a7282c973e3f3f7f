"""Response models of a project's assets (files stored on the platform)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class AssetOut(BaseModel):
    project: str
    path: str
    size: int = Field(description="Bytes")
    sha256: str = Field(description="sha256 of the content (hex)")
    content_type: str
    etag: str | None = Field(description="The store's entity tag")
    uploaded_at: float
    url: str = Field(description="API path that downloads it")


class UploadOut(AssetOut):
    event_id: str = Field(description="Id of the fxray.asset.uploaded event it published")
