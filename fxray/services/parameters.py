"""Run parameters a service declares in ``parameters.json`` and their validation.

``parameters.json`` is a JSON list of fields, or an object ``{"fields": [...]}``. Each field::

    {"name": "country", "type": "select", "choices": ["ch", "de"], "default": "ch",
     "label": "Country", "description": "...", "required": false}

:func:`validate_params` checks the values of a run against the fields, coerces them (numbers
from numeric strings, booleans from ``"yes"``/``"no"``/``"1"``/``"0"``...), fills in defaults and
reports every problem at once in a :class:`ParameterError`.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from fxray.services.manifest import format_validation_error

ParamType = Literal["text", "int", "float", "bool", "select", "multiselect"]
Scalar = str | int | float | bool

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = frozenset({"true", "1", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "no", "n", "off"})


class ParameterError(ValueError):
    """Parameters (or parameter fields) are invalid; ``problems`` lists every problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid parameters:\n" + "\n".join(f"  - {p}" for p in self.problems))


class Parameter(BaseModel):
    """One field of ``parameters.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    type: ParamType = "text"
    label: str | None = None
    description: str | None = None
    choices: list[Scalar] | None = None
    default: Any = None
    required: bool = False

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid parameter name (letters, digits and '_', "
                "not starting with a digit)"
            )
        return value

    @model_validator(mode="after")
    def _check_choices_and_default(self) -> Parameter:
        if self.type in ("select", "multiselect"):
            if self.choices is None:
                raise ValueError(f"choices are required for a {self.type} field")
            if not self.choices:
                raise ValueError("choices must not be empty")
        elif self.choices is not None:
            raise ValueError(
                f"choices are only allowed for select and multiselect fields, not {self.type}"
            )
        if self.default is not None:
            try:
                self.default = coerce_value(self, self.default)
            except ValueError as exc:
                raise ValueError(f"default {self.default!r} is invalid: {exc}") from None
        return self


def coerce_value(field: Parameter, value: Any) -> Any:
    """``value`` converted to ``field``'s type; raises ``ValueError`` saying why it can't be."""
    kind = field.type
    if kind == "text":
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise ValueError(f"expected text, got {_describe(value)}")
    if kind == "int":
        return _to_int(value)
    if kind == "float":
        return _to_float(value)
    if kind == "bool":
        return _to_bool(value)
    choices = field.choices or []
    if kind == "select":
        return _pick(value, choices)
    # multiselect
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list of choices, got {_describe(value)}")
    bad = []
    picked = []
    for item in value:
        try:
            picked.append(_pick(item, choices))
        except ValueError:
            bad.append(item)
    if bad:
        listed = ", ".join(repr(b) for b in bad)
        verb = "is" if len(bad) == 1 else "are"
        raise ValueError(f"{listed} {verb} not among the choices {_choices(choices)}")
    return picked


def _describe(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", tuple: "a list", bool: "a boolean"}
    kind = kinds.get(type(value))
    return kind if kind else repr(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected an integer, got {_describe(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            if math.isfinite(number) and number.is_integer():
                return int(number)
    raise ValueError(f"expected an integer, got {_describe(value)}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {_describe(value)}")
    number = math.nan
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"expected a number, got {_describe(value)}")
    return number


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"expected true/false (or yes/no, 1/0), got {_describe(value)}")


def _pick(value: Any, choices: list[Any]) -> Any:
    for choice in choices:
        if type(choice) is type(value) and choice == value:
            return choice
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        # form input arrives as text: "2" picks the choice 2
        for choice in choices:
            if not isinstance(choice, bool) and str(choice) == str(value).strip():
                return choice
    raise ValueError(f"{value!r} is not one of the choices {_choices(choices)}")


def _choices(choices: list[Any]) -> str:
    return "[" + ", ".join(repr(c) for c in choices) + "]"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, list | tuple) and not value


def validate_params(fields: list[Parameter], values: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``values`` against ``fields``; return them coerced, with defaults filled in.

    A value that is absent, ``None``, a blank string or an empty list counts as not given: the
    field's default is used, a ``required`` field without default is a problem, any other field
    gets ``None`` (``[]`` for multiselect). Keys naming no field are problems too. Raises
    :class:`ParameterError` listing every problem.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ParameterError([f"parameters must be an object of name -> value, got {values!r}"])
    problems: list[str] = []
    known = {f.name for f in fields}
    expected = ", ".join(f.name for f in fields) or "none"
    for key in values:
        if key not in known:
            problems.append(f"{key}: unknown parameter (expected: {expected})")
    out: dict[str, Any] = {}
    for field in fields:
        raw = values.get(field.name)
        if _is_missing(raw):
            if field.default is not None:
                out[field.name] = copy.deepcopy(field.default)
            elif field.required:
                problems.append(f"{field.name}: a value is required")
            else:
                out[field.name] = [] if field.type == "multiselect" else None
            continue
        try:
            out[field.name] = coerce_value(field, raw)
        except ValueError as exc:
            problems.append(f"{field.name}: {exc}")
    if problems:
        raise ParameterError(problems)
    return out


def parse_parameter_fields(data: Any, source: str = "parameters.json") -> list[Parameter]:
    """Fields from the parsed JSON of ``parameters.json`` (a list or ``{"fields": [...]}``).

    Raises :class:`ParameterError` listing every problem, each prefixed with ``source``.
    """
    if isinstance(data, dict):
        extra = sorted(k for k in data if k != "fields")
        problems = [f"{source}: unknown key {k!r} (only 'fields' is allowed)" for k in extra]
        if "fields" not in data:
            problems.append(f"{source}: an object must have a 'fields' list")
            raise ParameterError(problems)
        if problems:
            raise ParameterError(problems)
        data = data["fields"]
    if not isinstance(data, list):
        raise ParameterError(
            [f"{source}: must be a list of fields or an object {{'fields': [...]}}"]
        )
    problems = []
    fields: list[Parameter] = []
    seen: set[str] = set()
    for i, raw in enumerate(data):
        where = f"fields[{i}]"
        if isinstance(raw, dict) and isinstance(raw.get("name"), str):
            where += f" ({raw['name']!r})"
        if not isinstance(raw, dict):
            problems.append(f"{source}: {where}: must be an object, got {_describe(raw)}")
            continue
        try:
            field = Parameter.model_validate(raw)
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, f"{source}: {where}"))
            continue
        if field.name in seen:
            problems.append(f"{source}: two fields are named {field.name!r} (name clash)")
        seen.add(field.name)
        fields.append(field)
    if problems:
        raise ParameterError(problems)
    return fields


__all__ = [
    "ParamType",
    "Parameter",
    "ParameterError",
    "coerce_value",
    "parse_parameter_fields",
    "validate_params",
]
