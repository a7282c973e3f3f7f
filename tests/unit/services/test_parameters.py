"""Tests for fxray.services.parameters."""

from __future__ import annotations

from typing import Any

import pytest

from fxray.services import Parameter, ParameterError, validate_params
from fxray.services.parameters import parse_parameter_fields


def problems_of(fields: list[Parameter], values: Any) -> list[str]:
    with pytest.raises(ParameterError) as info:
        validate_params(fields, values)
    return info.value.problems


def field_problems(data: Any) -> list[str]:
    with pytest.raises(ParameterError) as info:
        parse_parameter_fields(data)
    return info.value.problems


# --- coercion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "raw", "expected"),
    [
        ("text", "hello", "hello"),
        ("text", 42, "42"),
        ("int", 3, 3),
        ("int", "3", 3),
        ("int", " -7 ", -7),
        ("int", "4.0", 4),
        ("int", 5.0, 5),
        ("float", 1, 1.0),
        ("float", "2.5", 2.5),
        ("float", " -1e3 ", -1000.0),
        ("bool", True, True),
        ("bool", False, False),
        ("bool", "true", True),
        ("bool", "False", False),
        ("bool", "YES", True),
        ("bool", "no", False),
        ("bool", "1", True),
        ("bool", "0", False),
        ("bool", 1, True),
        ("bool", 0, False),
    ],
)
def test_coercion(type_: str, raw: Any, expected: Any) -> None:
    fields = [Parameter(name="p", type=type_)]
    result = validate_params(fields, {"p": raw})
    assert result == {"p": expected}
    assert type(result["p"]) is type(expected)


@pytest.mark.parametrize(
    ("type_", "raw", "message"),
    [
        ("text", {"a": 1}, "p: expected text, got an object"),
        ("text", [1], "p: expected text, got a list"),
        ("int", "abc", "p: expected an integer, got 'abc'"),
        ("int", "4.5", "p: expected an integer, got '4.5'"),
        ("int", 4.5, "p: expected an integer, got 4.5"),
        ("int", True, "p: expected an integer, got a boolean"),
        ("float", "abc", "p: expected a number, got 'abc'"),
        ("float", "nan", "p: expected a number, got 'nan'"),
        ("float", "inf", "p: expected a number, got 'inf'"),
        ("float", False, "p: expected a number, got a boolean"),
        ("bool", "maybe", "p: expected true/false (or yes/no, 1/0), got 'maybe'"),
        ("bool", 2, "p: expected true/false (or yes/no, 1/0), got 2"),
    ],
)
def test_coercion_problems(type_: str, raw: Any, message: str) -> None:
    assert problems_of([Parameter(name="p", type=type_)], {"p": raw}) == [message]


def test_select() -> None:
    fields = [Parameter(name="c", type="select", choices=["ch", "de", 3])]
    assert validate_params(fields, {"c": "de"}) == {"c": "de"}
    assert validate_params(fields, {"c": 3}) == {"c": 3}
    assert validate_params(fields, {"c": "3"}) == {"c": 3}  # form input picks the choice
    assert problems_of(fields, {"c": "fr"}) == ["c: 'fr' is not one of the choices ['ch', 'de', 3]"]


def test_multiselect() -> None:
    fields = [Parameter(name="m", type="multiselect", choices=["a", "b", "c"])]
    assert validate_params(fields, {"m": ["c", "a"]}) == {"m": ["c", "a"]}
    assert validate_params(fields, {}) == {"m": []}
    assert problems_of(fields, {"m": ["a", "x", "y"]}) == [
        "m: 'x', 'y' are not among the choices ['a', 'b', 'c']"
    ]
    assert problems_of(fields, {"m": ["z"]}) == ["m: 'z' is not among the choices ['a', 'b', 'c']"]
    assert problems_of(fields, {"m": "a"}) == ["m: expected a list of choices, got 'a'"]


# --- defaults, required, unknown keys ---------------------------------------------------------


def test_defaults_are_filled_in() -> None:
    fields = [
        Parameter(name="n", type="int", default=3),
        Parameter(name="flag", type="bool", default=False),
        Parameter(name="t"),
        Parameter(name="m", type="multiselect", choices=["a"], default=["a"]),
    ]
    assert validate_params(fields, None) == {"n": 3, "flag": False, "t": None, "m": ["a"]}
    assert validate_params(fields, {"n": "", "t": None}) == {
        "n": 3,
        "flag": False,
        "t": None,
        "m": ["a"],
    }
    assert validate_params(fields, {"n": "10", "flag": "yes", "t": "x"})["n"] == 10


def test_default_is_copied() -> None:
    fields = [Parameter(name="m", type="multiselect", choices=["a", "b"], default=["a"])]
    result = validate_params(fields, {})
    result["m"].append("b")
    assert validate_params(fields, {}) == {"m": ["a"]}


def test_required() -> None:
    fields = [Parameter(name="who", required=True), Parameter(name="n", type="int", required=True)]
    assert problems_of(fields, {}) == ["who: a value is required", "n: a value is required"]
    assert problems_of(fields, {"who": "  ", "n": 1}) == ["who: a value is required"]
    with_default = [Parameter(name="n", type="int", required=True, default=1)]
    assert validate_params(with_default, {}) == {"n": 1}


def test_unknown_keys_are_listed() -> None:
    fields = [Parameter(name="a"), Parameter(name="b")]
    assert problems_of(fields, {"a": "x", "zz": 1, "yy": 2}) == [
        "zz: unknown parameter (expected: a, b)",
        "yy: unknown parameter (expected: a, b)",
    ]
    assert problems_of([], {"x": 1}) == ["x: unknown parameter (expected: none)"]


def test_values_must_be_a_mapping() -> None:
    problems = problems_of([Parameter(name="a")], ["a"])
    assert len(problems) == 1
    assert problems[0].startswith("parameters must be an object")


def test_every_problem_is_listed() -> None:
    fields = [
        Parameter(name="n", type="int"),
        Parameter(name="f", type="float"),
        Parameter(name="b", type="bool"),
        Parameter(name="s", type="select", choices=["x"]),
        Parameter(name="r", required=True),
    ]
    with pytest.raises(ParameterError) as info:
        validate_params(fields, {"n": "x", "f": "y", "b": "z", "s": "w", "extra": 1})
    assert len(info.value.problems) == 6
    text = str(info.value)
    assert text.startswith("invalid parameters:\n  - ")
    assert "\n  - r: a value is required" in text
    assert isinstance(info.value, ValueError)


# --- parameter fields (parameters.json) -------------------------------------------------------


def test_parse_list_and_object_forms() -> None:
    raw = [{"name": "a"}, {"name": "b", "type": "int", "default": "2", "label": "B"}]
    as_list = parse_parameter_fields(raw)
    as_object = parse_parameter_fields({"fields": raw})
    assert as_list == as_object
    assert as_list[1].default == 2  # defaults are coerced
    assert as_list[0].type == "text"
    assert as_list[0].required is False


def test_field_name_clash() -> None:
    assert field_problems([{"name": "a"}, {"name": "a", "type": "int"}]) == [
        "parameters.json: two fields are named 'a' (name clash)"
    ]


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "x", "type": "select"}, "choices are required for a select field"),
        ({"name": "x", "type": "multiselect"}, "choices are required for a multiselect field"),
        ({"name": "x", "type": "select", "choices": []}, "choices must not be empty"),
        (
            {"name": "x", "type": "int", "choices": [1]},
            "choices are only allowed for select and multiselect fields, not int",
        ),
        ({"name": "x", "type": "int", "default": "a"}, "default 'a' is invalid"),
        (
            {"name": "x", "type": "select", "choices": ["a"], "default": "b"},
            "default 'b' is invalid: 'b' is not one of the choices ['a']",
        ),
        ({"name": "x", "type": "date"}, "type: input should be"),
        ({"name": "x", "colour": "red"}, "colour: unknown field"),
        ({"name": "x", "required": "yes"}, "required: input should be a valid boolean"),
        ({"name": "1st"}, "name: '1st' is not a valid parameter name"),
        ({"name": "a-b"}, "name: 'a-b' is not a valid parameter name"),
        ({"type": "int"}, "name: field required"),
    ],
)
def test_bad_fields(field: dict[str, Any], message: str) -> None:
    problems = field_problems([field])
    assert len(problems) == 1, problems
    assert problems[0].startswith("parameters.json: fields[0]")
    assert message in problems[0]


def test_bad_field_containers() -> None:
    assert field_problems("x") == [
        "parameters.json: must be a list of fields or an object {'fields': [...]}"
    ]
    assert field_problems({"params": []}) == [
        "parameters.json: unknown key 'params' (only 'fields' is allowed)",
        "parameters.json: an object must have a 'fields' list",
    ]
    assert field_problems([1]) == ["parameters.json: fields[0]: must be an object, got 1"]


def test_all_field_problems_are_listed() -> None:
    problems = field_problems(
        [{"name": "a", "type": "select"}, {"name": "b", "type": "int", "default": "z"}, "c"]
    )
    assert len(problems) == 3
    assert problems[0].startswith("parameters.json: fields[0] ('a'): ")
    assert problems[1].startswith("parameters.json: fields[1] ('b'): ")
    assert problems[2].startswith("parameters.json: fields[2]: ")
