"""The ``manifest.json`` of a service package, as pydantic models.

A manifest is a config file written by hand, so validation is strict: values must already have
the right JSON type (``"5"`` is not a priority) and unknown fields are errors, never ignored.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

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


MEMORY_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def parse_memory(value: int | str) -> int:
    """Bytes from ``2147483648``, ``"2Gi"``, ``"512 MB"``, ``"1.5G"``; ``ValueError`` otherwise."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("memory must not be negative")
        return value
    match = _MEMORY_RE.match(value)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in MEMORY_UNITS:
        raise ValueError(
            f"{value!r} is not an amount of memory (bytes as a number, or e.g. '512Mi', '2G')"
        )
    return int(float(match.group(1)) * MEMORY_UNITS[unit])


class Resources(BaseModel):
    """What each executor of a service asks Ray for (``resources`` in the manifest)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cpus: float | None = Field(
        default=None, ge=0, description="CPUs per executor (None: the platform's executor_cpus)."
    )
    memory: Annotated[int | str, AfterValidator(parse_memory)] | None = Field(
        default=None, description="Memory per executor: bytes, or a string like '2Gi'."
    )
    gpus: float | None = Field(default=None, ge=0, description="GPUs per executor.")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description='Custom Ray resources per executor (e.g. {"fxray-heavy": 1}): only nodes '
        "that offer them run the service.",
    )

    @field_validator("custom")
    @classmethod
    def _check_custom(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if not name.strip() or any(ch.isspace() for ch in name):
                raise ValueError(f"{name!r} is not a resource name (non-empty, no whitespace)")
            if name in RAY_BUILTIN_RESOURCES:
                field = {"CPU": "cpus", "GPU": "gpus"}.get(name, "memory")
                raise ValueError(f"ask for {name!r} with resources.{field}, not in custom")
            if amount <= 0:
                raise ValueError(f"{name!r}: the amount must be more than 0")
        return value


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
    isolation: Literal["auto", "process", "in-process"] = Field(
        default="auto",
        description="Where the scripts run: in the executor's process, or in a worker process "
        "whose import path holds only the version's own packages (auto: isolated when the "
        "requirements install a package the platform runs at another version).",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(),
        description="What each executor of the service asks Ray for; it runs only on nodes "
        "that offer it.",
    )
    min_executors: int | None = Field(
        default=None, ge=0, description="Executors kept warm per router (None: the platform's)."
    )
    max_executors: int | None = Field(
        default=None, ge=1, description="Most executors per router (None: the platform's)."
    )
    target_backlog: int | None = Field(
        default=None,
        ge=1,
        description="Runs waiting or running per executor to scale to (None: the platform's).",
    )

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

    @model_validator(mode="after")
    def _check_executors(self) -> Manifest:
        low, high = self.min_executors, self.max_executors
        if low is not None and high is not None and low > high:
            raise ValueError(f"min_executors ({low}) is more than max_executors ({high})")
        return self

    @property
    def steps(self) -> list[str]:
        """The scripts to run, in order: ``[entrypoint]`` if set, else ``execution_order``."""
        return [self.entrypoint] if self.entrypoint else list(self.execution_order)
