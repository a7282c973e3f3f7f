"""Settings: defaults, FXRAY_* environment variables, a TOML file, keyword arguments."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from fxray.settings import Settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No FXRAY_* variables and an empty working folder (no stray ./fxray.toml)."""
    for name in list(os.environ):
        if name.upper().startswith("FXRAY_"):
            monkeypatch.delenv(name)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults(clean_environment: Path) -> None:
    settings = Settings()
    home = (clean_environment / ".fxray").resolve()
    assert settings.home == home
    assert settings.database_url == f"sqlite:///{home / 'fxray.db'}"
    assert settings.instance == "default"
    assert settings.event_bus == "embedded"
    assert settings.package_store == "local"
    assert settings.kv_store == "local"
    assert settings.executors_max_per_version == 2
    assert settings.executors_min_per_version == 0
    assert settings.ray_address is None
    assert settings.packages_dir == home / "packages"
    assert settings.envs_dir == home / "envs"
    assert settings.kv_path == home / "kv.db"
    assert not home.exists()  # reading settings creates nothing


def test_home_is_expanded_and_absolute(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environment: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(home=Path("~/fx")).home == (tmp_path / "fx").resolve()
    assert Settings(home=Path("rel")).home == (clean_environment / "rel").resolve()


def test_explicit_database_url_kept() -> None:
    url = "postgresql+psycopg2://fx:pw@db:5432/fxray"
    assert Settings(database_url=url).database_url == url


def test_env_var_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FXRAY_EXECUTORS_MAX_PER_VERSION", "3")
    monkeypatch.setenv("FXRAY_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("FXRAY_RAY_INCLUDE_DASHBOARD", "true")
    monkeypatch.setenv("FXRAY_EXECUTOR_CPUS", "0.5")
    settings = Settings()
    assert settings.executors_max_per_version == 3
    assert settings.home == (tmp_path / "state").resolve()
    assert settings.database_url == f"sqlite:///{(tmp_path / 'state').resolve() / 'fxray.db'}"
    assert settings.ray_include_dashboard is True
    assert settings.executor_cpus == 0.5


def test_env_var_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("fxray_instance", "lower")
    assert Settings().instance == "lower"


def test_toml_file_named_by_fxray_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(
        tmp_path / "custom.toml",
        'instance = "prod"\nexecutors_max_per_version = 4\nbus_partitions = 8\n',
    )
    monkeypatch.setenv("FXRAY_CONFIG", str(config))
    settings = Settings()
    assert settings.instance == "prod"
    assert settings.executors_max_per_version == 4
    assert settings.bus_partitions == 8


def test_local_fxray_toml_used(clean_environment: Path) -> None:
    write_toml(clean_environment / "fxray.toml", 'instance = "local-file"\n')
    assert Settings().instance == "local-file"


def test_fxray_config_beats_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_environment: Path
) -> None:
    write_toml(clean_environment / "fxray.toml", 'instance = "local-file"\n')
    monkeypatch.setenv("FXRAY_CONFIG", str(write_toml(tmp_path / "x.toml", 'instance = "named"\n')))
    assert Settings().instance == "named"


def test_precedence_kwargs_then_env_then_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = write_toml(
        tmp_path / "fx.toml",
        'instance = "from-toml"\nexecutors_max_per_version = 4\nbus_partitions = 6\n',
    )
    monkeypatch.setenv("FXRAY_CONFIG", str(config))
    monkeypatch.setenv("FXRAY_EXECUTORS_MAX_PER_VERSION", "3")
    monkeypatch.setenv("FXRAY_INSTANCE", "from-env")
    settings = Settings(instance="from-kwargs")
    assert settings.instance == "from-kwargs"  # kwargs beat env
    assert settings.executors_max_per_version == 3  # env beats TOML
    assert settings.bus_partitions == 6  # TOML beats defaults
    assert Settings(executors_max_per_version=7).executors_max_per_version == 7


def test_unknown_key_in_toml_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_toml(tmp_path / "fx.toml", 'instance = "ok"\nexecutors_per_verison = 3\n')
    monkeypatch.setenv("FXRAY_CONFIG", str(config))
    with pytest.raises(ValidationError, match="executors_per_verison"):
        Settings()


def test_missing_config_file_named_by_fxray_config_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FXRAY_CONFIG", str(tmp_path / "does-not-exist.toml"))
    with pytest.raises((ValueError, OSError), match="does-not-exist"):
        Settings()


def test_unknown_keyword_rejected() -> None:
    with pytest.raises(ValidationError, match="no_such_setting"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("executors_max_per_version", 0),
        ("executors_min_per_version", -1),
        ("executors_max_total", 0),
        ("bus_partitions", 0),
        ("executor_cpus", -0.1),
        ("executor_idle_s", 0),
        ("trigger_refresh_s", -1),
        ("instance", "has space"),
        ("instance", "a/b"),
        ("instance", ""),
        ("event_bus", "rabbitmq"),
        ("env_backend", "conda"),
        ("router_poll_max", "many"),
    ],
)
def test_invalid_values_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FXRAY_EXECUTORS_MAX_PER_VERSION", "zero"),
        ("FXRAY_EXECUTORS_MAX_PER_VERSION", "0"),
        ("FXRAY_INSTANCE", "bad name"),
        ("FXRAY_EVENT_BUS", "rabbitmq"),
    ],
)
def test_invalid_env_values_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_invalid_value_in_toml_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(
        "FXRAY_CONFIG", str(write_toml(tmp_path / "fx.toml", "bus_partitions = 0\n"))
    )
    with pytest.raises(ValidationError, match="bus_partitions"):
        Settings()


def test_public_dict_is_json(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", instance="x")
    data = settings.public_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["home"] == str((tmp_path / "h").resolve())
    assert data["instance"] == "x"
    assert Settings(**data) == settings


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_driverless_postgres_url_uses_psycopg2(scheme: str) -> None:
    settings = Settings(database_url=f"{scheme}://fx:pw@db:5432/fx")
    assert settings.database_url == "postgresql+psycopg2://fx:pw@db:5432/fx"
    other = "postgresql+psycopg://fx@db/fx"  # a driver named explicitly is kept
    assert Settings(database_url=other).database_url == other
