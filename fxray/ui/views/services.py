"""2. Services: the list (status, versions, triggers, last run) and a service's page (versions
with manifest, requirements and README; triggers; recent runs), with the API's actions:
upload a new version (zip) or sync from git, activate/deactivate, config overrides and
write-only secret overrides (their values are never shown).

A git sync goes through the API's own route functions (``POST /api/v1/repositories`` the first
time a URL and ref are synced into a project, then ``POST .../sync``), so it makes the same
checks (developer role, URL schemes and hosts, ``git_allowed_hosts``, local repositories only
where ``api_allow_local_repos``); what is refused and what each folder became are shown in the
form."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Annotated, Any

from fastapi import File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from fxray.api.auth import require_project
from fxray.api.errors import ApiError, invalid, not_found
from fxray.api.pagination import PageParams, Paging
from fxray.api.routes import services as api_services
from fxray.api.routes.services import LABEL_PATTERN, VERSION_PATTERN
from fxray.api.schemas.common import NAME_PATTERN
from fxray.api.schemas.services import RepositoryIn, SyncOut
from fxray.kv import config_key, get_json, secrets_key
from fxray.packages import git as gitsync
from fxray.packages.archive import ArchiveLimits
from fxray.services.package import load_package_bytes
from fxray.store import NotFound, StateStore, VersionRecord
from fxray.store import queries as q
from fxray.ui import queries as uq
from fxray.ui.deps import PlatformDep, StoreDep, UIUser, User, page_context, scope
from fxray.ui.deps import visible_service as _visible
from fxray.ui.nav import NavEntry
from fxray.ui.routing import body_limit, ui_router
from fxray.ui.templating import is_htmx, page

router = ui_router()
NAV = NavEntry("Services", "/services", 20)

SERVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$"
RECENT_RUNS = 10

ServiceId = Annotated[str, PathParam(pattern=SERVICE_ID, description="The service's id")]


def _upload_limit(request: Request) -> int:
    return request.app.state.platform.settings.package_max_upload_bytes


# -- the list ---------------------------------------------------------------------------------


@router.get("/services")
def services_page(
    request: Request,
    user: User,
    store: StoreDep,
    paging: Paging,
    project: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
    name: Annotated[str | None, Query(max_length=64)] = None,
    active: Annotated[str | None, Query(pattern=r"^(yes|no)?$")] = None,
) -> Response:
    shown = scope(user, project)
    services = [
        s
        for s in store.list_services(shown)
        if (not name or name.lower() in s.name.lower())
        and (not active or s.active == (active == "yes"))
    ]
    window = services[paging.offset : paging.offset + paging.limit]
    context = {
        "summaries": uq.service_summaries(store, window),
        "total": len(services),
        "paging": paging,
        "filters": {"project": project, "name": name, "active": active},
    }
    return page(request, "services/list.html", _list_context(user, store, shown, context))


def _list_context(
    user: UIUser, store: StateStore, shown: str | None, context: dict[str, Any]
) -> dict[str, Any]:
    """The list page's context around ``context`` (its rows), with the upload and git forms."""
    projects = _projects(store, user)
    upload_projects = [p for p in projects if user.can("developer", p)]
    return {
        **page_context(user),
        "projects": projects,
        "upload_projects": upload_projects,
        "repositories": [  # their URLs with any password replaced by ***
            replace(r, url=gitsync.redact(r.url))
            for r in store.list_repositories(shown)
            if r.project in upload_projects
        ],
        "git_form": {"url": "", "ref": "main", "project": ""},
        "git_problems": [],
        "git_result": None,
        **context,
    }


def _projects(store: StateStore, user: UIUser) -> list[str]:
    """The projects the user may pick: all for a platform admin, else the key's own."""
    if user.platform_admin:
        return [p.name for p in store.list_projects()]
    return [user.principal.project] if user.principal.project else []


# -- upload -----------------------------------------------------------------------------------


@router.post("/services/upload")
@body_limit(_upload_limit)
def upload(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    file: Annotated[UploadFile, File()],
    label: Annotated[str, Form(max_length=128)] = "",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Deploy a zip as a new version (developer in the target project)."""
    target = project or user.principal.project
    if target is None:
        raise invalid("choose the project to deploy to")
    require_project(user.principal, target, "developer")
    try:
        store.get_project(target)
    except NotFound:
        raise not_found(f"project {target!r}") from None
    label_value = label.strip() or None
    if label_value is not None and not re.fullmatch(LABEL_PATTERN, label_value):
        raise invalid(
            "the label is invalid",
            ["label: letters, digits and . _ + - only, starting with a letter or digit"],
        )
    most = platform.settings.package_max_upload_bytes
    data = file.file.read(most + 1)
    if len(data) > most:
        raise ApiError(413, f"the upload is larger than the limit of {most} bytes")
    if not data:
        raise invalid("choose a zip file of the service folder")
    deployment = platform.deploy(
        data, label=label_value, deployed_by=user.principal.key_id, project=target
    )
    where = f"/services/{deployment.service.id}?version={deployment.version.id}"
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": where})
    return RedirectResponse(where, status_code=303)


# -- git sync ---------------------------------------------------------------------------------


@router.post("/services/git")
def sync_from_git(
    request: Request,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    url: Annotated[str, Form(max_length=4096)],
    ref: Annotated[str, Form(max_length=512)] = "main",
    project: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """Deploy each service folder of a git repository at ``ref`` (developer in the target
    project): registered the first time, synced each time. A URL, ref or host the API refuses
    and a repository that cannot be fetched answer 422 with the problems in the form."""
    target = project or user.principal.project
    if target is None:
        raise invalid("choose the project to deploy to")
    require_project(user.principal, target, "developer")
    form = {"url": url.strip(), "ref": ref.strip() or "main", "project": target}
    return _sync(request, user, store, platform, form, None)


@router.post("/services/git/{repository_id}/sync")
def sync_again(
    request: Request,
    repository_id: Annotated[str, PathParam(pattern=api_services.REPOSITORY_ID_PATTERN)],
    user: User,
    store: StoreDep,
    platform: PlatformDep,
) -> Response:
    """Sync a registered repository again (developer in its project)."""
    try:
        known = store.get_repository(repository_id)
    except NotFound:
        raise not_found(f"repository {repository_id!r}") from None
    require_project(user.principal, known.project, "developer", f"repository {repository_id!r}")
    form = {"url": gitsync.redact(known.url), "ref": known.ref, "project": known.project}
    return _sync(request, user, store, platform, form, repository_id)


def _sync(
    request: Request,
    user: UIUser,
    store: StateStore,
    platform: Any,
    form: dict[str, str],
    repository_id: str | None,
) -> Response:
    result: SyncOut | None = None
    try:
        repository_id = repository_id or _repository_for(user, store, platform, form)
        result = api_services.sync_repository(
            repository_id=repository_id, caller=user.principal, platform=platform, store=store
        )
    except ApiError as exc:
        if exc.status != 422:
            raise  # 403 / 404: the error page, as everywhere
        problems = [_problem(p) for p in exc.problems] or [exc.message]
        return _git_answer(request, user, store, form, [exc.message, *problems], None)
    return _git_answer(request, user, store, form, [], result)


def _repository_for(user: UIUser, store: StateStore, platform: Any, form: dict[str, str]) -> str:
    """The id of the repository registered for the form's URL and ref in its project, after
    registering it if it is new (the API checks the URL and ref then)."""
    for known in store.list_repositories(form["project"]):
        if known.url == form["url"] and known.ref == form["ref"]:
            return known.id
    try:
        body = RepositoryIn(url=form["url"], ref=form["ref"], project=form["project"])
    except ValidationError as exc:
        problems = [
            {"location": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in exc.errors()
        ]
        raise invalid("the repository is invalid", problems) from None
    made = api_services.register_repository(
        body=body, caller=user.principal, platform=platform, store=store
    )
    return made.id


def _problem(problem: Any) -> str:
    if isinstance(problem, dict):
        where = str(problem.get("location", "")).removeprefix("body.")
        message = str(problem.get("message", ""))
        return f"{where}: {message}" if where else message
    return str(problem)


def _git_answer(
    request: Request,
    user: UIUser,
    store: StateStore,
    form: dict[str, str],
    problems: list[str],
    result: SyncOut | None,
) -> Response:
    shown = user.principal.scope(None)
    services = store.list_services(shown)
    paging = PageParams(offset=0, limit=50)
    context = {
        "summaries": uq.service_summaries(store, services[: paging.limit]),
        "total": len(services),
        "paging": paging,
        "filters": {"project": None, "name": None, "active": None},
        "git_form": form,
        "git_problems": problems,
        "git_result": result,
    }
    status = 422 if problems else 200
    return page(request, "services/list.html", _list_context(user, store, shown, context), status)


# -- one service ------------------------------------------------------------------------------


def _package_view(platform: Any, version: VersionRecord) -> dict[str, Any]:
    """README, parameters and files of a version's package; ``error`` if it cannot be read."""
    try:
        data = platform.packages.get(version.content_hash)
        package = load_package_bytes(
            data, version.id, limits=ArchiveLimits.from_settings(platform.settings)
        )
    except Exception as exc:  # a package store away or a package gone: say so on the page
        return {"error": f"the package cannot be read: {type(exc).__name__}"}
    parameters = None
    if "parameters.json" in package.files:
        parameters = package.files["parameters.json"].decode("utf-8-sig", errors="replace")
    return {
        "error": None,
        "readme": package.readme,
        "parameters": parameters,
        "files": sorted(package.files),
    }


def _overrides(platform: Any, service_id: str) -> dict[str, Any]:
    """The config override (shown) and the names of the secret overrides (values never)."""
    config = get_json(platform.kv, config_key(service_id), None)
    secrets = get_json(platform.kv, secrets_key(service_id), None) or {}
    return {
        "config": json.dumps(config, indent=2, sort_keys=True) if config else "",
        "secret_names": sorted(secrets) if isinstance(secrets, dict) else [],
    }


@router.get("/services/{service_id}")
def service_page(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    version: Annotated[str | None, Query(pattern=VERSION_PATTERN)] = None,
) -> Response:
    service = _visible(store, user, service_id, "viewer")
    versions = store.list_versions(service.id)
    chosen = next((v for v in versions if v.id == version), versions[-1] if versions else None)
    runs, _ = uq.runs_page(
        store, uq.RunSelection(q.RunFilter(service=service.id)), limit=RECENT_RUNS
    )
    context = {
        **page_context(user),
        "service": service,
        "versions": list(reversed(versions)),
        "chosen": chosen,
        "package": _package_view(platform, chosen) if chosen is not None else None,
        "triggers": store.list_triggers(service.id),
        "labels": {v.id: v.label for v in versions},
        "runs": runs,
        "can_change": user.can("developer", service.project),
        "deployed": version if version and chosen is not None and chosen.id == version else None,
        "notice": None,
        "config_error": None,
        **_overrides(platform, service.id),
    }
    return page(request, "services/detail.html", context)


def _after_change(
    request: Request, user: UIUser, service_id: str, platform: Any, store: StateStore, notice: str
) -> Response:
    """The changed part of the page for htmx (status and overrides), else back to the page."""
    if not is_htmx(request):
        return RedirectResponse(f"/services/{service_id}", status_code=303)
    service = store.get_service(service_id)
    return page(
        request,
        "services/_settings.html",
        {
            **page_context(user),
            "service": service,
            "can_change": True,
            "notice": notice,
            "config_error": None,
            **_overrides(platform, service_id),
        },
    )


@router.post("/services/{service_id}/active")
def set_active(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    active: Annotated[str, Form(pattern=r"^(true|false)$")],
) -> Response:
    """Activate or deactivate (developer); routers see it within a second."""
    service = _visible(store, user, service_id, "developer")
    wanted = active == "true"
    if wanted != service.active:
        platform.activate(service.id, wanted)
    notice = f"{service.name} is now {'active' if wanted else 'inactive'}"
    return _after_change(request, user, service.id, platform, store, notice)


@router.post("/services/{service_id}/config")
def set_config(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    config: Annotated[str, Form(max_length=256 * 1024)] = "",
) -> Response:
    """Replace the config override with a JSON object (empty: no override)."""
    service = _visible(store, user, service_id, "developer")
    text = config.strip()
    problem = None
    value: Any = {}
    if text:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        else:
            if not isinstance(value, dict):
                problem = "the config override must be a JSON object ({...})"
    if problem is not None:
        if not is_htmx(request):
            raise invalid("the config override is invalid", [problem])
        context = {
            **page_context(user),
            "service": service,
            "can_change": True,
            "notice": None,
            "config_error": problem,
            **_overrides(platform, service.id),
            "config": config,
        }
        return page(request, "services/_settings.html", context, status=422)
    platform.configure(service.id, config=value)
    return _after_change(request, user, service.id, platform, store, "config override saved")


@router.post("/services/{service_id}/secrets")
def set_secret(
    request: Request,
    service_id: ServiceId,
    user: User,
    store: StoreDep,
    platform: PlatformDep,
    name: Annotated[str, Form(pattern=SECRET_NAME)],
    value: Annotated[str, Form(max_length=64 * 1024)] = "",
    remove: Annotated[str, Form(pattern=r"^(yes)?$")] = "",
) -> Response:
    """Set (or with ``remove=yes`` drop) one secret override; values are written, never read
    back to the browser."""
    service = _visible(store, user, service_id, "developer")
    current = get_json(platform.kv, secrets_key(service.id), None) or {}
    secrets = dict(current) if isinstance(current, dict) else {}
    if remove:
        secrets.pop(name, None)
        notice = f"secret {name} removed"
    else:
        secrets[name] = value
        notice = f"secret {name} saved"
    platform.configure(service.id, secrets=secrets)
    return _after_change(request, user, service.id, platform, store, notice)
