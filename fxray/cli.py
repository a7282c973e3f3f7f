"""The ``fxray`` command line: validate packages, run services locally, run the demo.

::

    fxray validate examples/order-intake
    fxray run-local examples/order-intake --event examples/order-intake/sample-event.json
    fxray demo
    fxray up                      # the management API on http://127.0.0.1:8080
    fxray db status               # the database's schema revision (fxray db upgrade migrates)
"""

from __future__ import annotations

import json
import os
import platform as py_platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    name="fxray",
    help="Event-driven Python microservices on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2

LEVEL_STYLES = {
    "DEBUG": "dim",
    "INFO": "cyan",
    "WARNING": "yellow",
    "ERROR": "bold red",
    "CRITICAL": "bold red",
    "STDOUT": "default",
    "STDERR": "magenta",
}
STATUS_STYLES = {
    "succeeded": "green",
    "failed": "bold red",
    "timed_out": "bold red",
    "cancelled": "yellow",
}


class UsageProblem(Exception):
    """Bad input on the command line (a file that cannot be read, invalid JSON...)."""


@contextmanager
def _cli_errors() -> Iterator[None]:
    """Turn errors into one clear message and an exit code; no tracebacks (``FXRAY_DEBUG=1``
    shows them)."""
    from fxray.events import InvalidEvent
    from fxray.local import LocalRunError
    from fxray.services import PackageError, ParameterError

    try:
        yield
    except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except PackageError as exc:
        _fail(str(exc), EXIT_FAILED)
    except ParameterError as exc:
        _fail(str(exc), EXIT_USAGE)
    except (UsageProblem, InvalidEvent) as exc:
        _fail(str(exc), EXIT_USAGE)
    except LocalRunError as exc:
        _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("FXRAY_DEBUG"):
            raise
        _fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def _fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _read_json(path: Path, what: str) -> Any:
    return read_json(path, f"{what} {path}")


def read_json(path: Path | None, label: str) -> Any:
    """The JSON value in a file (standard input if None); :class:`UsageProblem` naming
    ``label`` if it cannot be read or is not JSON."""
    try:
        text = sys.stdin.read() if path is None else path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageProblem(f"cannot read {label}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageProblem(f"{label} is not UTF-8 text") from None
    return loads_json(text, label)


def loads_json(text: str, label: str) -> Any:
    """The JSON value of ``text``; :class:`UsageProblem` naming ``label`` if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(
            f"{label} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def _read_object(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    value = _read_json(path, what)
    if not isinstance(value, dict):
        raise UsageProblem(f"{what} {path} must hold a JSON object")
    return value


# -- validate ---------------------------------------------------------------------------------


@app.command()
def validate(
    package: Annotated[str, typer.Argument(help="A service package folder or .zip file.")],
) -> None:
    """Check a service package and summarise it; list every problem if it is invalid."""
    from fxray.services import load_package

    with _cli_errors():
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


# -- run-local --------------------------------------------------------------------------------


@app.command("run-local")
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
    from fxray.context import StateView
    from fxray.kv import ServiceState
    from fxray.local import DEFAULT_STATE_FILE, JsonFileKV, run_local
    from fxray.services import load_package

    with _cli_errors():
        payload: Any = {} if event is None else _read_json(event, "event file")
        state_path = state or Path(DEFAULT_STATE_FILE)
        result = run_local(
            package,
            payload,
            config=_read_object(config, "config file"),
            secrets=_read_object(secrets, "secrets file"),
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


# -- demo, version ----------------------------------------------------------------------------


@app.command()
def demo(
    home: Annotated[
        Path | None, typer.Option(help="Platform home folder \\[default: a temporary folder].")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the home folder afterwards.")] = False,
) -> None:
    """Deploy the example shop flow on a local platform, send orders, show what happened."""
    with _cli_errors():
        from fxray.demo import main

        code = main(home=str(home) if home else None, keep=keep)
    raise typer.Exit(code)


@app.command()
def up(
    host: Annotated[
        str | None, typer.Option(help="Address \\[default: settings' api_host].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port \\[default: settings' api_port].")] = None,
) -> None:
    """Start the platform (from FXRAY_* settings) and serve the management API until Ctrl-C."""
    with _cli_errors():
        from fxray.api.server import serve
        from fxray.settings import Settings

        overrides: dict[str, Any] = {}
        if host is not None:
            overrides["api_host"] = host
        if port is not None:
            overrides["api_port"] = port
        serve(Settings(**overrides), announce=out.print)


@app.command()
def version() -> None:
    """Print the versions of fxray, Ray and Python."""
    from fxray import __version__

    try:
        ray_version = metadata.version("ray")
    except metadata.PackageNotFoundError:
        ray_version = "not installed"
    out.print(f"fxray {__version__} (ray {ray_version}, python {py_platform.python_version()})")


deadletters_app = typer.Typer(
    help="Dead letters: bad records and events of runs that failed for good.",
    no_args_is_help=True,
)
app.add_typer(deadletters_app, name="deadletters")


def _bus_from_settings() -> tuple[Any, Any]:
    """The installation's event bus, from FXRAY_* settings (Kafka, or a running embedded bus)."""
    from fxray.settings import Settings

    settings = Settings()
    if settings.event_bus == "kafka":
        from fxray.bus.kafka import KafkaBus

        return settings, KafkaBus(settings.kafka_bootstrap)
    import ray

    from fxray.bus.embedded import EmbeddedBus

    ray.init(address=settings.ray_address or "auto", namespace=settings.ray_namespace,
             log_to_driver=False)  # fmt: skip
    try:
        return settings, EmbeddedBus.connect(f"fxray-bus.{settings.instance}")
    except ValueError as exc:
        raise UsageProblem(f"no running embedded bus of instance {settings.instance!r}") from exc


@deadletters_app.command("list")
def deadletters_list(
    limit: Annotated[int, typer.Option(help="Newest dead letters per partition.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List dead letters: position, why, where from, which run."""
    from fxray import deadletters

    with _cli_errors():
        settings, bus = _bus_from_settings()
        letters = deadletters.read(bus, settings.deadletter_topic, limit)
        for letter in letters:
            summary = letter.summary()
            if as_json:
                out.print_json(json.dumps(summary))
            else:
                run = f"  run {summary['run_id']}" if summary["run_id"] else ""
                reason = escape(summary["reason"])
                out.print(f"{summary['position']:>8}  from {summary['from']}{run}  {reason}")
        if not letters and not as_json:
            out.print(f"no dead letters on {settings.deadletter_topic}")


@deadletters_app.command("replay")
def deadletters_replay(
    positions: Annotated[list[str], typer.Argument(help="partition:offset of each dead letter.")],
) -> None:
    """Send dead letters back to the events topic (failed runs' events get a new id)."""
    from fxray import deadletters

    with _cli_errors():
        try:
            parsed = [deadletters.parse_position(p) for p in positions]
        except ValueError as exc:
            raise UsageProblem(str(exc)) from exc
        settings, bus = _bus_from_settings()
        for line in deadletters.republish(
            bus, settings.deadletter_topic, settings.events_topic, parsed
        ):
            out.print(line)


db_app = typer.Typer(
    help="The management database (FXRAY_DATABASE_URL): schema revision and migrations.",
    no_args_is_help=True,
)
app.add_typer(db_app, name="db")


def _database() -> tuple[str, str, Path | None]:
    """The settings' database URL, the same with its password hidden (for printing), and its
    file if it is a SQLite file."""
    from sqlalchemy.engine import make_url

    from fxray.settings import Settings

    url = Settings().database_url
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise UsageProblem(f"FXRAY_DATABASE_URL is not a database URL: {exc}") from exc
    sqlite_file = None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        sqlite_file = Path(parsed.database)
    return url, parsed.render_as_string(hide_password=True), sqlite_file


@db_app.command("status")
def db_status() -> None:
    """Print the database's schema revision; exit 1 if it is behind this fxray's newest."""
    from fxray.store import revision
    from fxray.store.migrations import head

    with _cli_errors():
        url, shown, sqlite_file = _database()
        if sqlite_file is not None and not sqlite_file.exists():
            _fail(f"no database at {sqlite_file}: `fxray db upgrade` creates it", EXIT_FAILED)
        current, newest = revision(url), head()
        if current == newest:
            out.print(f"{shown}: at revision {newest} (up to date)")
            return
        out.print(f"{shown}: at revision {current or 'none'}, newest is {newest}")
        _fail("the database is behind: run `fxray db upgrade`", EXIT_FAILED)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this fxray's newest schema (``fxray up`` does it at start too)."""
    from fxray.store import migrate

    with _cli_errors():
        url, shown, _ = _database()
        out.print(f"{shown}: at revision {migrate(url)} (up to date)")


# -- commands over the Management API (fxray/cli_remote.py) -----------------------------------

from fxray import cli_remote  # noqa: E402 - after the definitions cli_remote uses

cli_remote.register(app)


if __name__ == "__main__":  # pragma: no cover
    app()
