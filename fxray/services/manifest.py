"""The ``manifest.json`` of a service package, as pydantic models.

A manifest is a config file written by hand, so validation is strict: values must already have
the right JSON type (``"5"`` is not a priority) and unknown fields are errors, never ignored.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_NAME_RE = re.compile(NAME_PATTERN)


def format_validation_error(exc: ValidationError, prefix: str) -> list[str]:
    """One readable problem per pydantic error: ``"<prefix>: <field path>: <message>"``."""
    problems: list[str] = []
    for err in exc.errors(include_url=False):
        where = _loc_to_path(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "missing":
            msg = "field required"
        else:
            msg = str(err.get("msg", "invalid value"))
            for noise in ("Value error, ", "Assertion failed, "):
                msg = msg.removeprefix(noise)
            if msg[:1].isupper() and not msg[1:2].isupper():
                msg = msg[0].lower() + msg[1:]
        problems.append(f"{prefix}: {where}: {msg}" if where else f"{prefix}: {msg}")
    return problems


def _loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def script_path_problem(path: str) -> str | None:
    """Why ``path`` cannot name a script of a package, or ``None`` if it can."""
    if not path or not path.strip():
        return "script path must not be empty"
    if "\\" in path:
        return f"{path!r} must use '/' as the path separator"
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        return f"{path!r} must be a path relative to the package folder"
    if ".." in path.split("/"):
        return f"{path!r} must not escape the package folder"
    if not path.endswith(".py"):
        return f"{path!r} is not a .py file"
    return None


def normalize_script_path(path: str) -> str:
    """``./src//main.py`` -> ``src/main.py`` (assumes :func:`script_path_problem` passed)."""
    return posixpath.normpath(path)


def _script_path(value: str) -> str:
    problem = script_path_problem(value)
    if problem:
        raise ValueError(problem)
    return normalize_script_path(value)


def execution_order_clash(steps: list[Any]) -> str | None:
    """The "named more than once" problem of an execution order, or ``None``."""
    seen: set[str] = set()
    clashes: list[str] = []
    for step in steps:
        if not isinstance(step, str) or script_path_problem(step):
            continue
        norm = normalize_script_path(step)
        if norm in seen and norm not in clashes:
            clashes.append(norm)
        seen.add(norm)
    if not clashes:
        return None
    return ", ".join(repr(c) for c in clashes) + " named more than once (name clash)"


ScriptPath = Annotated[str, AfterValidator(_script_path)]


class RetryPolicy(BaseModel):
    """How often a failed run is retried and how long to wait between attempts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max: int = Field(default=0, ge=0, description="Retries after the first attempt.")
    backoff_s: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")


class Manifest(BaseModel):
    """A service's ``manifest.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    active: bool = True
    allow_manual_triggering: bool = True
    entrypoint: ScriptPath | None = None
    execution_order: list[ScriptPath] = Field(default_factory=list)
    trigger_events: list[str] = Field(default_factory=list)
    schedule: str | None = None
    priority: int = Field(default=5, ge=1, le=10, description="1 highest ... 10 lowest.")
    timeout_s: float | None = Field(default=None, gt=0, description="None = platform default.")
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    max_concurrency: int | None = Field(default=None, ge=1)
    output_events: list[str] = Field(default_factory=list, description="Documentation only.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a valid service name (1-63 characters: lowercase letters, "
                "digits, '_' and '-', starting with a letter or digit)"
            )
        return value

    @field_validator("execution_order")
    @classmethod
    def _check_execution_order(cls, value: list[str]) -> list[str]:
        problem = execution_order_clash(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("trigger_events", "output_events", "tags")
    @classmethod
    def _check_words(cls, value: list[str]) -> list[str]:
        for item in value:
            if not item.strip() or any(ch.isspace() for ch in item):
                raise ValueError(f"{item!r} must be non-empty and contain no whitespace")
        return value

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from fxray.events.schedules import validate_cron  # the one rule for manifests and the API

        return validate_cron(value)

    @model_validator(mode="after")
    def _check_steps(self) -> Manifest:
        if not self.entrypoint and not self.execution_order:
            raise ValueError("either entrypoint or execution_order must name a script")
        return self

    @property
    def steps(self) -> list[str]:
        """The scripts to run, in order: ``[entrypoint]`` if set, else ``execution_order``."""
        return [self.entrypoint] if self.entrypoint else list(self.execution_order)
