"""``fxray demo``: the example shop flow on a local platform, end to end, in under a minute.

It starts an embedded platform in a fresh home, deploys ``examples/`` (``fraud-score`` twice, as
versions ``v1`` and ``v2`` split 70/30), sends orders plus one manual run, waits for every run,
and shows the runs, the A/B split observed, one flow's causal chain and the executors' cold
starts. Flow: ``shop.order.placed`` -> order-intake -> ``shop.order.accepted`` -> fraud-score
-> ``shop.order.scored`` -> invoice -> ``shop.invoice.ready``.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

ORDERS = 20
SPLIT = {"v1": 70, "v2": 30}
PLAN = [  # (folder of examples/, version label)
    ("order-intake", None),
    ("fraud-score", "v1"),
    ("fraud-score-v2", "v2"),
    ("invoice", None),
]
FLOW = [
    ("event", "shop.order.placed"),
    ("run", "order-intake"),
    ("event", "shop.order.accepted"),
    ("run", "fraud-score"),
    ("event", "shop.order.scored"),
    ("run", "invoice"),
    ("event", "shop.invoice.ready"),
]
EVENT_FACTS = {
    "shop.order.placed": ("order_id", "amount"),
    "shop.order.accepted": ("order_id", "express"),
    "shop.order.scored": ("score", "model"),
    "shop.invoice.ready": ("invoice", "total"),
}
RUNS_PER_FLOW = sum(1 for kind, _ in FLOW if kind == "run")
WAIT_TIMEOUT_S = 120.0
FINAL = ("succeeded", "failed", "timed_out", "cancelled")


class DemoFailed(Exception):
    """The demo could not finish; the message says why."""


def examples_dir() -> Path:
    """The ``examples/`` folder: ``$FXRAY_EXAMPLES`` or the one next to the fxray package."""
    explicit = os.environ.get("FXRAY_EXAMPLES")
    return Path(explicit) if explicit else Path(__file__).resolve().parent.parent / "examples"


@dataclass
class _Progress:
    """Stage headers with the time elapsed since the demo began."""

    console: Console
    started: float = field(default_factory=time.monotonic)
    stage: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def header(self, title: str) -> None:
        self.stage += 1
        self.console.print()
        self.console.rule(
            f"[bold]{self.stage}. {escape(title)}[/]  [dim]+{self.elapsed():.1f}s[/]", align="left"
        )


def main(home: str | None = None, keep: bool = False) -> int:
    """Run the demo; returns 0 if every run succeeded and the traced chain is complete."""
    console = Console(highlight=False, soft_wrap=True)
    progress = _Progress(console)
    console.print("[bold]fxray demo[/]: an online shop's order flow on a local platform")
    examples = examples_dir()
    if not (examples / "order-intake" / "manifest.json").exists():
        console.print(f"[bold red]demo failed:[/] no examples folder at {escape(str(examples))}")
        return 1
    if home is not None:
        root = Path(home).expanduser().resolve()
        if root.exists() and any(root.iterdir()):
            console.print(
                f"[bold red]demo failed:[/] home {escape(str(root))} is not empty; "
                "give a new folder"
            )
            return 2
    else:
        root = Path(tempfile.mkdtemp(prefix="fxray-demo-"))
    try:
        return _run(console, progress, examples, root)
    except DemoFailed as exc:
        console.print(f"\n[bold red]demo failed[/] after {progress.elapsed():.1f}s: {exc}")
        return 1
    except Exception as exc:  # a platform error: report it as the reason, without a traceback
        reason = f"{type(exc).__name__}: {exc}"
        console.print(f"\n[bold red]demo failed[/] after {progress.elapsed():.1f}s: {reason}")
        return 1
    finally:
        if keep:
            console.print(f"[dim]home kept at {escape(str(root))}[/]")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _run(console: Console, progress: _Progress, examples: Path, root: Path) -> int:
    from fxray.platform import Platform

    instance = f"demo-{uuid.uuid4().hex[:8]}"
    progress.header("start the platform")
    # one executor per version: the demo's load is light, and on a small machine every extra
    # worker process adds a second or two of start-up
    platform = Platform(home=root, instance=instance, database_url="", executors_max_per_version=1)
    import ray

    ray_running = ray.is_initialized()
    began = time.monotonic()
    with console.status("starting Ray, the event bus and the router..."):
        platform.start()
    console.print(
        f"platform [bold]{instance}[/] up in {time.monotonic() - began:.1f}s"
        f" ({'on the Ray already running' if ray_running else 'started a local Ray'}),"
        f" home {escape(str(root))}"
    )
    try:
        problems, summary = _flow(console, progress, platform, examples)
    finally:
        with console.status("stopping the platform..."):
            platform.stop()
    seconds = progress.elapsed()
    console.print()
    if problems:
        console.print(
            f"[bold red]demo failed[/] after {seconds:.1f}s: " + escape("; ".join(problems))
        )
        return 1
    console.print(f"[bold green]demo passed[/] in {seconds:.1f}s: {escape(summary)}")
    return 0


def deploy_shop(platform: Any, examples: Path | None = None) -> list[Any]:
    """Deploy the shop services of ``examples/`` (fraud-score as v1 and v2, split 70/30);
    returns the deployments. Deploying them again changes nothing."""
    folder = examples or examples_dir()
    done = [
        platform.deploy(folder / name, label=label, deployed_by="fxray demo")
        for name, label in PLAN
    ]
    platform.split("fraud-score", SPLIT)
    return done


def send_orders(platform: Any, orders: int = ORDERS, seed: int = 7) -> list[str]:
    """Send ``orders`` shop orders and one manual run of order-intake; their event ids."""
    rng = random.Random(seed)
    roots: list[str] = []
    for number in range(1, orders + 1):
        items = [
            {"sku": rng.choice(["MUG-01", "TEA-07", "POT-03", "CUP-12"]), "qty": rng.randint(1, 3)}
            for _ in range(rng.randint(1, 3))
        ]
        data = {
            "order_id": f"A-{1000 + number}",
            "amount": round(rng.uniform(15, 900), 2),
            "items": items,
            "express": rng.random() < 0.25,
        }
        roots.append(platform.send("shop.order.placed", data, source="shop/web")["id"])
    manual = platform.run(
        "order-intake", {"order_id": "M-1", "amount": 640.0, "express": True}, priority=1
    )
    roots.append(manual["id"])
    return roots


def _flow(
    console: Console, progress: _Progress, platform: Any, examples: Path
) -> tuple[list[str], str]:
    """Deploy, send, wait and report; returns ``(problems, summary of a success)``."""
    progress.header("deploy the services")
    for folder, label in PLAN:
        deployment = platform.deploy(examples / folder, label=label, deployed_by="fxray demo")
        version = deployment.version
        linked = ", ".join(t.pattern for t in deployment.triggers) or "(already linked)"
        reqs = ", ".join(version.requirements)
        console.print(
            f"deployed [bold]{version.service}[/] {label or version.content_hash[:8]}"
            f"  triggers: {escape(linked)}" + (f"  requirements: {escape(reqs)}" if reqs else "")
        )
    platform.split("fraud-score", SPLIT)
    console.print(
        "fraud-score split " + ", ".join(f"{ref} {weight}%" for ref, weight in SPLIT.items())
    )

    progress.header("send orders")
    roots = send_orders(platform, ORDERS)
    console.print(f"sent {ORDERS} shop.order.placed events and 1 manual run of order-intake")

    progress.header("wait for the runs")
    expected = len(roots) * RUNS_PER_FLOW
    _wait(console, platform, expected)
    platform.wait_idle(timeout=WAIT_TIMEOUT_S)
    runs = []
    for correlation_id in roots:
        runs.extend(
            platform.wait_for_runs(
                correlation_id=correlation_id, count=RUNS_PER_FLOW, timeout=WAIT_TIMEOUT_S
            )
        )
    console.print(f"{len(runs)} runs finished")

    versions = {
        v.id: v
        for name in ("order-intake", "fraud-score", "invoice")
        for v in platform.versions(name)
    }
    problems: list[str] = []

    progress.header("runs")
    console.print(_runs_table(runs, versions))
    failed = [r for r in runs if r.status != "succeeded"]
    for run in failed[:5]:
        console.print(f"[red]{run.service} {run.status}[/]: {escape(str(run.error))}")
    if failed:
        problems.append(f"{len(failed)} of {len(runs)} runs did not succeed")
    if len(runs) != expected:
        problems.append(f"{len(runs)} runs instead of {expected}")

    progress.header("A/B split of fraud-score")
    observed = Counter(
        _label(versions.get(r.version_id)) for r in runs if r.service == "fraud-score"
    )
    total = sum(observed.values()) or 1
    for label, weight in SPLIT.items():
        count = observed.get(label, 0)
        bar = "#" * count
        console.print(
            f"{label}  {count:>3} runs  {100 * count / total:5.1f}%  (weight {weight}%)  {bar}"
        )

    progress.header("one flow, event by event")
    chain, reason = _chain(platform.trace(roots[0]))
    console.print(_chain_tree(chain, versions), soft_wrap=False)
    if reason:
        problems.append(f"the causal chain of the first order is incomplete: {reason}")
    invoice = next((item for item in chain if item[0] == "run" and item[1] == "invoice"), None)
    if invoice is not None:
        run = invoice[2]
        console.print("invoice run output (secret values are redacted by the platform):")
        for _when, level, _step, message in run.logs:
            console.print(f"  [dim]{level:<7}[/] {escape(str(message))}")
    leaked = _leaked_secret(examples, runs)
    if leaked:
        problems.append(f"a secret value appears in the logs of {leaked}")

    progress.header("executors")
    stats = platform.stats()
    console.print(_executors_table(stats.get("executors", []), versions))
    from fxray.kv import ServiceState

    orders = ServiceState(platform.kv, "order-intake").get("orders")
    console.print(f"order-intake state: orders = {orders}")

    split = "/".join(str(observed.get(label, 0)) for label in SPLIT)
    return problems, (
        f"{len(runs)} runs succeeded, fraud-score v1/v2 = {split}, causal chain complete, "
        "secrets kept out of logs"
    )


def _wait(console: Console, platform: Any, expected: int) -> None:
    """Wait until ``expected`` runs are final, reporting executors as they come up."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    announced: set[str] = set()
    labels: dict[str, tuple[str, str]] = {}
    with console.status("waiting for the first runs...") as status:
        while True:
            runs = platform.runs(limit=None)
            done = sum(1 for r in runs if r.status in FINAL)
            stats = platform.stats()
            notes: list[str] = []
            for pool in stats.get("executors", []):
                version_id = pool["version_id"]
                if version_id not in labels:
                    labels[version_id] = _describe_version(platform, version_id)
                name, requirements = labels[version_id]
                if pool.get("cold_start_s") is not None and version_id not in announced:
                    announced.add(version_id)
                    how = ""
                    if requirements:
                        built = "installed" if pool.get("env_cached") is False else "cached"
                        how = f" ({requirements} {built})"
                    console.print(
                        f"executor for {name} ready after {pool['cold_start_s']:.1f}s{how}"
                    )
                elif pool.get("cold_start_s") is None:
                    extra = f" (installing {requirements})" if requirements else ""
                    notes.append(f"{name}{extra}")
            status.update(
                f"runs done {done}/{expected}"
                + (" | starting executors: " + ", ".join(notes) if notes else "")
            )
            if done >= expected and stats["active_runs"] == 0:
                return
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"only {done} of {expected} runs finished after {WAIT_TIMEOUT_S:.0f}s "
                    f"(router errors: {stats.get('errors') or 'none'})"
                )
            time.sleep(0.25)


def _describe_version(platform: Any, version_id: str) -> tuple[str, str]:
    """``("service label", "requirements")`` of a version, for progress lines."""
    try:
        version = platform.store.get_version(version_id)
    except Exception:
        return version_id[:8], ""
    return f"{version.service} {_label(version)}", ", ".join(version.requirements)


def _label(version: Any) -> str:
    if version is None:
        return "?"
    return version.label or version.content_hash[:8]


def _runs_table(runs: list[Any], versions: dict[str, Any]) -> Table:
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for run in runs:
        groups[(run.service, _label(versions.get(run.version_id)))].append(run)
    table = Table(title=f"{len(runs)} runs, by service and version", title_justify="left")
    for column in ("service", "version", "runs", "status"):
        table.add_column(column)
    table.add_column("p50 ms", justify="right")
    table.add_column("max ms", justify="right")
    order = {name: i for i, name in enumerate(("order-intake", "fraud-score", "invoice"))}
    for (service, label), group in sorted(groups.items(), key=lambda g: (order.get(g[0][0]), g)):
        statuses = Counter(r.status for r in group)
        status = ", ".join(
            f"[{'green' if s == 'succeeded' else 'red'}]{n} {s}[/]" for s, n in statuses.items()
        )
        durations = [r.duration_ms for r in group if r.duration_ms is not None]
        p50 = f"{statistics.median(durations):.1f}" if durations else "-"
        top = f"{max(durations):.1f}" if durations else "-"
        table.add_row(service, label, str(len(group)), status, p50, top)
    return table


def _chain(trace: list[dict[str, Any]]) -> tuple[list[tuple[str, str, Any]], str | None]:
    """Follow causation from the root event: event -> run -> event ...; why it breaks, if so."""
    events = [item["event"] for item in trace if item["kind"] == "event"]
    runs = [item["run"] for item in trace if item["kind"] == "run"]
    root = next((e for e in events if not e.get("fxparentid")), None)
    if root is None:
        return [], "no root event recorded"
    chain: list[tuple[str, str, Any]] = [("event", root["type"], root)]
    current = root
    while True:
        run = next((r for r in runs if r.event_id == current["id"]), None)
        if run is None:
            break
        chain.append(("run", run.service, run))
        child = next((e for e in events if e.get("fxrunid") == run.id), None)
        if child is None:
            break
        chain.append(("event", child["type"], child))
        current = child
    got = [(kind, name) for kind, name, _ in chain]
    if got != FLOW:
        want = " -> ".join(name for _, name in FLOW)
        return chain, f"got {' -> '.join(name for _, name in got)}, want {want}"
    return chain, None


def _chain_tree(chain: list[tuple[str, str, Any]], versions: dict[str, Any]) -> Tree:
    tree: Tree | None = None
    node: Tree | None = None
    for kind, name, item in chain:
        if kind == "event":
            data = item.get("data") or {}
            keys = EVENT_FACTS.get(name, ())
            facts = ", ".join(f"{k}={data[k]}" for k in keys if k in data)
            label = f"[bold cyan]event[/] {escape(name)}  [dim]{item['id'][:8]}[/]  {escape(facts)}"
        else:
            ms = f"{item.duration_ms:.1f} ms" if item.duration_ms is not None else "-"
            style = "green" if item.status == "succeeded" else "red"
            label = (
                f"[bold magenta]run[/] {escape(name)} {_label(versions.get(item.version_id))}"
                f"  [dim]{item.id[:8]}[/]  [{style}]{item.status}[/] {ms}"
            )
        if node is None:
            tree = node = Tree(label)
        else:
            node = node.add(label)
    return tree or Tree("[red](nothing recorded)[/]")


def _executors_table(pools: list[dict[str, Any]], versions: dict[str, Any]) -> Table:
    table = Table(title="executors (one Ray actor pool per version)", title_justify="left")
    for column in ("service", "version", "actors", "cold start", "dependencies"):
        table.add_column(column, justify="right" if column in ("actors", "cold start") else "left")
    for pool in sorted(pools, key=lambda p: p.get("cold_start_s") or 0.0):
        version = versions.get(pool["version_id"])
        cold = pool.get("cold_start_s")
        env = "-"
        if version is not None and version.requirements:
            how = {True: "cached", False: "installed"}.get(pool.get("env_cached"), "?")
            env = f"{', '.join(version.requirements)} ({how})"
        table.add_row(
            version.service if version else "?",
            _label(version),
            str(pool.get("actors", 0)),
            f"{cold:.2f}s" if cold is not None else "-",
            env,
        )
    return table


def _leaked_secret(examples: Path, runs: list[Any]) -> str | None:
    """The first run whose logs or error contain a secret value of a demo service."""
    from fxray.services import load_package

    secrets = {
        value
        for folder in sorted(examples.iterdir())
        if (folder / "secrets.json").is_file()
        for value in load_package(folder).secrets.values()
        if isinstance(value, str) and len(value) >= 4
    }
    for run in runs:
        text = " ".join(str(line[-1]) for line in run.logs) + " " + str(run.error or "")
        if any(secret in text for secret in secrets):
            return f"{run.service} run {run.id[:8]}"
    return None


__all__ = ["DemoFailed", "deploy_shop", "examples_dir", "main", "send_orders"]
