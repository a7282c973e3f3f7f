"""API fixtures: a started platform behind the FastAPI app, on SQLite and on PostgreSQL.

One platform per test module and database (starting one takes seconds); tests stay
independent by making their own projects (``api.project()``) and services.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient

from fxray import Platform, Settings
from fxray.api import create_app


@dataclass
class ProjectKeys:
    """A fresh project and one key (as request headers) per role."""

    name: str
    viewer: dict[str, str]
    developer: dict[str, str]
    admin: dict[str, str]


@dataclass
class ApiHarness:
    client: TestClient
    platform: Platform
    admin: dict[str, str]  # a platform-wide admin key
    database: str
    _projects: list[str] = field(default_factory=list)

    def service_id(self, name: str, project: ProjectKeys) -> str:
        """The platform's id of ``project``'s service ``name``: what the ``Platform`` methods
        and run records name it by (names are per project, ids unique on the platform)."""
        return self.platform.find_service(name, project.name).id

    def project(self, prefix: str = "p") -> ProjectKeys:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        answer = self.client.post("/api/v1/projects", json={"name": name}, headers=self.admin)
        assert answer.status_code == 201, answer.text
        keys = {}
        for role in ("viewer", "developer", "admin"):
            made = self.client.post(
                f"/api/v1/projects/{name}/keys",
                json={"name": f"{role} key", "role": role},
                headers=self.admin,
            )
            assert made.status_code == 201, made.text
            keys[role] = {"Authorization": f"Bearer {made.json()['token']}"}
        self._projects.append(name)
        return ProjectKeys(name, **keys)


def database_url(kind: str, folder: Path) -> tuple[str, Any]:
    """A fresh database: a SQLite file, or a schema of its own in the test PostgreSQL."""
    if kind == "sqlite":
        return f"sqlite:///{folder / 'state.db'}", None
    base = os.environ.get("FXRAY_TEST_POSTGRES_URL")
    if base is None:
        if os.environ.get("FXRAY_REQUIRE_SERVERS"):
            pytest.fail("FXRAY_TEST_POSTGRES_URL is not set (run through `make test`)")
        pytest.skip("no PostgreSQL: run through `make test`")
    schema = f"api{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{schema}", drop


def start_api(folder: Path, url: str, **overrides: Any) -> ApiHarness:
    settings = Settings(
        home=folder / "home", instance=f"a{uuid.uuid4().hex[:8]}", database_url=url, **overrides
    )
    platform = Platform(settings).start()
    assert platform.store is not None
    _, token = platform.store.create_api_key("test admin", "admin", None)
    client = TestClient(create_app(platform), raise_server_exceptions=False)
    kind = "postgresql" if url.startswith("postgresql") else "sqlite"
    return ApiHarness(client, platform, {"Authorization": f"Bearer {token}"}, kind)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(
    request: pytest.FixtureRequest, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiHarness]:
    folder = tmp_path_factory.mktemp("api")
    url, drop = database_url(request.param, folder)
    harness = start_api(folder, url)
    yield harness
    harness.client.close()
    harness.platform.stop()
    if drop is not None:
        drop()


@pytest.fixture(scope="module")
def sqlite_api(ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiHarness]:
    """SQLite only: for tests whose subject is not the database (kept quick)."""
    folder = tmp_path_factory.mktemp("api")
    url, _ = database_url("sqlite", folder)
    harness = start_api(folder, url)
    yield harness
    harness.client.close()
    harness.platform.stop()
