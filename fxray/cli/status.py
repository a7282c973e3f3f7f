"""``fxray status`` (what runs where, and why that many executors) and ``fxray scale`` (a
version's scaling override), over the management API."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from fxray.cli.output import out
from fxray.cli.remote import PANEL, AsJson, Key, ServiceProject, Url, _api, _print_json, _table


def status(url: Url = None, key: Key = None, as_json: AsJson = False) -> None:
    """What runs where: Ray nodes, routers, and each version's executors with their nodes,
    scaling bounds, backlog and last scaling decision (a platform-wide admin key)."""
    with _api(url, key) as api:
        answer = api.status()
    if as_json:
        _print_json(answer)
        return
    mode = "cluster mode" if answer.get("cluster_mode") else "single node"
    out.print(f"[bold]{mode}[/], {len([n for n in answer['nodes'] if n['alive']])} nodes alive")
    nodes = _table("node", "address", "alive", "offers")
    for node in answer["nodes"]:
        nodes.add_row(
            node["node_id"][:12], str(node.get("address") or "-"), _yes(node["alive"]),
            escape(node["resources"]),
        )  # fmt: skip
    out.print(nodes)
    routers = _table("router", "node", "restarted", "active runs", "queued")
    for router in answer["routers"]:
        routers.add_row(
            router["router"], (router.get("node_id") or "-")[:12], _yes(router["restarted"]),
            str(router["active_runs"]), str(router["queued"]),
        )  # fmt: skip
    out.print(routers)
    if not answer["executors"]:
        out.print("no executors")
        return
    pools = _table("version", "router", "executors", "busy", "min..max", "desired", "backlog",
                   "on nodes", "asks for", "last decision")  # fmt: skip
    for pool in answer["executors"]:
        nodes_text = ", ".join(f"{node}: {count}" for node, count in pool["nodes"].items())
        pools.add_row(
            escape(pool["version_id"]), pool["router"], str(pool["actors"]), str(pool["busy"]),
            f"{pool['min']}..{pool['max']}", str(pool["desired"]), str(pool["backlog"]),
            nodes_text or "-", escape(pool["resources"]), escape(pool["decision"] or "-"),
        )  # fmt: skip
    out.print(pools)


def scale(
    service: Annotated[str, typer.Argument(help="The service's name.")],
    version: Annotated[str, typer.Argument(help="Version id, label or hash prefix.")],
    min_executors: Annotated[
        int | None, typer.Option("--min", min=0, help="Executors kept warm (per router).")
    ] = None,
    max_executors: Annotated[
        int | None, typer.Option("--max", min=1, help="Most executors (per router).")
    ] = None,
    target_backlog: Annotated[
        int | None, typer.Option("--target-backlog", min=1, help="Runs per executor.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Drop the whole override.")] = False,
    project: ServiceProject = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Override a version's scaling over its manifest's (the routers apply it within a
    second); options left out keep their override."""
    override: dict[str, Any] = {
        name: value
        for name, value in (
            ("min_executors", min_executors),
            ("max_executors", max_executors),
            ("target_backlog", target_backlog),
        )
        if value is not None
    }
    if clear:
        override = dict.fromkeys(("min_executors", "max_executors", "target_backlog"))
    with _api(url, key) as api:
        answer = api.scale(service, version, project=project, **override)
    if as_json:
        _print_json(answer)
        return
    shown = ", ".join(f"{k}={v}" for k, v in answer["override"].items()) or "none"
    out.print(f"{escape(answer['version'])}: scaling override {escape(shown)}")


def _yes(value: Any) -> str:
    return "yes" if value else "no"


def register(app: typer.Typer) -> None:
    """Add these commands to the ``fxray`` command line."""
    app.command("status", rich_help_panel=PANEL)(status)
    app.command("scale", rich_help_panel=PANEL)(scale)
