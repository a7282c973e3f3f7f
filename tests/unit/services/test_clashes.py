"""Requirements that exclude the version of a package the platform runs on."""

from __future__ import annotations

from fxray.services.clashes import platform_clashes, platform_packages

PLATFORM = {"pydantic": "2.12.0", "protobuf": "5.29.1", "urllib3": "2.5.0", "ray": "2.60.0"}


def test_pins_the_platform_cannot_satisfy_are_clashes() -> None:
    lines = [
        "pydantic==1.10.13",
        "protobuf>=3,<4",
        "urllib3<1.27",
        "Ray==2.60.0",  # the platform's own version: no clash
        "pydantic>=2",
        "six==1.16.0",  # not a platform package
        "not a requirement ((",
    ]
    clashes = platform_clashes(lines, lambda: PLATFORM)
    assert [(c.requirement, c.package, c.platform_version) for c in clashes] == [
        ("pydantic==1.10.13", "pydantic", "2.12.0"),
        ("protobuf>=3,<4", "protobuf", "5.29.1"),
        ("urllib3<1.27", "urllib3", "2.5.0"),
    ]
    assert "the platform runs pydantic 2.12.0" in clashes[0].describe()


def test_the_platform_packages_are_what_fxray_runs_on_not_its_dev_tools() -> None:
    packages = platform_packages()
    for needed in ("ray", "pydantic", "confluent-kafka", "sqlalchemy", "protobuf"):
        assert needed in packages
    for dev_tool in ("pytest", "hypothesis", "ruff"):
        assert dev_tool not in packages
