"""Projects, API keys and webhooks: who may do what, and which outside callers may send events."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, replace

from sqlalchemy import delete, func, or_, select, update

from fxray.store.common import Conflict, NotFound, StoreMixin, record
from fxray.store.models import ApiKeyRow, MappingRow, ProjectRow, ServiceRow, WebhookRow
from fxray.store.records import DEFAULT_PROJECT, ServiceRecord

ROLES = ("viewer", "developer", "admin")
TOKEN_PREFIX = "fxk_"
_LAST_USED_EVERY_S = 60.0
_MIN_IMPORTED_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    name: str
    description: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: str
    project: str | None  # None: a platform-wide key
    role: str
    name: str
    created_at: float
    last_used_at: float | None
    revoked: bool


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    project: str
    name: str
    event_type: str
    source: str
    active: bool
    created_at: float


def hash_token(token: str) -> str:
    """sha256 hex of a token: tokens carry 32 random bytes, so a fast hash is enough."""
    return hashlib.sha256(token.encode()).hexdigest()


class AccessStore(StoreMixin):
    """Projects, API keys, webhooks, and the project of each service."""

    # -- projects -----------------------------------------------------------------------------

    def create_project(self, name: str, description: str = "") -> ProjectRecord:
        with self.session() as s:
            if s.get(ProjectRow, name) is not None:
                raise Conflict(f"project {name!r} exists already")
            row = ProjectRow(name=name, description=description, created_at=time.time())
            s.add(row)
            s.flush()
            return record(ProjectRecord, row)

    def get_project(self, name: str) -> ProjectRecord:
        with self.session() as s:
            row = s.get(ProjectRow, name)
            if row is None:
                raise NotFound(f"no project named {name!r}")
            return record(ProjectRecord, row)

    def list_projects(self) -> list[ProjectRecord]:
        with self.session() as s:
            rows = s.scalars(select(ProjectRow).order_by(ProjectRow.name))
            return [record(ProjectRecord, r) for r in rows]

    def delete_project(self, name: str) -> None:
        """Delete an empty project with its API keys, webhooks and mappings."""
        if name == DEFAULT_PROJECT:
            raise Conflict("the default project cannot be deleted")
        with self.session() as s:
            if s.get(ProjectRow, name) is None:
                raise NotFound(f"no project named {name!r}")
            services = s.scalar(
                select(func.count()).select_from(ServiceRow).where(ServiceRow.project == name)
            )
            if services:
                raise Conflict(f"project {name!r} still has {services} service(s)")
            s.execute(delete(ApiKeyRow).where(ApiKeyRow.project == name))
            s.execute(delete(WebhookRow).where(WebhookRow.project == name))
            if s.execute(delete(MappingRow).where(MappingRow.project == name)).rowcount:
                self._bump(s)
            s.execute(delete(ProjectRow).where(ProjectRow.name == name))

    def set_service_project(self, service: str, project: str) -> ServiceRecord:
        """Move the service with id ``service`` to ``project``; it keeps its id (what its
        versions, runs, KV keys and ops data are keyed by). :class:`Conflict` if ``project``
        has a service of the same name."""
        with self.session() as s:
            if s.get(ProjectRow, project) is None:
                raise NotFound(f"no project named {project!r}")
            row = s.get(ServiceRow, service)
            if row is None:
                raise NotFound(f"no service {service!r}")
            if row.project != project and s.scalar(
                select(ServiceRow.id).where(
                    ServiceRow.project == project, ServiceRow.name == row.name
                )
            ):
                raise Conflict(f"project {project!r} has a service named {row.name!r} already")
            row.project = project
            row.updated_at = time.time()
            self._bump(s)
            s.flush()
            return record(ServiceRecord, row)

    # -- API keys -----------------------------------------------------------------------------

    def create_api_key(self, name: str, role: str, project: str | None) -> tuple[ApiKeyRecord, str]:
        """A new key and its token ``fxk_<id>_<secret>``; only the token's hash is kept."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        key_id = secrets.token_hex(6)
        token = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        with self.session() as s:
            if project is not None and s.get(ProjectRow, project) is None:
                raise NotFound(f"no project named {project!r}")
            row = ApiKeyRow(
                id=key_id,
                project=project,
                role=role,
                name=name,
                key_hash=hash_token(token),
                created_at=time.time(),
                last_used_at=None,
                revoked=False,
            )
            s.add(row)
            s.flush()
            return record(ApiKeyRecord, row), token

    def authenticate(self, token: str) -> ApiKeyRecord | None:
        """The unrevoked key of ``token``, or None; notes its use at most once a minute."""
        if not token:
            return None
        with self.session() as s:
            row = s.scalar(select(ApiKeyRow).where(ApiKeyRow.key_hash == hash_token(token)))
            if row is None or row.revoked:
                return None
            key = record(ApiKeyRecord, row)
        now = time.time()
        if key.last_used_at is None or now - key.last_used_at >= _LAST_USED_EVERY_S:
            # A transaction of its own that starts by writing (SQLite: no stale-read upgrade).
            with self.session() as s:
                s.execute(
                    update(ApiKeyRow)
                    .where(
                        ApiKeyRow.id == key.id,
                        or_(
                            ApiKeyRow.last_used_at.is_(None),
                            ApiKeyRow.last_used_at <= now - _LAST_USED_EVERY_S,
                        ),
                    )
                    .values(last_used_at=now)
                )
            key = replace(key, last_used_at=now)
        return key

    def import_api_key(self, token: str, name: str, role: str, project: str | None) -> ApiKeyRecord:
        """Keep a token chosen elsewhere (e.g. ``FXRAY_ADMIN_KEY``) as a key.

        Conflict if the token is a key already (revoked or not); ValueError if it is shorter
        than 16 characters (only its fast hash is kept, so it must be hard to guess).
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        if len(token) < _MIN_IMPORTED_LENGTH:
            raise ValueError(f"an API key must have at least {_MIN_IMPORTED_LENGTH} characters")
        digest = hash_token(token)
        with self.session() as s:
            if project is not None and s.get(ProjectRow, project) is None:
                raise NotFound(f"no project named {project!r}")
            if s.scalar(select(ApiKeyRow.id).where(ApiKeyRow.key_hash == digest)) is not None:
                raise Conflict("this token is an API key already (it may have been revoked)")
            key_id = _token_id(token)
            if key_id is None or s.get(ApiKeyRow, key_id) is not None:
                key_id = secrets.token_hex(6)
            row = ApiKeyRow(
                id=key_id,
                project=project,
                role=role,
                name=name,
                key_hash=digest,
                created_at=time.time(),
                last_used_at=None,
                revoked=False,
            )
            s.add(row)
            s.flush()
            return record(ApiKeyRecord, row)

    def list_api_keys(self, project: str | None = None) -> list[ApiKeyRecord]:
        """Every key (revoked ones too), or those of one project."""
        query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.id)
        if project is not None:
            query = query.where(ApiKeyRow.project == project)
        with self.session() as s:
            return [record(ApiKeyRecord, r) for r in s.scalars(query)]

    def get_api_key(self, key_id: str) -> ApiKeyRecord:
        """One key by id (revoked or not); :class:`NotFound` if there is none."""
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            return record(ApiKeyRecord, row)

    def revoke_api_key(self, key_id: str) -> ApiKeyRecord:
        with self.session() as s:
            row = s.get(ApiKeyRow, key_id)
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            row.revoked = True
            s.flush()
            return record(ApiKeyRecord, row)

    def count_api_keys(self, *, active_only: bool = False) -> int:
        """How many keys were ever created (revoked ones too unless ``active_only``).

        Counting revoked keys by default means that revoking the last key does not make an
        "open until the first key exists" API open again.
        """
        query = select(func.count()).select_from(ApiKeyRow)
        if active_only:
            query = query.where(ApiKeyRow.revoked.is_(False))
        with self.session() as s:
            return int(s.scalar(query) or 0)

    # -- webhooks -----------------------------------------------------------------------------

    def create_webhook(
        self, project: str, name: str, event_type: str, source: str | None = None
    ) -> tuple[WebhookRecord, str]:
        """A new webhook and its signing secret (returned only here)."""
        webhook_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with self.session() as s:
            if s.get(ProjectRow, project) is None:
                raise NotFound(f"no project named {project!r}")
            row = WebhookRow(
                id=webhook_id,
                project=project,
                name=name,
                event_type=event_type,
                source=source or f"fxray/webhooks/{webhook_id}",
                secret=secret,
                active=True,
                created_at=time.time(),
            )
            s.add(row)
            s.flush()
            return record(WebhookRecord, row), secret

    def get_webhook(self, webhook_id: str) -> WebhookRecord:
        with self.session() as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFound(f"no webhook {webhook_id!r}")
            return record(WebhookRecord, row)

    def webhook_secret(self, webhook_id: str) -> str:
        with self.session() as s:
            secret = s.scalar(select(WebhookRow.secret).where(WebhookRow.id == webhook_id))
            if secret is None:
                raise NotFound(f"no webhook {webhook_id!r}")
            return secret

    def list_webhooks(self, project: str | None = None) -> list[WebhookRecord]:
        query = select(WebhookRow).order_by(WebhookRow.created_at, WebhookRow.id)
        if project is not None:
            query = query.where(WebhookRow.project == project)
        with self.session() as s:
            return [record(WebhookRecord, r) for r in s.scalars(query)]

    def set_webhook_active(self, webhook_id: str, active: bool) -> WebhookRecord:
        """Turn a webhook off (its posts answer 404) or on again; its secret is kept."""
        with self.session() as s:
            row = s.get(WebhookRow, webhook_id)
            if row is None:
                raise NotFound(f"no webhook {webhook_id!r}")
            row.active = active
            return record(WebhookRecord, row)

    def delete_webhook(self, webhook_id: str) -> None:
        with self.session() as s:
            if s.execute(delete(WebhookRow).where(WebhookRow.id == webhook_id)).rowcount == 0:
                raise NotFound(f"no webhook {webhook_id!r}")


def _token_id(token: str) -> str | None:
    """The key id in a token of the form ``fxk_<id>_<secret>``, if it is one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
    if not secret or not 0 < len(key_id) <= 32 or not key_id.isalnum():
        return None
    return key_id
