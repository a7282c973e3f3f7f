"""3. Manual run: a form generated from a version's ``parameters.json`` (types, choices,
defaults, required; the API's problems shown next to their fields), a priority, and "run
again with these parameters" from an earlier manual run (``?from_run=<run id>``).

Starting the run calls the API's own route function, so it checks and answers as the API."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Path as PathParam
from fastapi import Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from fxray.api.errors import ApiError, invalid
from fxray.api.routes import runs as api_runs
from fxray.api.routes._common import visible_run
from fxray.api.routes.services import VERSION_PATTERN
from fxray.api.schemas.runs import ManualRunIn
from fxray.events import cloudevent as ev
from fxray.services import Parameter
from fxray.store import NotFound, ServiceRecord, StateStore, VersionRecord
from fxray.store import queries as q
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope
from fxray.ui.deps import visible_service as _visible
from fxray.ui.nav import NavEntry
from fxray.ui.routing import in_thread, ui_router
from fxray.ui.templating import page, query

router = ui_router()
NAV = NavEntry("Manual run", "/run", 30)

SERVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
RUN_ID = r"^[A-Za-z0-9._:-]{1,64}$"
FIELD_PREFIX = "p."  # form field names of parameters: "p.<name>"
PRIORITIES = tuple(range(1, 11))

ServiceId = Annotated[str, PathParam(pattern=SERVICE_ID, description="The service's id")]
VersionQuery = Annotated[str | None, Query(max_length=128, pattern=f"^$|{VERSION_PATTERN}")]
FromRun = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9._:-]*$")]


# -- the service picker -----------------------------------------------------------------------


@router.get("/run")
def pick_service(request: Request, user: User, store: StoreDep) -> Response:
    """The services the user may start by hand (active, allowing manual runs)."""
    services = [
        s
        for s in store.list_services(scope(user, None))
        if s.active and s.allow_manual_triggering and user.can("developer", s.project)
    ]
    return page(request, "manualrun/pick.html", {**page_context(user), "services": services})


# -- the form ---------------------------------------------------------------------------------


def _version(store: StateStore, service: ServiceRecord, ref: str | None) -> VersionRecord:
    """The chosen version, or the latest; a 422 when ``ref`` names none of the service's."""
    if ref:
        try:
            return store.resolve_version(service.id, ref)
        except NotFound:
            raise invalid("the version is unknown", [f"version: no version {ref!r}"]) from None
    versions = store.list_versions(service.id)
    if not versions:
        raise ApiError(409, f"service {service.id!r} has no version")
    return versions[-1]


def _earlier_params(store: StateStore, user: UIUser, service: ServiceRecord, run_id: str) -> dict:
    """The parameters of an earlier manual run of ``service`` (404 for runs the user cannot see,
    422 for a run that was not a manual run of this service)."""
    view = visible_run(store, user.principal, run_id, "viewer")
    if view.run.service != service.id:
        raise invalid(f"run {run_id!r} is not a run of {service.id!r}")
    event = q.get_event(store, view.run.event_id)
    if event is None or event.get("type") != ev.MANUAL_RUN:
        raise invalid(f"run {run_id!r} was not a manual run: it has no parameters to reuse")
    data = event.get("data")
    return dict(data) if isinstance(data, dict) else {}


def _as_text(value: Any) -> str:
    """A parameter value as a form field shows it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fields(declared: list[Parameter], values: dict[str, Any]) -> list[dict[str, Any]]:
    """What the template needs of each field: its definition, the value to show (the given
    one, else the default) as text, and for multiselect the chosen choices as text."""
    fields = []
    for field in declared:
        value = values.get(field.name, field.default)
        chosen = [_as_text(v) for v in value] if isinstance(value, list) else [_as_text(value)]
        fields.append(
            {
                "field": field,
                "input": FIELD_PREFIX + field.name,
                "value": "" if isinstance(value, list) else _as_text(value),
                "chosen": chosen,
                "choices": [_as_text(c) for c in field.choices or []],
                "default": None if field.default is None else json.dumps(field.default),
            }
        )
    return fields


def _form_context(
    user: UIUser,
    store: StateStore,
    platform: Any,
    service: ServiceRecord,
    version: VersionRecord,
    values: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    declared = platform.parameters(version)
    return {
        **page_context(user),
        "service": service,
        "version": version,
        "versions": list(reversed(store.list_versions(service.id))),
        "declared": declared is not None,
        "fields": _fields(declared or [], values),
        "free_params": json.dumps(values, indent=2, sort_keys=True) if declared is None else "",
        "priorities": PRIORITIES,
        "priority": None,
        "can_run": user.can("developer", service.project),
        "field_errors": {},
        "form_errors": [],
        "from_run": None,
        "started": None,
        **extra,
    }


@router.get("/run/{service_id}")
def run_form(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    version: VersionQuery = None,
    from_run: FromRun = None,
    started: FromRun = None,
) -> Response:
    """The form of ``version`` (default: the latest), filled with an earlier run's parameters
    when ``from_run`` names one."""
    service = _visible(store, user, service_id, "viewer")
    chosen = _version(store, service, version)
    values = _earlier_params(store, user, service, from_run) if from_run else {}
    context = _form_context(
        user, store, platform, service, chosen, values, from_run=from_run or None
    )
    context["started"] = started or None
    return page(request, "manualrun/form.html", context)


def _values(form: FormData, declared: list[Parameter] | None) -> dict[str, Any]:
    """The parameters as the form sent them: text (the platform coerces it), lists for
    multiselect; with no parameters.json, the JSON object typed in."""
    if declared is None:
        text = str(form.get("params") or "").strip() or "{}"
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _FormProblem({}, [f"params: not JSON ({exc.msg} at line {exc.lineno})"]) from None
        if not isinstance(values, dict):
            raise _FormProblem({}, ["params: must be a JSON object of name -> value"])
        return values
    values: dict[str, Any] = {}
    for field in declared:
        name = FIELD_PREFIX + field.name
        if field.type == "multiselect":
            values[field.name] = [str(v) for v in form.getlist(name)]
        else:
            values[field.name] = str(form.get(name) or "")
    return values


class _FormProblem(Exception):
    """The form's input is refused: problems per field name and for the whole form."""

    def __init__(self, by_field: dict[str, list[str]], others: list[str]) -> None:
        super().__init__("; ".join(others))
        self.by_field = by_field
        self.others = others


def _problems(exc: ApiError) -> _FormProblem:
    """The API's 422 problems split into those of a parameter and the rest."""
    by_field: dict[str, list[str]] = {}
    others: list[str] = []
    for problem in exc.problems:
        location = problem.get("location", "") if isinstance(problem, dict) else ""
        message = problem.get("message", "") if isinstance(problem, dict) else str(problem)
        if location.startswith("body.params."):
            by_field.setdefault(location.removeprefix("body.params."), []).append(message)
        else:
            others.append(message)
    return _FormProblem(by_field, others or ([] if by_field else [exc.message]))


@router.post("/run/{service_id}")
async def start(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
) -> Response:
    """Start the run (developer): 303 to the form with a link to the new run, or the form
    again (422) with each problem next to its field."""
    service = await in_thread(_visible, store, user, service_id, "developer")
    form = await request.form()
    chosen = await in_thread(_version, store, service, str(form.get("version") or "") or None)
    declared = await in_thread(platform.parameters, chosen)
    priority_text = str(form.get("priority") or "")
    values: dict[str, Any] = {}
    try:
        values = _values(form, declared)
        try:
            body = ManualRunIn(
                params=values,
                version=chosen.id,
                priority=int(priority_text) if priority_text else None,
            )
        except (ValidationError, ValueError):
            raise _FormProblem({}, ["priority: choose 1 (highest) to 10 (lowest)"]) from None
        try:
            answer = await in_thread(
                api_runs.start_run,
                name=service.name,
                body=body,
                caller=user.principal,
                store=store,
                platform=platform,
                project=service.project,
            )
        except ApiError as exc:
            if exc.status != 422:
                raise
            raise _problems(exc) from None
    except _FormProblem as problem:
        context = await in_thread(
            _form_context,
            user,
            store,
            platform,
            service,
            chosen,
            values if declared is not None else {},
            field_errors=problem.by_field,
            form_errors=problem.others,
            priority=priority_text,
        )
        if declared is None:
            context["free_params"] = str(form.get("params") or "")
        return page(request, "manualrun/form.html", context, status=422)
    target = f"/run/{service.id}" + query(version=chosen.id, started=answer.run_id)
    return RedirectResponse(target, status_code=303)
