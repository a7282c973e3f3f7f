"""How many executors a version runs: the scaling policy and its decisions, as pure functions.

A version's policy comes from the platform's settings, overridden by its manifest
(``min_executors``, ``max_executors``, ``target_backlog``) and then by an operator's per-version
override (:data:`SCALING_KEY` in the version's record, set with
:meth:`fxray.Platform.scale`). The router's pool (:mod:`fxray.actors.pool`) asks :func:`decide`
what to do from what it sees: executors running and starting, which are busy, how long the idle
ones have been idle, and the version's backlog (runs queued or running in this router).

* **Desired executors** = the backlog divided by the target backlog per executor, rounded up,
  within ``[min_executors, max_executors]``. With the default target of 1 run per executor a
  version grows whenever a run waits and an executor could be added, as far as its maximum.
* **Start** what is missing to the desired count (the pool starts executors one by one as its
  batches wait, and keeps ``min_executors`` warm).
* **Retire** executors idle for ``idle_timeout_s``, longest idle first, down to the desired
  count; at once (no timeout) any beyond ``max_executors`` after the maximum was lowered.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SCALING_KEY = "_scaling"  # where a version's record keeps an operator's override
POLICY_FIELDS = ("min_executors", "max_executors", "target_backlog")


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """The bounds and targets one version's executors scale by (per router)."""

    min_executors: int = 0
    max_executors: int = 2
    target_backlog: int = 1  # runs waiting or running per executor
    idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_executors < 0 or self.max_executors < 1 or self.target_backlog < 1:
            raise ValueError(f"invalid scaling policy {self}")
        if self.min_executors > self.max_executors:
            raise ValueError(
                f"min_executors ({self.min_executors}) is more than "
                f"max_executors ({self.max_executors})"
            )

    def desired(self, backlog: int) -> int:
        """Executors for ``backlog`` runs, within the bounds."""
        wanted = math.ceil(max(backlog, 0) / self.target_backlog)
        return min(self.max_executors, max(self.min_executors, wanted))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the pool should do now."""

    desired: int
    start: int  # executors to add
    retire: tuple[int, ...]  # indexes (into the idle list given) of executors to retire
    reason: str


def decide(
    policy: ScalingPolicy,
    *,
    size: int,
    backlog: int,
    idle_for: Sequence[float],
) -> Decision:
    """The decision for a version with ``size`` executors (running or starting) of which the
    idle ones have been idle for ``idle_for`` seconds each, and ``backlog`` runs."""
    desired = policy.desired(backlog)
    start = max(0, desired - size)
    by_idleness = sorted(range(len(idle_for)), key=lambda i: idle_for[i], reverse=True)
    excess = max(0, size - policy.max_executors)
    retire = list(by_idleness[:excess])  # over the maximum: retire idle ones at once
    remaining = size - len(retire)
    for index in by_idleness[excess:]:  # longest idle first: the first too recent ends it
        if remaining <= desired or idle_for[index] < policy.idle_timeout_s:
            break
        retire.append(index)
        remaining -= 1
    if start:
        reason = f"backlog {backlog} wants {desired}, has {size}: start {start}"
    elif retire:
        reason = f"backlog {backlog} wants {desired}, has {size}: retire {len(retire)} idle"
    else:
        reason = f"backlog {backlog} wants {desired}, has {size}"
    return Decision(desired, start, tuple(retire), reason)


def policy_for(
    manifest: Mapping[str, Any],
    *,
    min_executors: int,
    max_executors: int,
    target_backlog: int,
    idle_timeout_s: float,
    max_concurrency: int | None = None,
) -> ScalingPolicy:
    """A version's policy: the platform's defaults (the keyword arguments), then its manifest's
    fields, then the operator's override kept under :data:`SCALING_KEY`; the service's
    ``max_concurrency`` caps the maximum."""
    values: dict[str, int] = {
        "min_executors": min_executors,
        "max_executors": max_executors,
        "target_backlog": target_backlog,
    }
    for layer in (manifest, manifest.get(SCALING_KEY) or {}):
        for name in POLICY_FIELDS:
            if layer.get(name) is not None:
                values[name] = int(layer[name])
    if max_concurrency:
        values["max_executors"] = min(values["max_executors"], max_concurrency)
    values["min_executors"] = min(values["min_executors"], values["max_executors"])
    return ScalingPolicy(idle_timeout_s=idle_timeout_s, **values)


def check_override(override: Mapping[str, Any]) -> dict[str, int | None]:
    """An operator's per-version override, checked: only the policy fields, whole numbers in
    range (None removes a field's override); ``ValueError`` says what is wrong."""
    unknown = sorted(set(override) - set(POLICY_FIELDS))
    if unknown:
        raise ValueError(f"unknown scaling field(s) {unknown}; known: {list(POLICY_FIELDS)}")
    clean: dict[str, int | None] = {}
    lowest = {"min_executors": 0, "max_executors": 1, "target_backlog": 1}
    for name, value in override.items():
        if value is None:
            clean[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest[name]:
            raise ValueError(f"{name} must be a whole number of at least {lowest[name]}")
        clean[name] = value
    low, high = clean.get("min_executors"), clean.get("max_executors")
    if low is not None and high is not None and low > high:
        raise ValueError(f"min_executors ({low}) is more than max_executors ({high})")
    return clean
