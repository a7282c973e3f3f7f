"""10. Dead letters: the newest records of the dead-letter topic with why they are there and
their payload; bulk requeue (back to the events topic, as ``fxray deadletters replay`` does)
and discard.

The topic is a log that cannot be edited, so "requeued" and "discarded" are marks the platform
keeps in its key/value store (:mod:`fxray.events.deadletters`; the API and the CLI show the same
marks): handled letters leave the list (a filter shows them again) and cannot be requeued twice
by mistake. A letter of a failed run belongs to its service's project; a record that was never a
valid event belongs to no project, so only platform-wide admins see those.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from fxray.api.errors import invalid
from fxray.api.routes.deadletters import letters as api_letters
from fxray.api.schemas.common import NAME_PATTERN
from fxray.events import deadletters as dl
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope, ui_state
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import render

router = ui_router()
NAV = NavEntry("Dead letters", "/deadletters", 100)

PER_PARTITION = (50, 200, 1000)
PAYLOAD_SHOWN = 4096  # bytes of a payload the list shows


@dataclass(frozen=True, slots=True)
class Letter:
    """A dead letter as the page shows it."""

    position: str
    reason: str
    run_id: str | None
    service_id: str | None
    service_name: str | None
    project: str | None
    source: str
    time: float | None
    payload: str
    payload_size: int
    mark: dict[str, Any] | None


def _payload(value: bytes) -> str:
    """The payload as text (pretty JSON when it is JSON), cut to :data:`PAYLOAD_SHOWN`."""
    text = value[:PAYLOAD_SHOWN].decode("utf-8", errors="replace")
    if len(value) <= PAYLOAD_SHOWN:
        try:
            return json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        except ValueError:
            pass
    return text + ("\n..." if len(value) > PAYLOAD_SHOWN else "")


def _letters(platform: Any, store: Any, limit: int) -> list[Letter]:
    """The API's reading of the letters (project and mark each), as the page shows them."""
    shown = []
    for found in api_letters(platform, store, limit):
        letter = found.letter
        stamp = letter.header(dl.DLQ_PREFIX + "time")
        shown.append(
            Letter(
                position=letter.position,
                reason=letter.reason,
                run_id=letter.run_id,
                service_id=found.service,
                service_name=found.service_name or found.service,
                project=found.project,
                source=letter.summary()["from"],
                time=float(stamp) if stamp and stamp.replace(".", "", 1).isdigit() else None,
                payload=_payload(letter.value),
                payload_size=len(letter.value),
                mark=found.mark,
            )
        )
    shown.sort(key=lambda item: (item.time or 0.0, item.position), reverse=True)
    return shown


def _visible(user: UIUser, letter: Letter, project: str | None) -> bool:
    if letter.project is None:
        return user.platform_admin and project is None
    return user.principal.can_see(letter.project) and project in (None, letter.project)


@router.get("/deadletters")
def deadletters_page(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    show: Annotated[str, Query(pattern="^(open|handled|all)$")] = "open",
    limit: Annotated[int, Query(ge=1, le=max(PER_PARTITION))] = PER_PARTITION[0],
) -> Response:
    shown = scope(user, project)
    letters = [
        letter
        for letter in _letters(platform, store, limit)
        if _visible(user, letter, shown)
        and (show == "all" or (letter.mark is None) == (show == "open"))
    ]
    projects = [p.name for p in store.list_projects()] if user.platform_admin else []
    return render(
        ui_state(request).templates,
        request,
        "deadletters/list.html",
        {
            **page_context(user),
            "letters": letters,
            "show": show,
            "limit": limit,
            "limits": PER_PARTITION,
            "project": project,
            "projects": projects,
            "can_act": {letter.position: _may_act(user, letter) for letter in letters},
        },
    )


def _may_act(user: UIUser, letter: Letter) -> bool:
    if letter.project is None:
        return user.platform_admin
    return user.can("developer", letter.project)


@router.post("/deadletters")
def handle_letters(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    action: Annotated[str, Form(pattern="^(requeue|discard)$")],
    position: Annotated[list[str], Form(max_length=500)] = [],  # noqa: B006
) -> Response:
    """Requeue or discard the chosen letters (developer in their service's project; records
    of no project: platform admin). Each letter answers on its own."""
    chosen = list(dict.fromkeys(position))
    if not chosen:
        raise invalid("choose at least one dead letter")
    bad = [p for p in chosen if not _is_position(p)]
    if bad:
        raise invalid("not dead-letter positions", [f"{p!r}" for p in bad[:5]])
    known = {letter.position: letter for letter in _letters(platform, store, max(PER_PARTITION))}
    outcomes = []
    for one in chosen:
        letter = known.get(one)
        if letter is None or not _visible(user, letter, None):
            outcomes.append({"position": one, "ok": False, "text": "not found"})
            continue
        if not _may_act(user, letter):
            outcomes.append({"position": one, "ok": False, "text": "this needs the developer role"})
            continue
        try:
            (done,) = platform.handle_dead_letters([one], action, user.principal.key_id)
        except LookupError as exc:
            outcomes.append({"position": one, "ok": False, "text": str(exc)})
            continue
        outcomes.append({"position": one, "ok": done.ok, "text": done.text})
    if request.headers.get("hx-request") != "true":
        return RedirectResponse("/deadletters", status_code=303)
    response = render(
        ui_state(request).templates,
        request,
        "deadletters/_result.html",
        {**page_context(user), "outcomes": outcomes, "action": action},
    )
    response.headers["HX-Trigger"] = "letters-changed"
    return response


def _is_position(text: str) -> bool:
    try:
        dl.parse_position(text)
    except ValueError:
        return False
    return True
