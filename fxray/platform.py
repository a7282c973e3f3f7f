"""The platform, driven from Python: start it, deploy services, link triggers, send events.

::

    import fxray

    with fxray.Platform() as platform:              # embedded defaults: no servers needed
        platform.deploy("examples/greeter")
        platform.link("demo.greet", "greeter")
        event = platform.send("demo.greet", {"name": "Ada"})
        for run in platform.wait_for_runs(correlation_id=event["id"]):
            print(run.service, run.status, run.duration_ms)
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from fxray.actors.scaling import SCALING_KEY, check_override
from fxray.bus import EventBus
from fxray.cluster.mode import ClusterModeError, check_cluster_mode
from fxray.cluster.placement import (
    NodeView,
    Unplaceable,
    describe_resources,
    executor_request,
    platform_actor_options,
)
from fxray.events import cloudevent as ev
from fxray.events import deadletters
from fxray.events.deadletters import DeadLetter
from fxray.kv import KVStore, config_key, put_json, secrets_key
from fxray.packages import PackageStore
from fxray.packages.archive import ArchiveLimits
from fxray.router.actor import Router
from fxray.router.triggers import validate_pattern, validate_weights
from fxray.services import (
    PackageError,
    ServicePackage,
    load_package,
    load_package_bytes,
    validate_params,
)
from fxray.services.clashes import (
    ISOLATION_KEY,
    IsolationDecision,
    Resolution,
    decide_isolation,
    resolve,
)
from fxray.settings import Settings
from fxray.store import (
    NotFound,
    RunRecord,
    ServiceRecord,
    StateStore,
    TriggerRecord,
    VersionRecord,
)
from fxray.store.records import DEFAULT_PROJECT

if TYPE_CHECKING:
    from fxray.packages.assets import AssetInfo, AssetStore, Data

log = logging.getLogger("fxray.platform")

RAY_CLIENT_ATTEMPTS = 3  # connections to a Ray Client address (ray://) before giving up
RAY_CLIENT_RETRY_S = 2.0  # times the attempt number, between them

RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def apply_ray_env_defaults() -> None:
    """Ray settings fxray relies on (no usage stats, no token auth on a local cluster, ...),
    unless the environment says otherwise."""
    for name, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(name, value)


class PlatformError(RuntimeError):
    """An operator request the platform refuses; the message says why."""


DEPLOY_RESOLVE_TIMEOUT_S = 20.0  # past it, the pool still checks the installed environment


@dataclass(frozen=True, slots=True)
class Deployment:
    """What one deploy did."""

    service: ServiceRecord
    version: VersionRecord
    created: bool  # False when the same content was deployed before
    triggers: list[TriggerRecord]


class Platform:
    """One fxray installation: state store, KV, package store, event bus, router, executors."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings(**overrides)
        self.store: StateStore | None = None
        self.kv: KVStore | None = None
        self.packages: PackageStore | None = None
        self.bus: EventBus | None = None
        self.routers: list[Any] = []
        self.ops_sinks: list[Any] = []  # ops sink actors (settings.ops_sink != "none")
        self._started_ray = False
        self._parameters: dict[str, list[Any] | None] = {}
        self._assets: AssetStore | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Platform:
        """Connect to (or start) Ray and bring up the bus and the router; idempotent."""
        if self.routers:
            return self
        settings = self.settings
        settings.home.mkdir(parents=True, exist_ok=True)
        self.store = StateStore(settings.database_url)
        self.store.engine  # noqa: B018 - create the tables now, not in the router
        self.kv = _make_kv(settings)
        self.packages = _make_package_store(settings)
        self._init_ray()
        self._check_cluster_mode()
        settings = self.settings
        self.bus = _make_bus(settings)
        for _ in range(settings.routers):
            self.add_router()
        if settings.ops_sink != "none":
            for _ in range(settings.ops_sinks):
                self.add_ops_sink()
        return self

    def add_router(self) -> str:
        """Start one more router; the routers share the event partitions as one consumer group."""
        index = len(self.routers)
        while any(ray.get(r.ping.remote()) == f"router-{index}" for r in self.routers):
            index += 1
        router = (
            ray.remote(Router)
            .options(
                name=f"fxray-router.{self.settings.instance}.{index}.{uuid.uuid4().hex[:6]}",
                **platform_actor_options(self.settings),
                max_concurrency=1000,
            )
            .remote(
                self.settings.public_dict(),
                self.bus,
                self.store,
                self.kv,
                self.packages,
                router_id=f"router-{index}",
                run_scheduler=not self.routers,
            )
        )
        ray.get(router.start.remote())
        self.routers.append(router)
        return f"router-{index}"

    def add_ops_sink(self) -> Any:
        """Start an ops sink under the lowest index no running sink has (a sink started after
        one died takes that one's partitions back at once); returns its actor handle."""
        from fxray.ops.sink import start_sink

        taken = set(ray.get([sink.ping.remote() for sink in self.ops_sinks]))
        index = next(i for i in range(len(taken) + 1) if f"ops-sink-{i}" not in taken)
        sink = start_sink(self.settings, self._bus(), index, self.store)
        self.ops_sinks.append(sink)
        return sink

    def remove_router(self) -> dict[str, int]:
        """Stop the newest router: it finishes its runs, commits, and leaves the group."""
        if len(self.routers) < 2:
            raise PlatformError("the last router cannot be removed; stop the platform instead")
        router = self.routers.pop()
        try:
            return ray.get(router.stop.remote(), timeout=60)
        finally:
            ray.kill(router)

    def _init_ray(self) -> None:
        if ray.is_initialized():
            return
        apply_ray_env_defaults()
        address = self.settings.ray_address
        # Ray Client: the head starts a server process per session, and a start that fails
        # there (seen under load: the process gone before the proxy looked at it) ends the
        # connection with ConnectionAbortedError; a fresh attempt gets a fresh server
        attempts = RAY_CLIENT_ATTEMPTS if address and address.startswith("ray://") else 1
        for attempt in range(1, attempts + 1):
            try:
                ray.init(
                    address=address,
                    num_cpus=self.settings.ray_num_cpus,
                    include_dashboard=self.settings.ray_include_dashboard,
                    namespace=self.settings.ray_namespace,
                    log_to_driver=False,
                    configure_logging=False,
                )
                break
            except ConnectionError as exc:
                if attempt == attempts:
                    raise
                log.warning("Ray Client connection to %s failed (%s); again", address, exc)
                ray.shutdown()
                time.sleep(RAY_CLIENT_RETRY_S * attempt)
        self._started_ray = True

    def ray_connected(self) -> bool:
        """Whether this process still has its Ray session. A Ray Client session (``ray://``,
        the platform pod on KubeRay) ends when the head is gone for longer than the client's
        reconnect grace period, and does not come back: the process must be restarted."""
        return ray.is_initialized()  # over Ray Client: whether the session is still connected

    def _check_cluster_mode(self) -> None:
        """Settle cluster mode (its setting as the actors will see it) and refuse settings that
        keep state on one node when it is on (:mod:`fxray.cluster.mode`)."""
        try:
            on = check_cluster_mode(self.settings, ray.nodes())
        except ClusterModeError as exc:
            self.stop()
            raise PlatformError(str(exc)) from None
        self.settings = self.settings.model_copy(update={"cluster_mode": on})

    def stop(self) -> None:
        """Stop the router (committing what finished) and the embedded bus."""
        while self.routers:
            router = self.routers.pop()
            try:
                ray.get(router.stop.remote(), timeout=30)
            finally:
                ray.kill(router)
        while self.ops_sinks:
            sink = self.ops_sinks.pop()
            try:
                ray.get(sink.stop.remote(), timeout=30)
            except Exception:  # already dead: its records are redelivered to the next sink
                pass
            finally:
                ray.kill(sink)
        shutdown = getattr(self.bus, "shutdown", None)
        if shutdown is not None:
            shutdown()
        self.bus = None
        if self.store is not None:
            self.store.close()
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- services -----------------------------------------------------------------------------

    def deploy(
        self,
        path: str | Path | bytes,
        *,
        label: str | None = None,
        deployed_by: str | None = None,
        project: str = DEFAULT_PROJECT,
    ) -> Deployment:
        """Validate and store a service package as a new immutable version.

        The service is the manifest's ``name`` in ``project`` (names are unique within a
        project: another project may have a service of the same name). Its first deploy links
        the manifest's ``trigger_events``. Deploying the same content again returns the
        existing version. Raises :class:`PackageError` listing every problem of an invalid
        package.
        """
        store, packages, _ = self._require()
        limits = ArchiveLimits.from_settings(self.settings)
        if isinstance(path, bytes):
            package = load_package_bytes(path, limits=limits)
        else:
            package = load_package(path, limits)
        manifest = package.manifest
        self._check_placement(package)
        isolation = self.isolation(package)
        packages.put(package.content_hash, package.to_zip())
        try:
            store.find_service(project, package.name)
            first_deploy = False
        except NotFound:
            first_deploy = True
        fields = {
            "description": manifest.description,
            "tags": list(manifest.tags),
            "allow_manual_triggering": manifest.allow_manual_triggering,
            "priority": manifest.priority,
            "schedule": manifest.schedule,
            "max_concurrency": manifest.max_concurrency,
        }
        if first_deploy:
            fields["active"] = manifest.active
        service = store.upsert_service(package.name, project=project, **fields)
        recorded = manifest.model_dump(mode="json", exclude_none=True)
        recorded[ISOLATION_KEY] = isolation.to_json()  # the router's pools read the choice here
        version, created = store.add_version(
            service.id,
            package.content_hash,
            recorded,
            label=label,
            requirements=package.requirements,
            requirements_hash=package.requirements_hash,
            deployed_by=deployed_by,
        )
        self._parameters[version.id] = _declared_parameters(package)
        triggers = []
        if first_deploy:
            triggers = [store.add_trigger(t, service.id) for t in manifest.trigger_events]
        store.sync_manifest_schedule(service.id, manifest.schedule)
        self.refresh()
        return Deployment(service, version, created, triggers)

    def isolation(self, package: ServicePackage) -> IsolationDecision:
        """Where a package's scripts will run: in the executor's process, or isolated in a
        worker process of their own when what its requirements install clashes with the
        platform's packages (resolved with pip, once per requirements hash; see
        :mod:`fxray.services.clashes`)."""

        def resolver(requirements: list[str]) -> Resolution:
            return resolve(
                requirements,
                cache_dir=self.settings.envs_dir,
                index_url=self.settings.pip_index_url,
                timeout_s=DEPLOY_RESOLVE_TIMEOUT_S,
            )

        return decide_isolation(package.requirements, package.manifest.isolation, resolver=resolver)

    def _check_placement(self, package: ServicePackage) -> None:
        """Refuse a service whose executors no node of the cluster could ever run."""
        request = executor_request(
            package.manifest.resources.model_dump(),
            default_cpus=self.settings.executor_cpus,
            extra=self.settings.executor_resources,
        )
        try:
            NodeView(self.settings.cluster_node_types, ttl_s=0).check(
                request, f"service {package.name!r}"
            )
        except Unplaceable as exc:
            raise PlatformError(str(exc)) from None

    def scale(
        self, service: str, version: str | None = None, **override: int | None
    ) -> VersionRecord:
        """Override a version's scaling (``min_executors``, ``max_executors``,
        ``target_backlog``; None drops a field's override) over its manifest's; the routers
        apply it within a second. ``version``: id, label or hash prefix (default: the
        latest)."""
        store = self._require()[0]
        target = store.resolve_version(service, version) if version else self._latest(service)
        try:
            clean = check_override(override)
        except ValueError as exc:
            raise PlatformError(str(exc)) from None
        current = {**(target.manifest.get(SCALING_KEY) or {}), **clean}
        current = {k: v for k, v in current.items() if v is not None}
        low, high = current.get("min_executors"), current.get("max_executors")
        high = high if high is not None else target.manifest.get("max_executors")
        if low is not None and high is not None and low > high:
            raise PlatformError(f"min_executors ({low}) is more than max_executors ({high})")
        record = store.set_version_manifest_key(target.id, SCALING_KEY, current or None)
        self.refresh()
        return record

    def status(self) -> dict[str, Any]:
        """What runs where: the Ray nodes, the routers (and their nodes), and each version's
        executors with its scaling policy, backlog and last decision."""
        per_router = ray.get([router.stats.remote() for router in self._routers()])
        nodes = [
            {
                "node_id": node["NodeID"],
                "address": node.get("NodeManagerAddress"),
                "alive": bool(node.get("Alive")),
                "resources": describe_resources(node.get("Resources") or {}),
            }
            for node in ray.nodes()
        ]
        return {
            "cluster_mode": bool(self.settings.cluster_mode),
            "nodes": nodes,
            "routers": [
                {
                    "router": one["router"],
                    "node_id": one.get("node"),
                    "restarted": one.get("restarted", False),
                    "active_runs": one["active_runs"],
                    "queued": one["queued"],
                }
                for one in per_router
            ],
            "executors": [
                {"router": one["router"], **pool} for one in per_router for pool in one["executors"]
            ],
        }

    def configure(
        self,
        service: str,
        *,
        config: Mapping[str, Any] | None = None,
        secrets: Mapping[str, Any] | None = None,
    ) -> None:
        """Set live overrides of a service's ``config.json`` / ``secrets.json``.

        They are merged over each version's own files by the next run, without a redeploy.
        ``{}`` clears the overrides.
        """
        store, _, kv = self._require()
        store.get_service(service)
        if config is not None:
            put_json(kv, config_key(service), dict(config))
        if secrets is not None:
            put_json(kv, secrets_key(service), dict(secrets))

    def services(self) -> list[ServiceRecord]:
        return self._require()[0].list_services()

    def find_service(self, name: str, project: str = DEFAULT_PROJECT) -> ServiceRecord:
        """The service ``name`` of ``project``. The other methods take a service's ``id``: its
        name in the default project, ``<project>.<name>`` for one made in another project."""
        return self._require()[0].find_service(project, name)

    def versions(self, service: str) -> list[VersionRecord]:
        return self._require()[0].list_versions(service)

    def activate(self, service: str, active: bool = True) -> ServiceRecord:
        """Switch a service on or off; running routers see it within a second."""
        record = self._require()[0].set_service_active(service, active)
        self.refresh()
        return record

    # -- triggers (late linking) --------------------------------------------------------------

    def link(
        self,
        pattern: str,
        service: str,
        *,
        filters: Mapping[str, str] | None = None,
        weights: Mapping[str, int] | None = None,
        shadow: str | None = None,
        ordered: bool = False,
    ) -> TriggerRecord:
        """Link events whose type matches ``pattern`` to ``service``.

        ``weights`` map version references (id, label or hash prefix) to weights for an A/B
        split; none means the latest version. ``shadow`` names a version that also runs on a
        copy of the traffic. ``ordered`` runs the events of one partition key one at a time,
        in offset order (the default runs them concurrently).
        """
        store = self._require()[0]
        try:
            validate_pattern(pattern)
            resolved = self._resolve_weights(service, weights or {})
        except ValueError as exc:
            raise PlatformError(str(exc)) from exc
        shadow_id = store.resolve_version(service, shadow).id if shadow else None
        trigger = store.add_trigger(
            pattern,
            service,
            filters=dict(filters or {}),
            weights=resolved,
            shadow_version=shadow_id,
            ordered=ordered,
        )
        self.refresh()
        return trigger

    def update_trigger(self, trigger_id: str, **changes: Any) -> TriggerRecord:
        store = self._require()[0]
        trigger = store.get_trigger(trigger_id)
        try:
            if "weights" in changes:
                changes["weights"] = self._resolve_weights(
                    trigger.service, changes["weights"] or {}
                )
            if "pattern" in changes:
                validate_pattern(changes["pattern"])
        except ValueError as exc:
            raise PlatformError(str(exc)) from exc
        record = store.update_trigger(trigger_id, **changes)
        self.refresh()
        return record

    def unlink(self, trigger_id: str) -> None:
        self._require()[0].remove_trigger(trigger_id)
        self.refresh()

    def triggers(self, service: str | None = None) -> list[TriggerRecord]:
        return self._require()[0].list_triggers(service)

    def split(
        self, service: str, weights: Mapping[str, int], pattern: str | None = None
    ) -> list[TriggerRecord]:
        """Set A/B weights on the service's triggers (those with ``pattern``, or all)."""
        changed = [
            self.update_trigger(t.id, weights=dict(weights))
            for t in self.triggers(service)
            if pattern is None or t.pattern == pattern
        ]
        if not changed:
            raise PlatformError(f"service {service!r} has no trigger to split")
        return changed

    def _resolve_weights(self, service: str, weights: Mapping[str, int]) -> dict[str, int]:
        store = self._require()[0]
        clean = validate_weights(weights)
        return {store.resolve_version(service, ref).id: w for ref, w in clean.items()}

    def refresh(self) -> None:
        """Make the router reload triggers now rather than at its next poll."""
        if self.routers:
            ray.get([router.refresh.remote() for router in self.routers])

    # -- events and runs ----------------------------------------------------------------------

    def send(self, type: str, data: Any = None, **attributes: Any) -> dict[str, Any]:
        """Publish a CloudEvent; returns it (its ``id`` follows the runs it causes)."""
        attributes.setdefault("source", "fxray/cli")
        event = ev.new_event(type, data, **attributes)
        self.publish([event])
        return event

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Put events on the events topic. :class:`~fxray.events.cloudevent.InvalidEvent`
        (and none published) if one breaks the event limits (``max_event_bytes``,
        ``max_event_depth``); it names the event by its place in a batch of several."""
        limits = ev.EventLimits.from_settings(self.settings)
        mode = self.settings.event_output_mode
        records = []
        for number, event in enumerate(events, start=1):
            what = f"event {number}" if len(events) > 1 else "the event"
            records.append(ev.to_outgoing(event, mode, limits, what))
        self._bus().produce(self.settings.events_topic, records)

    def run(
        self,
        service: str,
        params: Mapping[str, Any] | None = None,
        *,
        version: str | None = None,
        priority: int | None = None,
    ) -> dict[str, Any]:
        """Start a manual run (a ``fxray.run.manual`` event) with validated parameters."""
        store = self._require()[0]
        record = store.get_service(service)
        if not record.active:
            raise PlatformError(f"service {service!r} is not active")
        if not record.allow_manual_triggering:
            raise PlatformError(f"service {service!r} does not allow manual runs")
        target = store.resolve_version(service, version) if version else self._latest(service)
        declared = self.parameters(target)
        values = dict(params or {})
        if declared is not None:  # a service without parameters.json takes any parameters
            values = validate_params(declared, values)
        attributes: dict[str, Any] = {ev.TARGET: service, ev.VERSION: target.id}
        if priority is not None:
            if not 1 <= priority <= 10:
                raise PlatformError("priority must be between 1 and 10")
            attributes[ev.PRIORITY] = str(priority)
        return self.send(ev.MANUAL_RUN, values, source="fxray/manual", **attributes)

    def runs(self, **filters: Any) -> list[RunRecord]:
        return self._require()[0].list_runs(**filters)

    def get_run(self, run_id: str) -> RunRecord:
        return self._require()[0].get_run(run_id)

    def cancel(self, run_id: str) -> str:
        """Cancel a queued or running run: ``cancelled``, ``cancelling`` or ``not_active``."""
        answers = ray.get([router.cancel.remote(run_id) for router in self._routers()])
        return next((a for a in answers if a != "not_active"), "not_active")

    def set_priority(self, run_id: str, priority: int) -> bool:
        if not 1 <= priority <= 10:
            raise PlatformError("priority must be between 1 and 10")
        routers = self._routers()
        return any(ray.get([router.set_priority.remote(run_id, priority) for router in routers]))

    def stats(self) -> dict[str, Any]:
        """Routers' counters summed, queues, executors, and the consumer group's lag."""
        per_router = ray.get([router.stats.remote() for router in self._routers()])
        counters: Counter[str] = Counter()
        for one in per_router:
            counters.update(one["counters"])
        return {
            "routers": per_router,
            "active_runs": sum(one["active_runs"] for one in per_router),
            "queued": sum(one["queued"] for one in per_router),
            "counters": dict(counters),
            "executors": [e for one in per_router for e in one["executors"]],
            "errors": [e for one in per_router for e in one["errors"]],
            "lag": self._lag(),
        }

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters (bad records, events of runs that failed for good)."""
        return deadletters.read(self._bus(), self.settings.deadletter_topic, limit)

    def republish(self, positions: list[str]) -> list[str]:
        """Send dead letters (``"partition:offset"``) back to the events topic."""
        parsed = [deadletters.parse_position(p) for p in positions]
        return deadletters.republish(
            self._bus(), self.settings.deadletter_topic, self.settings.events_topic, parsed
        )

    def dead_letter_marks(self) -> dict[str, dict[str, Any]]:
        """``{position: mark}`` of the dead letters requeued or discarded so far."""
        if self.kv is None:
            raise PlatformError("the platform is not started: call start() first")
        return deadletters.read_marks(self.kv, self.settings.deadletter_topic)

    def handle_dead_letters(
        self, positions: list[str], action: str, by: str
    ) -> list[deadletters.Outcome]:
        """Requeue or discard dead letters (``"partition:offset"``) and mark them as such;
        ``by`` names who did (an API key id). Letters already marked are refused."""
        if self.kv is None:
            raise PlatformError("the platform is not started: call start() first")
        return deadletters.handle(
            self._bus(),
            self.kv,
            self.settings.deadletter_topic,
            self.settings.events_topic,
            positions,
            action,
            by,
        )

    def _lag(self) -> int | None:
        """Events not yet committed by the routers; None while the bus cannot tell."""
        try:
            return self._bus().lag(self.settings.router_group, self.settings.events_topic)
        except Exception:
            return None

    def wait_for_runs(
        self,
        *,
        correlation_id: str | None = None,
        event_id: str | None = None,
        service: str | None = None,
        count: int = 1,
        timeout: float = 60.0,
    ) -> list[RunRecord]:
        """Wait until at least ``count`` matching runs exist and all are final."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs(
                correlation_id=correlation_id, event_id=event_id, service=service, limit=None
            )
            if len(runs) >= count and all(_is_final(r) for r in runs):
                return runs
            if time.monotonic() > deadline:
                states = {r.id[:8]: r.status for r in runs}
                raise TimeoutError(f"runs not finished after {timeout}s: {states}")
            time.sleep(0.05)

    def wait_idle(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until every published event is routed and every run has finished."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["lag"] == 0 and stats["active_runs"] == 0:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"platform not idle after {timeout}s: {stats}")
            time.sleep(0.05)

    def trace(self, correlation_id: str) -> list[dict[str, Any]]:
        """Events and runs of one flow, in time order."""
        store = self._require()[0]
        items: list[dict[str, Any]] = [
            {"kind": "event", "time": e.get("time"), "event": e}
            for e in store.list_events(correlation_id=correlation_id)
        ]
        for run in store.list_runs(correlation_id=correlation_id, limit=None):
            items.append({"kind": "run", "time": run.created_at, "run": run})
        return sorted(items, key=_trace_order)

    # -- assets -------------------------------------------------------------------------------

    @property
    def assets(self) -> AssetStore:
        """The asset store the settings choose (made on first use)."""
        if self._assets is None:
            self._assets = _make_asset_store(self.settings)
        return self._assets

    def upload_asset(
        self, project: str, path: str, data: Data, content_type: str | None = None
    ) -> AssetInfo:
        """Store a file as a project's asset and publish ``fxray.asset.uploaded`` about it.

        The answer's ``event_id`` is that event's id (it follows the runs the upload causes).
        """
        from fxray.packages.assets import ASSET_SOURCE

        info = self.assets.put(project, path, data, content_type)
        event = ev.new_event(
            ev.ASSET_UPLOADED,
            info.event_data(),
            source=ASSET_SOURCE,
            subject=info.path,
            partitionkey=f"{project}/{info.path}",
        )
        self.publish([event])
        return replace(info, event_id=event["id"])

    # -- helpers ------------------------------------------------------------------------------

    def _latest(self, service: str) -> VersionRecord:
        versions = self._require()[0].list_versions(service)
        if not versions:
            raise PlatformError(f"service {service!r} has no version")
        return versions[-1]

    def parameters(self, version: VersionRecord) -> list[Any] | None:
        """The parameter fields a version declares in ``parameters.json`` (None: it has none)."""
        if version.id not in self._parameters:
            self._parameters[version.id] = _declared_parameters(self._package(version))
        return self._parameters[version.id]

    def _package(self, version: VersionRecord) -> ServicePackage:
        packages = self._require()[1]
        limits = ArchiveLimits.from_settings(self.settings)
        return load_package_bytes(packages.get(version.content_hash), version.id, limits=limits)

    def _require(self) -> tuple[StateStore, PackageStore, KVStore]:
        if self.store is None or self.packages is None or self.kv is None:
            raise PlatformError("the platform is not started: call start() first")
        return self.store, self.packages, self.kv

    def _bus(self) -> EventBus:
        if self.bus is None:
            raise PlatformError("the platform is not started: call start() first")
        return self.bus

    def _routers(self) -> list[Any]:
        if not self.routers:
            raise PlatformError("the platform is not started: call start() first")
        return self.routers


def _declared_parameters(package: ServicePackage) -> list[Any] | None:
    return package.parameters if "parameters.json" in package.files else None


def _is_final(run: RunRecord) -> bool:
    return run.status in ("succeeded", "failed", "timed_out", "cancelled")


def _trace_order(item: dict[str, Any]) -> tuple[float, int]:
    if item["kind"] == "run":
        return (item["run"].created_at, 1)
    stamp = item["time"]
    when = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0
    return (when, 0)


def _make_kv(settings: Settings) -> KVStore:
    from fxray.kv.local import LocalKV

    if settings.kv_store == "consul":
        from fxray.kv.consul import ConsulKV

        return ConsulKV.from_settings(settings)
    return LocalKV(settings.kv_path)


def _make_package_store(settings: Settings) -> PackageStore:
    if settings.package_store == "s3":
        from fxray.packages.s3 import S3PackageStore

        return S3PackageStore(**_s3_options(settings))
    from fxray.packages.local import LocalPackageStore

    return LocalPackageStore(settings.packages_dir)


def _s3_options(settings: Settings) -> dict[str, Any]:
    return {
        "endpoint": settings.s3_endpoint,
        "access_key": settings.s3_access_key,
        "secret_key": settings.s3_secret_key,
        "bucket": settings.s3_bucket,
        "secure": settings.s3_secure,
        "region": settings.s3_region,
    }


def _make_asset_store(settings: Settings) -> AssetStore:
    if (settings.asset_store or settings.package_store) == "s3":
        from fxray.packages.assets import S3AssetStore

        return S3AssetStore(**_s3_options(settings))
    from fxray.packages.assets import LocalAssetStore

    return LocalAssetStore(settings.assets_dir)


def _make_bus(settings: Settings) -> EventBus:
    if settings.event_bus == "kafka":
        from fxray.bus.kafka import KafkaBus

        return KafkaBus(
            settings.kafka_bootstrap,
            default_partitions=settings.bus_partitions,
            producer_config=settings.kafka_producer_config,
            consumer_config=settings.kafka_consumer_config,
        )
    from fxray.bus.embedded import EmbeddedBus

    return EmbeddedBus.start(
        name=f"fxray-bus.{settings.instance}", default_partitions=settings.bus_partitions
    )


__all__ = ["Deployment", "PackageError", "Platform", "PlatformError", "new_instance_name"]


def new_instance_name() -> str:
    return f"i{uuid.uuid4().hex[:8]}"
