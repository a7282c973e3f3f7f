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
) -> None:
    """Check a service package and summarise it; list every problem if it is invalid."""
    from fxray.services import load_package

    with cli_errors():
        pkg = load_package(package)
        manifest = pkg.manifest
        rows = [
            ("version", f"{pkg.short_hash}  (content hash)"),
            ("steps", " -> ".join(pkg.steps)),
            ("triggers", ", ".join(manifest.trigger_events) or "none (link them later)"),
            ("schedule", manifest.schedule or "none"),
            ("requirements", ", ".join(pkg.requirements) or "none"),
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
        _warn_of_clashes(pkg.requirements)


def _warn_of_clashes(requirements: list[str]) -> None:
    """Say which requirements replace a package the platform runs on (see
    :mod:`fxray.services.clashes`); a warning, not an error: the package is valid."""
    from fxray.services.clashes import platform_clashes

    clashes = platform_clashes(requirements)
    for clash in clashes:
        err.print(f"[yellow]warning:[/] {escape(clash.describe())}")
    if clashes:
        err.print(
            "[yellow]warning:[/] these requirements go first on the version's import path, "
            "so its executor would import them instead of the platform's own and may fail to "
            "start; run this service's version in a separate environment, or relax the pins"
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
) -> None:
    """Start the platform (from FXRAY_* settings) and serve the management API until Ctrl-C."""
    with cli_errors():
        from fxray.api.server import serve
        from fxray.settings import Settings

        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["api_host"] = host
        if port is not None:
            overrides["api_port"] = port
        serve(Settings(**overrides), announce=out.print)


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
