"""A state database at migration 0004 (service names unique on the platform) with data in every
table that names a service, and the checks that migration 0005 kept it; for the store tests on
SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from alembic import command

from fxray.store import StateStore, migrations

# (name, project): "invoices" is in another project than the default one, as a project's
# services were before names were per project
SERVICES = (("orders", "default"), ("invoices", "shop"))
HASH = "ab" * 32


def make_0004_database(url: str) -> None:
    """Migrate to 0004 and write projects, services, versions, triggers (with weights and a
    shadow version), schedules, runs and the routing revision as that release did."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrations.config(connection), "0004")
            connection.execute(
                sa.text(
                    "INSERT INTO projects (name, description, created_at) VALUES ('shop', '', 1)"
                )
            )
            for name, project in SERVICES:
                connection.execute(
                    sa.text(
                        "INSERT INTO services (name, description, tags, active,"
                        " allow_manual_triggering, priority, created_at, updated_at, project)"
                        " VALUES (:name, 'd', '[]', true, true, 5, 1, 2, :project)"
                    ),
                    {"name": name, "project": project},
                )
                version = f"{name}@{HASH[:12]}"
                connection.execute(
                    sa.text(
                        "INSERT INTO versions (id, service, content_hash, label, manifest,"
                        " requirements, requirements_hash, created_at)"
                        " VALUES (:id, :service, :hash, 'v1', :manifest, '[]', '', 3)"
                    ),
                    {
                        "id": version,
                        "service": name,
                        "hash": HASH,
                        "manifest": json.dumps({"name": name, "entrypoint": "main.py"}),
                    },
                )
                connection.execute(
                    sa.text(
                        "INSERT INTO triggers (id, pattern, service, filters, weights,"
                        " shadow_version, ordered, active, created_at, updated_at)"
                        " VALUES (:id, :pattern, :service, '{}', :weights, :version, false,"
                        " true, 4, 4)"
                    ),
                    {
                        "id": f"t-{name}",
                        "pattern": f"{name}.created",
                        "service": name,
                        "weights": json.dumps({version: 100}),
                        "version": version,
                    },
                )
                connection.execute(
                    sa.text(
                        "INSERT INTO schedules (id, service, cron, params, origin, active,"
                        " next_fire_at, skip_next, created_at, updated_at)"
                        " VALUES (:id, :service, '0 0 * * *', '{}', 'api', true, 9, false, 5, 5)"
                    ),
                    {"id": f"s-{name}", "service": name},
                )
                connection.execute(
                    sa.text(
                        "INSERT INTO runs (id, service, version_id, trigger_id, event_id,"
                        " event_type, correlation_id, status, priority, attempt, shadow,"
                        " created_at, steps, logs, rank)"
                        " VALUES (:id, :service, :version, :trigger, 'e1', 'x', 'c1',"
                        " 'succeeded', 5, 1, false, 6, '[]', '[]', 7)"
                    ),
                    {
                        "id": f"r-{name}",
                        "service": name,
                        "version": version,
                        "trigger": f"t-{name}",
                    },
                )
            connection.execute(
                sa.text("INSERT INTO meta (key, value) VALUES ('routing_revision', 11)")
            )
    finally:
        engine.dispose()


def check_upgraded(url: str) -> None:
    """Open the database as the platform does (which migrates it) and check that every
    service kept its id, got its name, and kept its versions, triggers, schedules and runs."""
    store = StateStore(url)
    try:
        assert store.revision() == 11
        for name, project in SERVICES:
            service = store.find_service(project, name)
            assert (service.id, service.name, service.project) == (name, name, project)
            assert service.description == "d" and service.updated_at == 2.0
            (version,) = store.list_versions(service.id)
            assert (version.id, version.label) == (f"{name}@{HASH[:12]}", "v1")
            (trigger,) = store.list_triggers(service.id)
            assert trigger.weights == {version.id: 100} and trigger.shadow_version == version.id
            assert [s.id for s in store.list_schedules(service.id)] == [f"s-{name}"]
            run = store.get_run(f"r-{name}")
            assert (run.service, run.version_id) == (name, version.id)
        snapshot = store.routing_snapshot()
        assert set(snapshot.services) == {"orders", "invoices"}
        assert snapshot.latest == {
            "orders": f"orders@{HASH[:12]}",
            "invoices": f"invoices@{HASH[:12]}",
        }

        # new services: a name another project has, in each project
        assert store.upsert_service("orders", project="shop").id == "shop.orders"
        # the plain id "invoices" is taken (by the shop's service from before the migration)
        newer = store.upsert_service("invoices")
        assert (newer.id, newer.project) == ("default.invoices", "default")
        long_project = "p" * 64
        store.create_project(long_project)
        longest = store.upsert_service("s" * 63, project=long_project)
        added, _ = store.add_version(longest.id, "cd" * 32, {"name": longest.name})
        assert len(longest.id) == 128 and len(added.id) == 141

        # (project, name) is unique; the foreign keys point at services.id and still cascade
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO services (id, name, project, description, tags, active,"
                    " allow_manual_triggering, priority, created_at, updated_at)"
                    " VALUES ('x', 'orders', 'default', '', '[]', true, true, 5, 1, 1)"
                )
            )
        with store.engine.begin() as connection:
            connection.execute(sa.text("DELETE FROM services WHERE id = 'invoices'"))
            for table in ("versions", "triggers", "schedules"):
                left = connection.execute(
                    sa.text(f"SELECT count(*) FROM {table} WHERE service = 'invoices'")
                ).scalar()
                assert left == 0, table
    finally:
        store.close()
