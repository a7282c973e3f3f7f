"""The shared backends a cluster-mode platform needs, on the test servers: a PostgreSQL schema,
Kafka topics and a consumer group, an S3 bucket (all fresh), and the Consul KV test double.
A missing server fails under CI or ``FXRAY_REQUIRE_SERVERS``, else skips."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy

from tests.consul_server import ConsulTestServer
from tests.integration.packages.conftest import client_for, drop_bucket, s3_settings


def _required(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        what = f"{name} is not set (run through `make test` / scripts/testinfra.sh up)"
        if os.environ.get("FXRAY_REQUIRE_SERVERS") or os.environ.get("CI") == "true":
            pytest.fail(what, pytrace=False)
        pytest.skip(what)
    return value


@contextlib.contextmanager
def shared_backends(prefix: str) -> Iterator[dict[str, Any]]:
    """Settings overrides for cluster mode on the test servers; everything made is removed."""
    postgres = _required("FXRAY_TEST_POSTGRES_URL")
    kafka = _required("FXRAY_KAFKA_BOOTSTRAP")
    s3 = s3_settings()
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(postgres)
    with admin.begin() as conn:
        conn.execute(sqlalchemy.text(f"CREATE SCHEMA {name}"))
    separator = "&" if "?" in postgres else "?"
    bucket = f"fxray-{name}"
    s3_client = client_for(s3)
    try:
        with ConsulTestServer() as consul:
            yield {
                "database_url": f"{postgres}{separator}options=-csearch_path%3D{name}",
                "event_bus": "kafka",
                "kafka_bootstrap": kafka,
                "events_topic": f"{name}.events",
                "deadletter_topic": f"{name}.deadletter",
                "ops_runs_topic": f"{name}.ops.runs",
                "ops_logs_topic": f"{name}.ops.logs",
                "router_group": f"{name}.routers",
                "package_store": "s3",
                "s3_bucket": bucket,
                **s3,
                "kv_store": "consul",
                "consul_url": consul.url,
            }
    finally:
        with contextlib.suppress(Exception):
            drop_bucket(s3_client, bucket)
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()
