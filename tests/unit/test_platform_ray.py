"""How the platform connects to Ray: a Ray Client address (``ray://``) is tried again when the
head's session server fails to start; anything else fails at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fxray import Platform, Settings
from fxray import platform as platform_module


class FakeRay:
    """``ray.init`` that fails the first ``failures`` times with ``error``."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionAbortedError) -> None:
        self.failures, self.error = failures, error
        self.inits: list[dict[str, Any]] = []
        self.shutdowns = 0

    def is_initialized(self) -> bool:
        return False

    def init(self, **options: Any) -> None:
        self.inits.append(options)
        if len(self.inits) <= self.failures:
            raise self.error("Initialization failure from server: ZombieProcess")

    def shutdown(self) -> None:
        self.shutdowns += 1


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(failures: int, error: type[Exception] = ConnectionAbortedError) -> FakeRay:
        fake = FakeRay(failures, error)
        monkeypatch.setattr(platform_module, "ray", fake)
        monkeypatch.setattr(platform_module, "RAY_CLIENT_RETRY_S", 0.0)
        return fake

    return install


def _platform(tmp_path: Path, address: str | None) -> Platform:
    return Platform(Settings(home=tmp_path, ray_address=address))


def test_a_ray_client_connection_is_tried_again(tmp_path: Path, fake_ray: Any) -> None:
    fake = fake_ray(failures=2)
    _platform(tmp_path, "ray://head:10001")._init_ray()
    assert len(fake.inits) == 3 and fake.shutdowns == 2
    assert {o["address"] for o in fake.inits} == {"ray://head:10001"}


def test_a_ray_client_connection_gives_up_after_its_attempts(tmp_path: Path, fake_ray: Any) -> None:
    fake = fake_ray(failures=10)
    with pytest.raises(ConnectionAbortedError):
        _platform(tmp_path, "ray://head:10001")._init_ray()
    assert len(fake.inits) == platform_module.RAY_CLIENT_ATTEMPTS


@pytest.mark.parametrize("address", [None, "10.0.0.1:6379"])
def test_other_addresses_and_other_errors_fail_at_once(
    tmp_path: Path, fake_ray: Any, address: str | None
) -> None:
    fake = fake_ray(failures=1)
    with pytest.raises(ConnectionAbortedError):
        _platform(tmp_path, address)._init_ray()
    assert len(fake.inits) == 1
    typo = fake_ray(failures=1, error=ValueError)
    with pytest.raises(ValueError):
        _platform(tmp_path, "ray://head:10001")._init_ray()
    assert len(typo.inits) == 1
