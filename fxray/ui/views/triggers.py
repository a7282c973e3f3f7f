"""8. Triggers and mappings: link an event type to a service with filters, set A/B weights
(they must add up to 100) and a shadow version, and edit the project's event mappings.

Every change goes through the API's own route functions (``create_trigger``,
``update_trigger``, ``delete_trigger``, ``create_mapping``, ``delete_mapping``), so the checks,
the project isolation and the routers' reload are the API's. What a form gets wrong (a bad
pattern or filter, weights that do not add up to 100, a mapping that would close a cycle) is
shown next to that form, not on an error page.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from fxray.api.errors import ApiError, invalid
from fxray.api.routes import triggers as api
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.triggers import MAX_FILTERS, MAX_VERSIONS, MappingIn, TriggerIn, TriggerPatch
from fxray.store import Conflict, StateStore
from fxray.ui import queries as uq
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope
from fxray.ui.deps import visible_service as _visible
from fxray.ui.nav import NavEntry
from fxray.ui.routing import ui_router
from fxray.ui.templating import is_htmx, page

router = ui_router()
NAV = NavEntry("Triggers", "/triggers", 80)

WEIGHT_TOTAL = 100
FORM_TEXT = 64 * 1024
Id = Annotated[str, Form(max_length=255)]


# -- reading ----------------------------------------------------------------------------------


def _panel(
    user: UIUser,
    store: StateStore,
    project: str | None,
    errors: dict[str, list[str]] | None = None,
    entered: dict[str, Any] | None = None,
    notice: str | None = None,
) -> dict[str, Any]:
    """What ``triggers/_panel.html`` shows: the triggers and mappings of the projects in
    view, the forms (with what was entered and its errors), and what the user may change."""
    shown = scope(user, project)
    services = {s.id: s for s in store.list_services(project=shown)}
    triggers = sorted(
        (t for t in store.list_triggers() if t.service in services),
        key=lambda t: (services[t.service].project, t.pattern, services[t.service].name, t.id),
    )
    versions = uq.versions_by_service(store, services)
    mappings = store.list_mappings(project=shown)
    linkable = sorted(
        (s for s in services.values() if user.can("developer", s.project)),
        key=lambda s: (s.project, s.name),
    )
    projects = sorted({s.project for s in services.values()} | {m.project for m in mappings})
    if user.platform_admin:
        projects = sorted({p.name for p in store.list_projects()})
    return {
        **page_context(user),
        "project": project,
        "projects": projects if user.platform_admin else [],
        "mapping_projects": [p for p in projects if user.can("developer", p)]
        if user.platform_admin
        else [],
        "services": services,
        "triggers": triggers,
        "versions": versions,
        "labels": {v.id: v.label for vs in versions.values() for v in vs},
        "mappings": mappings,
        "linkable": linkable,
        "can_change": {s: user.can("developer", services[s].project) for s in services},
        "can_map": user.may_change,
        "errors": errors or {},
        "entered": entered or {},
        "notice": notice,
        "total": WEIGHT_TOTAL,
    }


@router.get("/triggers")
def triggers_page(
    request: Request,
    user: User,
    store: StoreDep,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> Response:
    return page(request, "triggers/list.html", _panel(user, store, project))


def _answer(
    request: Request,
    user: UIUser,
    store: StateStore,
    project: str | None,
    notice: str,
) -> Response:
    if not is_htmx(request):
        return RedirectResponse("/triggers", status_code=303)
    return page(request, "triggers/_panel.html", _panel(user, store, project, notice=notice))


def _refused(
    request: Request,
    user: UIUser,
    store: StateStore,
    project: str | None,
    form: str,
    problems: list[str],
    entered: dict[str, Any],
) -> Response:
    """The panel with ``problems`` next to ``form`` (422); without htmx, the error page."""
    if not is_htmx(request):
        raise invalid("the form is invalid", problems)
    context = _panel(user, store, project, {form: problems}, {form: entered})
    return page(request, "triggers/_panel.html", context, status=422)


def _problems(exc: ApiError | ValidationError | Conflict) -> list[str]:
    if isinstance(exc, ApiError):
        return [str(p) for p in exc.problems] or [exc.message]
    if isinstance(exc, Conflict):
        return [str(exc).strip("'\"")]
    return [
        f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()
    ]


def _pairs(
    text: str, separator: str, what: str, most: int
) -> tuple[list[tuple[str, str]], list[str]]:
    """``key <separator> value`` lines (blank lines skipped) and what is wrong with them."""
    pairs, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, found, value = line.partition(separator)
        if not found or not key.strip() or not value.strip():
            problems.append(f"{what} line {number}: write it as 'name {separator} value'")
        else:
            pairs.append((key.strip(), value.strip()))
    if len(pairs) > most:
        problems.append(f"at most {most} {what} lines")
    return pairs, problems


# -- triggers ---------------------------------------------------------------------------------


@router.post("/triggers/link")
def link(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    service: Id,
    pattern: Annotated[str, Form(max_length=1024)] = "",
    filters: Annotated[str, Form(max_length=FORM_TEXT)] = "",
    shadow_version: Annotated[str, Form(max_length=255)] = "",
    ordered: Annotated[str, Form(pattern=r"^(on)?$")] = "",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Link events whose type matches ``pattern`` to a service (developer in its project)."""
    target = _visible(store, user, service, "developer")
    entered = {"service": service, "pattern": pattern, "filters": filters,
               "shadow_version": shadow_version, "ordered": bool(ordered)}  # fmt: skip
    pairs, problems = _pairs(filters, "=", "filter", MAX_FILTERS)
    if not pattern.strip():
        problems.insert(0, "pattern: name an event type, or a glob such as 'orders.*'")
    if not problems:
        try:
            body = TriggerIn(
                pattern=pattern.strip(),
                service=target.name,
                project=target.project,
                filters=dict(pairs),
                shadow_version=shadow_version.strip() or None,
                ordered=bool(ordered),
            )
            created = api.create_trigger(body, user.principal, store, platform)
        except (ApiError, ValidationError) as exc:
            problems = _problems(exc)
        else:
            notice = f"linked {created.pattern} to {created.service}"
            return _answer(request, user, store, project or None, notice)
    return _refused(request, user, store, project or None, "link", problems, entered)


@router.post("/triggers/{trigger_id}/weights")
def set_weights(
    request: Request,
    trigger_id: str,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    version: Annotated[list[str], Form(max_length=MAX_VERSIONS)] = [],  # noqa: B006
    weight: Annotated[list[str], Form(max_length=MAX_VERSIONS)] = [],  # noqa: B006
    shadow_version: Annotated[str, Form(max_length=255)] = "",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Set a trigger's A/B weights (whole numbers adding up to 100; all blank: the latest
    version) and its shadow version (blank: none)."""
    api.get_trigger(trigger_id, user.principal, store)  # 404 for another project's trigger
    form = f"weights:{trigger_id}"
    entered = {"weights": dict(zip(version, weight, strict=False)), "shadow": shadow_version}
    problems: list[str] = []
    weights: dict[str, int] = {}
    if len(version) != len(weight):
        problems.append("every version needs its weight field")
    for ref, text in zip(version, weight, strict=False):
        text = text.strip()
        if not text:
            continue
        if not text.isdigit():
            problems.append(f"weight of {ref}: a whole number from 0 to {WEIGHT_TOTAL}")
        else:
            weights[ref] = int(text)
    if weights and not problems and sum(weights.values()) != WEIGHT_TOTAL:
        problems.append(
            f"the weights must add up to {WEIGHT_TOTAL} (they add up to {sum(weights.values())})"
        )
    if not problems:
        try:
            patch = TriggerPatch(weights=weights, shadow_version=shadow_version.strip() or None)
            changed = api.update_trigger(trigger_id, patch, user.principal, store, platform)
        except (ApiError, ValidationError) as exc:
            problems = _problems(exc)
        else:
            notice = f"saved the weights of {changed.pattern} -> {changed.service}"
            return _answer(request, user, store, project or None, notice)
    return _refused(request, user, store, project or None, form, problems, entered)


@router.post("/triggers/{trigger_id}/delete")
def unlink(
    request: Request,
    trigger_id: str,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Remove a trigger (developer); routers stop using it within a second."""
    gone = api.get_trigger(trigger_id, user.principal, store)
    api.delete_trigger(trigger_id, user.principal, store, platform)
    notice = f"unlinked {gone.pattern} from {gone.service}"
    return _answer(request, user, store, project or None, notice)


# -- mappings ---------------------------------------------------------------------------------


@router.post("/triggers/mappings")
def add_mapping(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    source_type: Annotated[str, Form(max_length=1024)] = "",
    target_type: Annotated[str, Form(max_length=1024)] = "",
    fields: Annotated[str, Form(max_length=FORM_TEXT)] = "",
    map_all: Annotated[str, Form(pattern=r"^(on)?$")] = "",
    mapping_project: Annotated[str, Form(max_length=64)] = "",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Map events of one type to another (developer); a rule closing a cycle is refused."""
    entered = {"source_type": source_type, "target_type": target_type, "fields": fields,
               "map_all": bool(map_all), "project": mapping_project}  # fmt: skip
    pairs, problems = _pairs(fields, "->", "field", 100)
    if not problems:
        try:
            body = MappingIn(
                source_type=source_type.strip(),
                target_type=target_type.strip(),
                fields=[{"from": a, "to": b} for a, b in pairs],  # type: ignore[misc]
                map_all=bool(map_all),
                project=mapping_project or None,
            )
            made = api.create_mapping(body, user.principal, store, platform)
        except (ApiError, ValidationError, Conflict) as exc:
            problems = _problems(exc)
        else:
            notice = f"mapped {made.source_type} to {made.target_type}"
            return _answer(request, user, store, project or None, notice)
    return _refused(request, user, store, project or None, "mapping", problems, entered)


@router.post("/triggers/mappings/{mapping_id}/delete")
def remove_mapping(
    request: Request,
    mapping_id: str,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    gone = api.get_mapping(mapping_id, user.principal, store)
    api.delete_mapping(mapping_id, user.principal, store, platform)
    notice = f"removed the mapping {gone.source_type} -> {gone.target_type}"
    return _answer(request, user, store, project or None, notice)
