"""Tests for fxray.services.manifest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fxray.services import Manifest, RetryPolicy
from fxray.services.manifest import format_validation_error


def problems_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as info:
        Manifest.model_validate(data)
    return format_validation_error(info.value, "manifest.json")


def test_minimal_manifest_defaults() -> None:
    m = Manifest.model_validate({"name": "svc", "entrypoint": "main.py"})
    assert m.description == ""
    assert m.tags == []
    assert m.active is True
    assert m.allow_manual_triggering is True
    assert m.execution_order == []
    assert m.trigger_events == []
    assert m.schedule is None
    assert m.priority == 5
    assert m.timeout_s is None
    assert m.retries == RetryPolicy(max=0, backoff_s=1.0)
    assert m.max_concurrency is None
    assert m.output_events == []
    assert m.steps == ["main.py"]


def test_full_manifest() -> None:
    m = Manifest.model_validate(
        {
            "name": "orders_etl-2",
            "description": "loads orders",
            "tags": ["etl", "orders"],
            "active": False,
            "allow_manual_triggering": False,
            "execution_order": ["extract.py", "src/load.py"],
            "trigger_events": ["orders.*", "shop.order.created"],
            "schedule": "*/5 * * * *",
            "priority": 1,
            "timeout_s": 30,
            "retries": {"max": 3, "backoff_s": 0.5},
            "max_concurrency": 4,
            "output_events": ["orders.loaded"],
        }
    )
    assert m.steps == ["extract.py", "src/load.py"]
    assert m.timeout_s == 30.0
    assert m.retries.max == 3
    assert m.retries.backoff_s == 0.5
    assert m.schedule == "*/5 * * * *"


def test_entrypoint_wins_over_execution_order() -> None:
    m = Manifest(name="svc", entrypoint="main.py", execution_order=["a.py", "b.py"])
    assert m.steps == ["main.py"]


def test_steps_is_a_copy() -> None:
    m = Manifest(name="svc", execution_order=["a.py"])
    m.steps.append("b.py")
    assert m.steps == ["a.py"]


def test_script_paths_are_normalised() -> None:
    m = Manifest(name="svc", entrypoint="./src//main.py")
    assert m.entrypoint == "src/main.py"


def test_unknown_field_is_an_error() -> None:
    assert problems_of({"name": "svc", "entrypoint": "m.py", "foo": 1}) == [
        "manifest.json: foo: unknown field"
    ]


def test_unknown_retry_field_is_an_error() -> None:
    problems = problems_of({"name": "svc", "entrypoint": "m.py", "retries": {"tries": 2}})
    assert problems == ["manifest.json: retries.tries: unknown field"]


def test_name_is_required() -> None:
    assert "manifest.json: name: field required" in problems_of({"entrypoint": "m.py"})


@pytest.mark.parametrize(
    "name", ["Svc", "-svc", "_svc", "", "svc.x", "svc x", "a" * 64, "émile", "svc/x"]
)
def test_invalid_names(name: str) -> None:
    problems = problems_of({"name": name, "entrypoint": "m.py"})
    assert len(problems) == 1
    assert problems[0].startswith(f"manifest.json: name: {name!r} is not a valid service name")


@pytest.mark.parametrize("name", ["a", "0", "svc", "my-svc_2", "a" * 63])
def test_valid_names(name: str) -> None:
    assert Manifest(name=name, entrypoint="m.py").name == name


def test_a_step_is_required() -> None:
    expected = "manifest.json: either entrypoint or execution_order must name a script"
    assert problems_of({"name": "svc"}) == [expected]
    assert problems_of({"name": "svc", "entrypoint": None, "execution_order": []}) == [expected]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("main.txt", "'main.txt' is not a .py file"),
        ("../main.py", "'../main.py' must not escape the package folder"),
        ("src/../../main.py", "'src/../../main.py' must not escape the package folder"),
        ("/abs/main.py", "'/abs/main.py' must be a path relative to the package folder"),
        ("C:/main.py", "'C:/main.py' must be a path relative to the package folder"),
        ("src\\main.py", "'src\\\\main.py' must use '/' as the path separator"),
        ("", "script path must not be empty"),
    ],
)
def test_bad_script_paths(path: str, message: str) -> None:
    assert problems_of({"name": "svc", "entrypoint": path}) == [
        f"manifest.json: entrypoint: {message}"
    ]
    assert problems_of({"name": "svc", "execution_order": ["ok.py", path]}) == [
        f"manifest.json: execution_order[1]: {message}"
    ]


def test_execution_order_name_clash() -> None:
    problems = problems_of({"name": "svc", "execution_order": ["a.py", "b.py", "./a.py"]})
    assert problems == ["manifest.json: execution_order: 'a.py' named more than once (name clash)"]


@pytest.mark.parametrize("cron", ["* * * * *", "0 3 * * mon-fri", "@daily", "*/15 * * * *"])
def test_valid_schedules(cron: str) -> None:
    assert Manifest(name="svc", entrypoint="m.py", schedule=cron).schedule == cron


def test_blank_schedule_means_none() -> None:
    assert Manifest(name="svc", entrypoint="m.py", schedule="  ").schedule is None


@pytest.mark.parametrize("cron", ["x", "* * *", "61 * * * *", "every day"])
def test_invalid_schedules(cron: str) -> None:
    (problem,) = problems_of({"name": "svc", "entrypoint": "m.py", "schedule": cron})
    assert problem.startswith(f"manifest.json: schedule: {cron!r} is not a valid cron expression")
    assert "5 fields" in problem


def test_schedule_that_never_fires() -> None:
    (problem,) = problems_of({"name": "svc", "entrypoint": "m.py", "schedule": "0 0 30 2 *"})
    assert problem.startswith("manifest.json: schedule: cron expression '0 0 30 2 *' never fires")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", 0),
        ("priority", 11),
        ("priority", "5"),
        ("priority", 2.5),
        ("timeout_s", 0),
        ("timeout_s", -1),
        ("max_concurrency", 0),
        ("active", "yes"),
        ("tags", "etl"),
        ("trigger_events", ["orders.*", ""]),
        ("trigger_events", ["has space"]),
        ("description", None),
        ("retries", {"max": -1}),
        ("retries", {"backoff_s": -0.5}),
    ],
)
def test_out_of_range_or_wrong_type(field: str, value: Any) -> None:
    problems = problems_of({"name": "svc", "entrypoint": "m.py", field: value})
    assert len(problems) == 1
    assert problems[0].startswith(f"manifest.json: {field}")


def test_all_schema_problems_are_listed() -> None:
    problems = problems_of(
        {"name": "BAD", "execution_order": ["x.txt"], "schedule": "nope", "priority": 99, "x": 1}
    )
    assert len(problems) == 5
    joined = "\n".join(problems)
    for text in ("name:", "execution_order[0]:", "schedule:", "priority:", "x: unknown field"):
        assert text in joined


def test_isolation_is_auto_unless_the_manifest_chooses() -> None:
    assert Manifest.model_validate({"name": "s", "entrypoint": "a.py"}).isolation == "auto"
    for choice in ("process", "in-process"):
        manifest = Manifest.model_validate({"name": "s", "entrypoint": "a.py", "isolation": choice})
        assert manifest.isolation == choice
    assert problems_of({"name": "s", "entrypoint": "a.py", "isolation": "sometimes"}) == [
        "manifest.json: isolation: input should be 'auto', 'process' or 'in-process'"
    ]
