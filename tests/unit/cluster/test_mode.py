"""Cluster mode: when it is on, and the node-local settings it refuses (all at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fxray.cluster.mode import (
    ClusterModeError,
    check_cluster_mode,
    cluster_mode_on,
    node_local_problems,
)
from fxray.settings import Settings

ONE = [{"Alive": True}]
TWO = [{"Alive": True}, {"Alive": True}]
TWO_ONE_DEAD = [{"Alive": True}, {"Alive": False}]
SHARED: dict[str, Any] = {
    "database_url": "postgresql+psycopg2://fx@db/fxray",
    "event_bus": "kafka",
    "package_store": "s3",
    "kv_store": "consul",
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_on_with_more_than_one_alive_node_or_declared_node_types(home: Path) -> None:
    embedded = Settings(home=home)
    assert not cluster_mode_on(embedded, ONE)
    assert not cluster_mode_on(embedded, TWO_ONE_DEAD)
    assert cluster_mode_on(embedded, TWO)
    declared = Settings(home=home, cluster_node_types={"executors": {"CPU": 2}})
    assert cluster_mode_on(declared, ONE)  # an autoscaling cluster that starts with its head


def test_the_setting_wins_over_what_ray_shows(home: Path) -> None:
    assert cluster_mode_on(Settings(home=home, cluster_mode=True), ONE)
    assert not cluster_mode_on(Settings(home=home, cluster_mode=False), TWO)


def test_every_node_local_backend_is_named_with_its_fix(home: Path) -> None:
    problems = node_local_problems(Settings(home=home))
    assert len(problems) == 4
    text = "\n".join(problems)
    for fix in (
        "FXRAY_DATABASE_URL",
        "FXRAY_EVENT_BUS=kafka",
        "FXRAY_PACKAGE_STORE=s3",
        "FXRAY_KV_STORE=consul",
    ):
        assert fix in text
    assert node_local_problems(Settings(home=home, **SHARED)) == []


def test_cluster_mode_with_node_local_settings_is_refused(home: Path) -> None:
    with pytest.raises(ClusterModeError) as refused:
        check_cluster_mode(Settings(home=home, kv_store="consul"), TWO)
    message = str(refused.value)
    assert "cluster mode (Ray has 2 nodes)" in message
    assert "SQLite" in message and "FXRAY_KV_STORE" not in message
    assert "FXRAY_CLUSTER_MODE=false" in message


def test_shared_backends_pass_and_single_node_is_not_checked(home: Path) -> None:
    assert check_cluster_mode(Settings(home=home, **SHARED), TWO) is True
    assert check_cluster_mode(Settings(home=home), ONE) is False
    assert check_cluster_mode(Settings(home=home, cluster_mode=False), TWO) is False
