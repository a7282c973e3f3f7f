"""``fxray cluster``: fxray on a Kubernetes cluster with the KubeRay operator (render, apply,
status, scale, delete the manifests of ``deploy/kuberay``; see docs/deploy.md)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from fxray.cli.output import EXIT_FAILED, EXIT_USAGE, cli_errors, fail, out

if TYPE_CHECKING:
    from fxray.cluster.kube import Kube

cluster_app = typer.Typer(
    help="fxray on Kubernetes with KubeRay: render, apply, status, scale, delete "
    "(deploy/kuberay; docs/deploy.md).",
    no_args_is_help=True,
)

Overlay = Annotated[
    str,
    typer.Option(
        "--overlay",
        "-k",
        envvar="FXRAY_CLUSTER_OVERLAY",
        help="An overlay of deploy/kuberay (dev, production, base) or a kustomization folder.",
    ),
]
Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Put everything in this namespace instead."),
]
Renderer = Annotated[
    str,
    typer.Option(help="auto (kubectl kustomize if installed), kubectl or python."),
]
Kubeconfig = Annotated[
    str | None,
    typer.Option(help="kubeconfig file \\[default: KUBECONFIG, ~/.kube/config, in-cluster]."),
]
Context = Annotated[str | None, typer.Option(help="kubeconfig context \\[default: current].")]
Wait = Annotated[bool, typer.Option(help="Follow the pods until they are ready.")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the pods.", min=1)]


@contextmanager
def _errors() -> Iterator[None]:
    from fxray.cluster import ClusterError
    from fxray.cluster.operations import UsageError

    with cli_errors():
        try:
            yield
        except UsageError as exc:
            fail(str(exc), EXIT_USAGE)
        except ClusterError as exc:
            fail(str(exc), EXIT_FAILED)


def _render(
    overlay: str, renderer: str, namespace: str | None, image: str | None = None
) -> list[dict[str, Any]]:
    from fxray.cluster.render import render

    if renderer not in ("auto", "kubectl", "python"):
        fail(f"--renderer must be auto, kubectl or python, not {renderer!r}", EXIT_USAGE)
    return render(overlay, renderer=renderer, image=image, namespace=namespace)  # type: ignore[arg-type]


def _connect(kubeconfig: str | None, context: str | None) -> Kube:
    from fxray.cluster.kube import Kube

    return Kube.connect(kubeconfig, context)


def _say(line: str) -> None:
    out.print(escape(line))


@cluster_app.command("render")
def render_command(
    overlay: Overlay,
    namespace: Namespace = None,
    image: Annotated[
        str | None, typer.Option(help="Run every container on this image (e.g. for an upgrade).")
    ] = None,
    renderer: Renderer = "auto",
) -> None:
    """Print the manifests of an overlay as YAML (what apply would send)."""
    from fxray.cluster.render import to_yaml

    with _errors():
        objects = _render(overlay, renderer, namespace, image)
        sys.stdout.write(to_yaml(objects))


@cluster_app.command("apply")
def apply_command(
    overlay: Overlay,
    namespace: Namespace = None,
    image: Annotated[
        str | None, typer.Option(help="Run every container on this image (an upgrade).")
    ] = None,
    renderer: Renderer = "auto",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    wait: Wait = True,
    timeout: Timeout = 900.0,
) -> None:
    """Create or update the platform on the cluster; a second apply changes nothing."""
    from fxray.cluster.apply import apply

    with _errors():
        objects = _render(overlay, renderer, namespace, image)
        kube = _connect(kubeconfig, context)
        try:
            result = apply(kube, objects, say=_say, wait=wait, timeout_s=timeout)
        finally:
            kube.close()
        if not result.changed:
            out.print("nothing to change")


@cluster_app.command("status")
def status_command(
    overlay: Overlay,
    namespace: Namespace = None,
    renderer: Renderer = "auto",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The RayCluster's state and worker groups, the platform, and every pod."""
    from fxray.cluster.operations import status

    with _errors():
        objects = _render(overlay, renderer, namespace)
        kube = _connect(kubeconfig, context)
        try:
            state = status(kube, objects)
        finally:
            kube.close()
        if as_json:
            sys.stdout.write(json.dumps(state.to_dict(), indent=2) + "\n")
            return
        reason = f" ({state.reason})" if state.reason else ""
        out.print(
            f"RayCluster [bold]{escape(state.name)}[/] in namespace {escape(state.namespace)}: "
            f"{escape(state.state)}{escape(reason)}"
        )
        groups = Table(box=None, pad_edge=False)
        for column in ("group", "min", "max", "replicas", "ready pods"):
            groups.add_column(column)
        for group in state.groups:
            groups.add_row(
                group.name,
                _number(group.min_replicas),
                _number(group.max_replicas),
                _number(group.replicas),
                f"{group.ready_pods}/{group.pods}",
            )
        out.print(groups)
        for name, available, wanted in state.deployments:
            out.print(f"deployment {escape(name)}: {available}/{wanted} available")
        pods = Table(box=None, pad_edge=False)
        for column in ("pod", "role", "state", "restarts", "node", "age"):
            pods.add_column(column)
        for pod in state.pods:
            pods.add_row(pod.name, pod.role, pod.state, str(pod.restarts), pod.node, pod.age)
        out.print(pods if state.pods else "no pods")


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


@cluster_app.command("scale")
def scale_command(
    group: Annotated[str, typer.Argument(help="A worker group, e.g. executors or heavy.")],
    overlay: Overlay,
    minimum: Annotated[int | None, typer.Option("--min", help="Fewest workers.")] = None,
    maximum: Annotated[int | None, typer.Option("--max", help="Most workers.")] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Workers now (the autoscaler may change it later).")
    ] = None,
    namespace: Namespace = None,
    renderer: Renderer = "auto",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    wait: Wait = False,
    timeout: Timeout = 600.0,
) -> None:
    """Change one worker group's min, max and/or replicas (a JSON patch on that group)."""
    from fxray.cluster import progress
    from fxray.cluster.operations import group_pending, scale, target

    with _errors():
        objects = _render(overlay, renderer, namespace)
        name, ns = target(objects)
        kube = _connect(kubeconfig, context)
        try:
            result = scale(
                kube, name, ns, group, minimum=minimum, maximum=maximum, replicas=replicas
            )
            low, high, now = result.after
            out.print(f"group {escape(group)}: min {low}, max {high}, replicas {now}")
            declared = _declared(objects, group)
            if declared is not None and declared != (low, high):
                out.print(
                    f"note: the overlay says min {declared[0]}, max {declared[1]}; the next "
                    "fxray cluster apply sets them back (change the overlay to keep these)"
                )
            if wait:
                pending = group_pending(kube, name, ns, group, low)
                progress.wait(kube, ns, pending, timeout, _say)
                out.print("ready")
        finally:
            kube.close()


def _declared(objects: list[dict[str, Any]], group: str) -> tuple[int, int] | None:
    for obj in objects:
        if obj.get("kind") == "RayCluster":
            for spec in obj["spec"].get("workerGroupSpecs") or []:
                if spec.get("groupName") == group:
                    return spec.get("minReplicas", 0), spec.get("maxReplicas", 0)
    return None


@cluster_app.command("delete")
def delete_command(
    overlay: Overlay,
    namespace: Namespace = None,
    renderer: Renderer = "auto",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    with_namespace: Annotated[
        bool, typer.Option(help="Delete the namespace too (with its Secrets).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
    wait: Wait = True,
    timeout: Timeout = 300.0,
) -> None:
    """Delete the platform and its RayCluster from the cluster."""
    from fxray.cluster.operations import delete, target

    with _errors():
        objects = _render(overlay, renderer, namespace)
        name, ns = target(objects)
        if not yes and not typer.confirm(
            f"Delete fxray (RayCluster {name} and the platform) from namespace {ns}?"
        ):
            raise typer.Abort()
        kube = _connect(kubeconfig, context)
        try:
            delete(
                kube, objects, say=_say, with_namespace=with_namespace, wait=wait, timeout_s=timeout
            )
        finally:
            kube.close()


def register(app: typer.Typer) -> None:
    """Add ``fxray cluster`` to the command line."""
    app.add_typer(cluster_app, name="cluster")
