"""SQLAlchemy 2 tables for the management state: services, versions, triggers, runs, events,
and the Management API's projects, API keys, webhooks, mappings, schedules and event catalog.

The schema is made by the Alembic migrations in ``fxray/store/migrations``; a change here needs
a new migration (a unit test compares the two).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


SERVICE_ID = String(128)  # <project>.<name>: 64 + 1 + 63 characters at most
VERSION_ID = String(160)  # <service id>@<12 hex digits>


class ServiceRow(Base):
    __tablename__ = "services"
    __table_args__ = (UniqueConstraint("project", "name", name="uq_services_project_name"),)

    # unique on the platform: what versions, triggers, schedules, runs, KV keys and ops data
    # are keyed by (fxray.store.records.qualified_service_id)
    id: Mapped[str] = mapped_column(SERVICE_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))  # unique within the project
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    allow_manual_triggering: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[int] = mapped_column(Integer, default=5)
    schedule: Mapped[str | None] = mapped_column(String(128), nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    project: Mapped[str] = mapped_column(
        String(64), default="default", server_default="default", index=True
    )


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("service", "content_hash"),)

    id: Mapped[str] = mapped_column(VERSION_ID, primary_key=True)
    service: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    content_hash: Mapped[str] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(128), nullable=True)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    requirements: Mapped[list[Any]] = mapped_column(JSON, default=list)
    requirements_hash: Mapped[str] = mapped_column(String(64), default="")
    deployed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)


class TriggerRow(Base):
    __tablename__ = "triggers"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    pattern: Mapped[str] = mapped_column(String(255))
    service: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"))
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    shadow_version: Mapped[str | None] = mapped_column(VERSION_ID, nullable=True)
    ordered: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_service_created", "service", "created_at"),
        Index("ix_runs_correlation", "correlation_id"),
        Index("ix_runs_status", "status"),
        Index("ix_runs_event", "event_id"),
        Index("ix_runs_created_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    service: Mapped[str] = mapped_column(SERVICE_ID)  # the service's id
    version_id: Mapped[str] = mapped_column(VERSION_ID)
    trigger_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    event_id: Mapped[str] = mapped_column(String(255))
    event_type: Mapped[str] = mapped_column(String(255))
    correlation_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=5)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    steps: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    # the ops record the row was last written from (run summaries kept by the ops sink);
    # None for rows the router writes itself
    rank: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_correlation", "correlation_id"),
        Index("ix_events_type", "type"),
        Index("ix_events_received_id", "received_at", "id"),
        Index(  # the events runs emitted, by time (the flow map)
            "ix_events_emitted_received",
            "received_at",
            postgresql_where=text("run_id IS NOT NULL"),
            sqlite_where=text("run_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(255))
    time: Mapped[str | None] = mapped_column(String(64), nullable=True)
    parent_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    correlation_id: Mapped[str] = mapped_column(String(255))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[float] = mapped_column(Float)


class MetaRow(Base):
    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


class ProjectRow(Base):
    __tablename__ = "projects"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: platform-wide
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    # sha256 hex of the token: tokens carry 32 random bytes, so a fast unsalted hash is enough
    # (nothing to brute-force); slow password hashes are for low-entropy secrets.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class WebhookRow(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(255))
    secret: Mapped[str] = mapped_column(Text)  # verifies HMAC signatures; never listed
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)


class MappingRow(Base):
    __tablename__ = "mappings"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    project: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(255), index=True)
    target_type: Mapped[str] = mapped_column(String(255))
    fields: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"from", "to", "op"}]
    map_all: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class ScheduleRow(Base):
    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service: Mapped[str] = mapped_column(ForeignKey("services.id", ondelete="CASCADE"), index=True)
    cron: Mapped[str] = mapped_column(String(128))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    origin: Mapped[str] = mapped_column(String(16))  # manifest | api
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    next_fire_at: Mapped[float] = mapped_column(Float, index=True)
    skip_next: Mapped[bool] = mapped_column(Boolean, default=False)
    last_fired_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class EventTypeRow(Base):
    __tablename__ = "event_types"

    type: Mapped[str] = mapped_column(String(255), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
    first_seen: Mapped[float] = mapped_column(Float)
    last_seen: Mapped[float] = mapped_column(Float)
    schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    schema_version: Mapped[int] = mapped_column(Integer, default=0)
    emitters: Mapped[list[Any]] = mapped_column(JSON, default=list)


class SchemaChangeRow(Base):
    __tablename__ = "schema_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(255), index=True)
    version: Mapped[int] = mapped_column(Integer)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    changes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    at: Mapped[float] = mapped_column(Float)
