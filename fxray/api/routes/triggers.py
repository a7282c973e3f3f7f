"""/api/v1 routes: triggers (late linking, A/B weights, shadow versions) and event mappings.

A trigger links an event-type pattern to a service; its project is its service's project.
Changes reach running routers within a second (the platform bumps the routing revision and
asks the routers to reload).

A mapping turns events of one type into events of another; it belongs to a project, but like
every routing rule it applies to every event of its source type.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from fxray.api.auth import Caller, Principal, Role, require_project, visible_service
from fxray.api.deps import PlatformDep, StoreDep
from fxray.api.errors import invalid, not_found
from fxray.api.pagination import Page, Paging
from fxray.api.schemas.triggers import (
    FieldMapIn,
    MappingIn,
    MappingOut,
    MappingPatch,
    TriggerIn,
    TriggerOut,
    TriggerPatch,
)
from fxray.events import mappings as mp
from fxray.router.triggers import validate_pattern, validate_weights
from fxray.store import (
    Conflict,
    MappingRecord,
    NotFound,
    ServiceRecord,
    StateStore,
    TriggerRecord,
)
from fxray.store.mappings import MappingCheck

router = APIRouter()
triggers_router = APIRouter(tags=["triggers"])
mappings_router = APIRouter(tags=["mappings"])

MAX_WEIGHT = 1_000_000
_ATTRIBUTE = re.compile(r"^[a-z0-9]{1,64}$")
_DATA_PATH = re.compile(r"^data(\.[^.\s]{1,128}){1,16}$")


# -- triggers ---------------------------------------------------------------------------------


def _trigger(record: TriggerRecord, service: ServiceRecord) -> TriggerOut:
    return TriggerOut(
        id=record.id,
        pattern=record.pattern,
        service=service.name,
        project=service.project,
        filters=dict(record.filters),
        weights=dict(record.weights),
        shadow_version=record.shadow_version,
        ordered=record.ordered,
        active=record.active,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _visible_trigger(
    store: StateStore, caller: Principal, trigger_id: str, role: Role
) -> tuple[TriggerRecord, ServiceRecord]:
    try:
        trigger = store.get_trigger(trigger_id)
        service = store.get_service(trigger.service)
    except NotFound:
        raise not_found(f"trigger {trigger_id!r}") from None
    require_project(caller, service.project, role, f"trigger {trigger_id!r}")
    return trigger, service


def _pattern_problems(pattern: str) -> list[str]:
    try:
        validate_pattern(pattern)
        re.compile(fnmatch.translate(pattern))
    except (ValueError, re.error) as exc:
        return [str(exc)]
    return []


def _filter_problems(filters: dict[str, str]) -> list[str]:
    problems = []
    for key in filters:
        if not (_ATTRIBUTE.match(key) or _DATA_PATH.match(key)):
            problems.append(
                f"filter {key!r} must name an attribute (lower-case letters and digits, "
                "such as 'source') or a data field ('data.customer.country')"
            )
    return problems


def _resolve(store: StateStore, service: ServiceRecord, ref: str) -> str | None:
    try:
        return store.resolve_version(service.id, ref).id
    except NotFound:
        return None


def _weight_problems(
    store: StateStore, service: ServiceRecord, weights: dict[str, int]
) -> tuple[dict[str, int], list[str]]:
    """The weights keyed by version id, and what is wrong with them."""
    problems = []
    for ref, weight in weights.items():
        if isinstance(weight, int) and weight > MAX_WEIGHT:
            problems.append(f"weight of {ref!r} must be at most {MAX_WEIGHT}")
    try:
        clean = validate_weights(weights)
    except ValueError as exc:
        return {}, [*problems, str(exc)]
    resolved: dict[str, int] = {}
    for ref, weight in clean.items():
        version = _resolve(store, service, ref)
        if version is None:
            problems.append(f"weights: service {service.name!r} has no version {ref!r}")
        elif version in resolved:
            problems.append(f"weights: {ref!r} names version {version!r} a second time")
        else:
            resolved[version] = weight
    return resolved, problems


def _shadow_problems(
    store: StateStore, service: ServiceRecord, shadow: str | None
) -> tuple[str | None, list[str]]:
    if shadow is None:
        return None, []
    version = _resolve(store, service, shadow)
    if version is None:
        return None, [f"shadow_version: service {service.name!r} has no version {shadow!r}"]
    return version, []


@triggers_router.get("/triggers")
def list_triggers(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    service: Annotated[
        str | None, Query(max_length=255, description="Only this service (by name)")
    ] = None,
    project: Annotated[
        str | None, Query(max_length=64, description="Only this project (platform admins)")
    ] = None,
    pattern: Annotated[
        str | None, Query(max_length=255, description="Exactly this pattern")
    ] = None,
) -> Page[TriggerOut]:
    """The triggers of the services this key can see."""
    scope = caller.scope(project)
    services = {s.id: s for s in store.list_services(project=scope)}
    triggers = [
        _trigger(t, services[t.service])
        for t in store.list_triggers()
        if t.service in services
        and (service is None or services[t.service].name == service)
        and (pattern is None or t.pattern == pattern)
    ]
    return paging.page(triggers)


@triggers_router.post("/triggers", status_code=status.HTTP_201_CREATED)
def create_trigger(
    body: TriggerIn, caller: Caller, store: StoreDep, platform: PlatformDep
) -> TriggerOut:
    """Link events whose type matches ``pattern`` to a service (developer in its project): the
    service ``service`` of the key's project, or of ``project``.

    Running routers use the link within a second; events already routed are not re-routed.
    """
    service = visible_service(
        store, caller, body.service, "developer", body.project, where="body.project"
    )
    problems = _pattern_problems(body.pattern) + _filter_problems(body.filters)
    weights, more = _weight_problems(store, service, body.weights)
    shadow, most = _shadow_problems(store, service, body.shadow_version)
    problems += more + most
    if problems:
        raise invalid("the trigger is invalid", problems)
    record = platform.link(
        body.pattern,
        service.id,
        filters=body.filters,
        weights=weights,
        shadow=shadow,
        ordered=body.ordered,
    )
    return _trigger(record, service)


@triggers_router.get("/triggers/{trigger_id}")
def get_trigger(trigger_id: str, caller: Caller, store: StoreDep) -> TriggerOut:
    trigger, service = _visible_trigger(store, caller, trigger_id, "viewer")
    return _trigger(trigger, service)


@triggers_router.patch("/triggers/{trigger_id}")
def update_trigger(
    trigger_id: str, body: TriggerPatch, caller: Caller, store: StoreDep, platform: PlatformDep
) -> TriggerOut:
    """Change a trigger's pattern, filters, weights, shadow version, ordering or switch it
    on/off (developer); running routers follow within a second."""
    trigger, service = _visible_trigger(store, caller, trigger_id, "developer")
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for name in ("pattern", "ordered", "active"):
        if name in given:
            if getattr(body, name) is None:
                problems.append(f"{name} cannot be null")
            else:
                changes[name] = getattr(body, name)
    if "pattern" in changes:
        problems += _pattern_problems(changes["pattern"])
    if "filters" in given:
        changes["filters"] = body.filters or {}
        problems += _filter_problems(changes["filters"])
    if "weights" in given:
        changes["weights"], more = _weight_problems(store, service, body.weights or {})
        problems += more
    if "shadow_version" in given:
        changes["shadow_version"], more = _shadow_problems(store, service, body.shadow_version)
        problems += more
    if problems:
        raise invalid("the trigger change is invalid", problems)
    if not changes:
        return _trigger(trigger, service)
    return _trigger(platform.update_trigger(trigger_id, **changes), service)


@triggers_router.delete("/triggers/{trigger_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_trigger(trigger_id: str, caller: Caller, store: StoreDep, platform: PlatformDep) -> None:
    """Unlink (developer); running routers stop using the trigger within a second."""
    _visible_trigger(store, caller, trigger_id, "developer")
    platform.unlink(trigger_id)


# -- event mappings ---------------------------------------------------------------------------


def _mapping(record: Any) -> MappingOut:
    return MappingOut(
        id=record.id,
        project=record.project,
        source_type=record.source_type,
        target_type=record.target_type,
        fields=[FieldMapIn.model_validate(f) for f in record.fields],
        map_all=record.map_all,
        active=record.active,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _rule(
    mapping_id: str,
    source_type: str,
    target_type: str,
    fields: list[dict[str, Any]],
    map_all: bool,
) -> mp.MappingRule:
    return mp.MappingRule(
        id=mapping_id,
        source_type=source_type,
        target_type=target_type,
        fields=[mp.FieldMap.model_validate(f) for f in fields],
        map_all=map_all,
    )


def _active_rules(mappings: list[MappingRecord]) -> list[mp.MappingRule]:
    rules = []
    for m in mappings:
        if m.active:
            try:
                rules.append(_rule(m.id, m.source_type, m.target_type, m.fields, m.map_all))
            except ValueError:  # a stored rule that no longer validates: no edges to follow
                continue
    return rules


def _check_mapping(
    mapping_id: str,
    source_type: str,
    target_type: str,
    fields: list[dict[str, Any]],
    map_all: bool,
    active: bool,
) -> MappingCheck | None:
    """422 listing every problem of the rule; else the store's check that refuses, with a
    409, a rule closing a cycle of mappings (run under the store's write lock)."""
    problems = mp.validate_rule(source_type, target_type, fields)
    if not fields and not map_all:
        problems.append("a rule without fields must set map_all (else it maps nothing)")
    if problems:
        raise invalid("the mapping is invalid", problems)
    if not active:
        return None
    new = _rule(mapping_id, source_type, target_type, fields, map_all)

    def no_cycle(mappings: list[MappingRecord]) -> None:
        cycle = mp.find_cycle(_active_rules(mappings), new)
        if cycle:
            raise Conflict(f"the mapping would form a cycle of event types: {' -> '.join(cycle)}")

    return no_cycle


def _visible_mapping(store: StateStore, caller: Principal, mapping_id: str, role: Role) -> Any:
    try:
        mapping = store.get_mapping(mapping_id)
    except NotFound:
        raise not_found(f"mapping {mapping_id!r}") from None
    require_project(caller, mapping.project, role, f"mapping {mapping_id!r}")
    return mapping


@mappings_router.get("/mappings")
def list_mappings(
    caller: Caller,
    store: StoreDep,
    paging: Paging,
    project: Annotated[
        str | None, Query(max_length=64, description="Only this project (platform admins)")
    ] = None,
    source_type: Annotated[str | None, Query(max_length=255)] = None,
    target_type: Annotated[str | None, Query(max_length=255)] = None,
    active: Annotated[bool | None, Query()] = None,
) -> Page[MappingOut]:
    """The event mappings of the projects this key can see."""
    scope = caller.scope(project)
    found = [
        _mapping(m)
        for m in store.list_mappings(project=scope, source_type=source_type)
        if (target_type is None or m.target_type == target_type)
        and (active is None or m.active == active)
    ]
    return paging.page(found)


@mappings_router.post("/mappings", status_code=status.HTTP_201_CREATED)
def create_mapping(
    body: MappingIn, caller: Caller, store: StoreDep, platform: PlatformDep
) -> MappingOut:
    """Map events of ``source_type`` to ``target_type`` (developer). A rule mapping a type
    onto itself is invalid (422); one closing a cycle of mappings is refused (409)."""
    if caller.project is not None:
        project = caller.project
        if body.project is not None and body.project != caller.project:
            raise not_found(f"project {body.project!r}")
    elif body.project is None:
        raise invalid("a platform-wide key must name the mapping's project", ["project: missing"])
    else:
        project = body.project
    require_project(caller, project, "developer")
    store.get_project(project)
    fields = [f.to_dict() for f in body.fields]
    check = _check_mapping(
        "(new)", body.source_type, body.target_type, fields, body.map_all, body.active
    )
    record = store.add_mapping(
        project,
        body.source_type,
        body.target_type,
        fields,
        body.map_all,
        active=body.active,
        check=check,
    )
    platform.refresh()
    return _mapping(record)


@mappings_router.get("/mappings/{mapping_id}")
def get_mapping(mapping_id: str, caller: Caller, store: StoreDep) -> MappingOut:
    return _mapping(_visible_mapping(store, caller, mapping_id, "viewer"))


@mappings_router.patch("/mappings/{mapping_id}")
def update_mapping(
    mapping_id: str, body: MappingPatch, caller: Caller, store: StoreDep, platform: PlatformDep
) -> MappingOut:
    """Change a mapping (developer); the changed rule is validated like a new one."""
    mapping = _visible_mapping(store, caller, mapping_id, "developer")
    changes: dict[str, Any] = {}
    nulls = []
    for name in ("source_type", "target_type", "fields", "map_all", "active"):
        if name in body.model_fields_set:
            value = getattr(body, name)
            if value is None:
                nulls.append(f"{name} cannot be null")
            else:
                changes[name] = value
    if nulls:
        raise invalid("the mapping change is invalid", nulls)
    if "fields" in changes:
        changes["fields"] = [f.to_dict() for f in changes["fields"]]
    if not changes:
        return _mapping(mapping)
    merged = {
        name: changes.get(name, getattr(mapping, name))
        for name in ("source_type", "target_type", "fields", "map_all", "active")
    }
    check = _check_mapping(mapping.id, **merged)
    record = store.update_mapping(mapping_id, check=check, **changes)
    platform.refresh()
    return _mapping(record)


@mappings_router.delete("/mappings/{mapping_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_mapping(mapping_id: str, caller: Caller, store: StoreDep, platform: PlatformDep) -> None:
    _visible_mapping(store, caller, mapping_id, "developer")
    store.remove_mapping(mapping_id)
    platform.refresh()


router.include_router(triggers_router)
router.include_router(mappings_router)
