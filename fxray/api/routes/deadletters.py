"""/api/v1 routes: dead letters (records that were never valid events, and events of runs that
failed for good), each with its mark, and requeueing or discarding them.

A failed run's letter belongs to its service's project: its viewers list it, its developers
requeue or discard it. A record that was never a valid event belongs to no project: only
platform-wide admins see and handle those. Requeueing and discarding mark each letter (in the
platform's key/value store, :mod:`fxray.events.deadletters`), as the web UI and
``fxray deadletters`` do: a letter already marked is refused on its own, the others go ahead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from fxray.api.auth import Caller, Principal
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import invalid
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.deadletters import (
    DeadLetterOut,
    MarkOut,
    OutcomeOut,
    OutcomesOut,
    PositionsIn,
)
from fxray.events import deadletters as dl
from fxray.store import StateStore
from fxray.store import queries as q

router = APIRouter(tags=["deadletters"])

MAX_PER_PARTITION = 1000


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter with its project and mark."""

    letter: dl.DeadLetter
    service: str | None  # the service's id, from the letter's header
    project: str | None
    mark: dict[str, Any] | None
    service_name: str | None = None  # its name in its project (None if it is gone)

    def visible_to(self, caller: Principal) -> bool:
        if self.project is None:
            return caller.platform_admin
        return caller.can_see(self.project)

    def may_handle(self, caller: Principal) -> bool:
        if self.project is None:
            return caller.platform_admin
        return caller.allows("developer", self.project)


def letters(platform: Any, store: StateStore, per_partition: int) -> list[Letter]:
    """The newest ``per_partition`` letters of each partition, with projects and marks."""
    raw = platform.dead_letters(per_partition)
    services = q.service_keys(store, {d.header(dl.DLQ_PREFIX + "service") or "" for d in raw})
    marks = platform.dead_letter_marks()
    found = []
    for letter in raw:
        service = letter.header(dl.DLQ_PREFIX + "service")
        key = services.get(service or "")
        project, name = (key.project, key.name) if key else (None, None)
        found.append(Letter(letter, service, project, marks.get(letter.position), name))
    return found


def _time(letter: dl.DeadLetter) -> float | None:
    stamp = letter.header(dl.DLQ_PREFIX + "time")
    try:
        return float(stamp) if stamp else None
    except ValueError:
        return None


def _out(item: Letter) -> DeadLetterOut:
    summary = item.letter.summary()
    mark = item.mark
    return DeadLetterOut(
        position=item.letter.position,
        reason=item.letter.reason,
        run_id=item.letter.run_id,
        service=item.service,
        project=item.project,
        source=summary["from"],
        time=_time(item.letter),
        bytes=summary["bytes"],
        mark=MarkOut(action=mark["action"], by=mark.get("by"), at=mark.get("at"))
        if mark and mark.get("action") in ("requeued", "discarded")
        else None,
    )


@router.get("/deadletters")
def list_dead_letters(
    caller: Caller,
    platform: PlatformDep,
    store: StoreDep,
    paging: Paging,
    show: Annotated[
        Literal["open", "handled", "all"],
        Query(description="open: not requeued or discarded yet; handled: marked; all"),
    ] = "all",
    project: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Only this project's")
    ] = None,
    per_partition: Annotated[
        int, Query(ge=1, le=MAX_PER_PARTITION, description="Newest letters read per partition")
    ] = 200,
) -> Page[DeadLetterOut]:
    """The dead letters this key can see, newest first, each with its mark (viewer)."""
    scope = caller.scope(project)
    found = [
        item
        for item in letters(platform, store, per_partition)
        if item.visible_to(caller)
        and (scope is None or item.project == scope)
        and (show == "all" or (item.mark is None) == (show == "open"))
    ]
    found.sort(key=lambda i: (_time(i.letter) or 0.0, i.letter.position), reverse=True)
    return paging.page([_out(item) for item in found])


def _handle(
    action: str, body: PositionsIn, caller: Principal, platform: Any, store: StateStore
) -> OutcomesOut:
    chosen = list(dict.fromkeys(body.positions))
    bad = []
    for position in chosen:
        try:
            dl.parse_position(position)
        except ValueError:
            bad.append(
                {"location": "body.positions", "message": f"{position!r} is not partition:offset"}
            )
    if bad:
        raise invalid("the request is invalid", bad[:10])
    known = {i.letter.position: i for i in letters(platform, store, MAX_PER_PARTITION)}
    results = []
    for position in chosen:
        item = known.get(position)
        if item is None or not item.visible_to(caller):
            results.append(OutcomeOut(position=position, ok=False, text="not found"))
        elif not item.may_handle(caller):
            results.append(
                OutcomeOut(position=position, ok=False, text="this needs the developer role")
            )
        else:
            (done,) = platform.handle_dead_letters([position], action, caller.key_id)
            results.append(OutcomeOut(position=done.position, ok=done.ok, text=done.text))
    return OutcomesOut(action=action, results=results)  # type: ignore[arg-type]


@router.post("/deadletters/requeue")
def requeue_dead_letters(
    body: PositionsIn, caller: Caller, platform: PlatformDep, store: StoreDep
) -> OutcomesOut:
    """Send letters back to the events topic and mark them requeued (developer in the letter's
    project; a record of no project: platform-wide admin). A failed run's event goes back with
    a new id. Each letter answers on its own: already handled, not found, or what it became."""
    return _handle("requeue", body, caller, platform, store)


@router.post("/deadletters/discard")
def discard_dead_letters(
    body: PositionsIn, caller: Caller, platform: PlatformDep, store: StoreDep
) -> OutcomesOut:
    """Mark letters discarded (same roles as requeue); they leave the open list."""
    return _handle("discard", body, caller, platform, store)
