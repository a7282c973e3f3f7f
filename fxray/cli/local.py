"""Commands that work on this machine: check a package, run a service without Ray, the demo,
the platform with its management API (``fxray up``), versions."""

from __future__ import annotations

import json
import platform as py_platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from fxray.cli.output import (
    EXIT_FAILED,
    LEVEL_STYLES,
    STATUS_STYLES,
    cli_errors,
    err,
    out,
    read_json_file,
    read_object,
)

commands = typer.Typer()


@commands.command()
def validate(
    package: Annotated[str, typer.Argument(help="A service package folder or .zip file.")],
    resolve: Annotated[
        bool,
        typer.Option(
            help="Resolve requirements.txt with pip (needs the package index) to find every "
            "package it installs that clashes with the platform's; else only its own lines."
        ),
    ] = True,
) -> None:
    """Check a service package and summarise it; list every problem if it is invalid."""
    from fxray.services import load_package

    with cli_errors():
        pkg = load_package(package)
        manifest = pkg.manifest
        isolation = _isolation(pkg.requirements, manifest.isolation, resolve)
        rows = [
            ("version", f"{pkg.short_hash}  (content hash)"),
            ("steps", " -> ".join(pkg.steps)),
            ("triggers", ", ".join(manifest.trigger_events) or "none (link them later)"),
            ("schedule", manifest.schedule or "none"),
            ("requirements", ", ".join(pkg.requirements) or "none"),
            ("isolation", _isolation_row(isolation)),
            ("parameters", ", ".join(p.name for p in pkg.parameters) or "none"),
            ("priority", str(manifest.priority)),
            ("timeout", f"{manifest.timeout_s:g}s" if manifest.timeout_s else "platform default"),
        ]
        if pkg.secrets:
            rows.append(("secrets", ", ".join(sorted(pkg.secrets)) + "  (values not shown)"))
        out.print(f"[green]valid[/] service package [bold]{escape(pkg.name)}[/]")
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            out.print(f"  {key:<{width}}  {escape(value)}")
        _report_clashes(isolation)


def _isolation(requirements: list[str], requested: str, resolve: bool) -> Any:
    """Where the package would run (see :mod:`fxray.services.clashes`), resolving its
    requirements with pip into the local cache if asked to."""
    from fxray.runtime.local import default_envs_dir
    from fxray.services.clashes import Resolution, decide_isolation
    from fxray.services.clashes import resolve as resolve_requirements

    def resolver(lines: list[str]) -> Resolution:
        return resolve_requirements(lines, cache_dir=default_envs_dir())

    return decide_isolation(requirements, requested, resolver=resolver if resolve else None)


def _isolation_row(isolation: Any) -> str:
    where = "isolated worker process" if isolation.isolated else "in the executor's process"
    if isolation.requested != "auto":
        return f"{where} (the manifest asks for it)"
    if isolation.clashes:
        count = len(isolation.clashes)
        return f"{where} ({count} {'clash' if count == 1 else 'clashes'} with the platform, below)"
    return where


def _report_clashes(isolation: Any) -> None:
    """Each requirement that clashes with a package the platform runs, and the choice made;
    warnings, not errors: the package is valid."""
    for clash in isolation.clashes:
        err.print(f"[yellow]warning:[/] {escape(clash.describe())}")
    if isolation.note:
        why = "not resolved (--no-resolve)" if isolation.note == "not resolved" else isolation.note
        err.print(
            f"[yellow]warning:[/] {escape(why)}; only the requirement lines themselves were "
            "checked, not what they install"
        )
    if not isolation.clashes:
        return
    if isolation.isolated:
        err.print(
            "[yellow]note:[/] in the executor's process these would replace the platform's "
            "own packages, so this version runs in an isolated worker process (its packages, "
            "the fxray.context shim and the standard library only); "
            '"isolation": "in-process" in the manifest overrides this'
        )
    else:
        err.print(
            '[yellow]warning:[/] the manifest asks for "isolation": "in-process": these '
            "packages go first on the executor's import path and may stop it from starting"
        )


@commands.command("run-local")
def run_local_command(
    package: Annotated[str, typer.Argument(help="A service package folder (or .zip).")],
    event: Annotated[
        Path | None,
        typer.Option(
            "--event",
            "-e",
            help="JSON file: a CloudEvent (has 'specversion') or plain data for a manual run.",
        ),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file replacing the package's config.json.")
    ] = None,
    secrets: Annotated[
        Path | None, typer.Option(help="JSON file replacing the package's secrets.json.")
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            help="JSON file keeping state between runs \\[default: .fxray-local-state.json]."
        ),
    ] = None,
    install: Annotated[
        bool,
        typer.Option(help="Install requirements.txt into a cached folder (else use this env)."),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run result as JSON.")] = False,
) -> None:
    """Run a service's scripts in this process, without Ray, and show what happened."""
    from fxray.kv import ServiceState
    from fxray.runtime.context import StateView
    from fxray.runtime.local import DEFAULT_STATE_FILE, JsonFileKV, run_local
    from fxray.services import load_package

    with cli_errors():
        payload: Any = {} if event is None else read_json_file(event, "event file")
        state_path = state or Path(DEFAULT_STATE_FILE)
        result = run_local(
            package,
            payload,
            config=read_object(config, "config file"),
            secrets=read_object(secrets, "secrets file"),
            state_path=state_path,
            install=install,
            progress=lambda note: err.print(f"[dim]{escape(note)}[/]"),
        )
        if as_json:
            sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")
        else:
            name = load_package(package).name
            saved = StateView(ServiceState(JsonFileKV(state_path), name)).get()
            trigger = "fxray.run.manual"
            if isinstance(payload, dict) and "specversion" in payload:
                trigger = str(payload.get("type"))
            out.print(f"[bold]{escape(name)}[/] run locally on [bold]{escape(trigger)}[/]")
            _print_run(name, result, saved, state_path)
    if result.status != "succeeded":
        raise typer.Exit(EXIT_FAILED)


def _print_run(name: str, result: Any, state: dict[str, Any], state_path: Path) -> None:
    for _when, level, step, message in result.logs:
        style = LEVEL_STYLES.get(level, "default")
        lines = str(message).splitlines() or [""]
        prefix = f"[dim]\\[{escape(step or name)}][/] [{style}]{level}[/]"
        out.print(f"{prefix} {escape(lines[0])}")
        for line in lines[1:]:
            out.print(f"    {escape(line)}")
    for step in result.steps:
        status = str(step.status)
        style = STATUS_STYLES.get(status, "default")
        note = f"  {escape(step.error)}" if step.error else ""
        name_part = f"step [bold]{escape(step.name)}[/]"
        out.print(f"{name_part} [{style}]{status}[/] {step.duration_ms:.1f} ms{note}")
    for emitted in result.emitted:
        data = json.dumps(emitted.get("data"), ensure_ascii=False, default=str)
        out.print(f"emitted [bold]{escape(emitted['type'])}[/] {escape(data)}")
    if state:
        shown = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in sorted(state.items()))
        out.print(f"state {escape(shown)}  [dim]({escape(str(state_path))})[/]")
    status = str(result.status)
    style = STATUS_STYLES.get(status, "default")
    total_ms = (result.finished_at - result.started_at) * 1000.0
    line = f"[{style}]{status}[/] {escape(name)} in {total_ms:.1f} ms"
    if result.error:
        line += f": {escape(result.error)}"
    out.print(line)


@commands.command()
def demo(
    home: Annotated[
        Path | None, typer.Option(help="Platform home folder \\[default: a temporary folder].")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the home folder afterwards.")] = False,
) -> None:
    """Deploy the example shop flow on a local platform, send orders, show what happened."""
    with cli_errors():
        from fxray.demo import main

        code = main(home=str(home) if home else None, keep=keep)
    raise typer.Exit(code)


@commands.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address \\[default: settings' api_host].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port \\[default: settings' api_port].")] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Join this Ray cluster (host:port, or ray://host:10001 for Ray Client) instead "
            "of starting a local Ray \\[default: settings' ray_address].",
        ),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Run the sample shop services (examples/) on a fresh platform in a temporary "
            "home, and print the web UI's address and a sign-in key."
        ),
    ] = False,
) -> None:
    """Start the platform (from FXRAY_* settings) and serve the management API and the web UI
    until Ctrl-C."""
    with cli_errors():
        import shutil
        import tempfile
        import uuid

        from fxray.api.server import serve
        from fxray.settings import Settings

        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["api_host"] = host
        if port is not None:
            overrides["api_port"] = port
        if ray_address is not None:
            overrides["ray_address"] = ray_address
        home = None
        if demo:  # a platform of its own: fresh state, SQLite in the temporary home
            home = tempfile.mkdtemp(prefix="fxray-up-demo-")
            overrides |= {
                "home": home,
                "instance": f"demo-{uuid.uuid4().hex[:8]}",
                "database_url": "",
                "executors_max_per_version": 1,
            }
        try:
            serve(Settings(**overrides), announce=out.print, demo=demo)
        finally:
            if home is not None:
                shutil.rmtree(home, ignore_errors=True)


@commands.command()
def version() -> None:
    """Print the versions of fxray, Ray and Python."""
    from fxray._version import __version__

    try:
        ray_version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        ray_version = "not installed"
    out.print(f"fxray {__version__} (ray {ray_version}, python {py_platform.python_version()})")


def register(app: typer.Typer) -> None:
    app.add_typer(commands)
