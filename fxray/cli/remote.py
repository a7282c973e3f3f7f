"""``fxray`` commands over the Management API (see :mod:`fxray.client`).

::

    export FXRAY_API_URL=http://127.0.0.1:8080 FXRAY_API_KEY=fxk_...
    fxray service push examples/order-intake --label v1
    fxray trigger add shop.order.placed order-intake
    fxray event send shop.order.placed --data '{"order_id": "A-1"}'
    fxray runs --service order-intake
    fxray logs RUN_ID --follow

Every command takes ``--url`` and ``--key`` (or ``FXRAY_API_URL`` / ``FXRAY_API_KEY``). A
request the server refuses prints its message on one line and exits 1; bad usage (invalid JSON
for ``--data``, a malformed ``--weights``) exits 2.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from fxray.cli.output import (
    EXIT_FAILED,
    LEVEL_STYLES,
    STATUS_STYLES,
    UsageProblem,
    cli_errors,
    fail,
    loads_json,
    out,
    read_json,
)

if TYPE_CHECKING:
    from fxray.client import FxrayClient

PANEL = "Management API"

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="FXRAY_API_URL",
        help="The fxray API's URL \\[default: http://127.0.0.1:8080].",
        show_default=False,
    ),
]
Key = Annotated[
    str | None,
    typer.Option("--key", envvar="FXRAY_API_KEY", help="An API key.", show_default=False),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]
ServiceProject = Annotated[
    str | None,
    typer.Option(
        "--project",
        help="The service's project (a platform-wide key, where several projects have a "
        "service of that name) \\[default: the key's project].",
        show_default=False,
    ),
]


@contextmanager
def _api(url: str | None, key: str | None) -> Iterator[FxrayClient]:
    """A client; refused requests and unreachable APIs become one line on stderr, exit 1."""
    from fxray.client import ApiError, FxrayClient

    failure: ApiError | None = None
    with cli_errors():
        try:
            with FxrayClient(url, key) as client:
                yield client
        except ApiError as exc:
            failure = exc
    if failure is not None:  # outside cli_errors, which does not pass typer.Exit through
        fail(failure.describe(), EXIT_FAILED)


def _usage(message: str) -> Exception:
    return UsageProblem(message)


# -- argument parsing -------------------------------------------------------------------------


def parse_weights(text: str | None) -> dict[str, int]:
    """``v1=70,v2=30`` -> ``{"v1": 70, "v2": 30}`` (versions by id, label or hash prefix)."""
    if text is None or not text.strip():
        return {}
    weights: dict[str, int] = {}
    for part in text.split(","):
        version, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not version or not value:
            raise _usage(f"--weights: {part.strip()!r} is not VERSION=WEIGHT (e.g. v1=70,v2=30)")
        try:
            weight = int(value)
        except ValueError:
            raise _usage(
                f"--weights: weight {value!r} of {version!r} is not a whole number"
            ) from None
        if weight < 0:
            raise _usage(f"--weights: weight of {version!r} must not be negative")
        if version in weights:
            raise _usage(f"--weights: version {version!r} is given twice")
        weights[version] = weight
    return weights


def parse_filters(items: list[str] | None) -> dict[str, str]:
    """``["source=shop/*", "data.country=CH"]`` -> a dict (the value may contain ``=``)."""
    filters: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise _usage(f"--filter: {item!r} is not KEY=VALUE (e.g. source=shop/*)")
        if name in filters:
            raise _usage(f"--filter: {name!r} is given twice")
        filters[name] = value
    return filters


def parse_json(text: str, option: str) -> Any:
    """A JSON value from the command line, or from a file with ``@path`` (``-`` reads stdin)."""
    if text.startswith("@"):
        path = text[1:]
        return read_json(None if path == "-" else Path(path), f"{option} file {path}")
    return loads_json(text, option)


# -- output -----------------------------------------------------------------------------------


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def _listed(items: list[Any], as_json: bool, what: str) -> bool:
    """Print ``items`` as JSON, or say there are none; True if a table is still to print."""
    if as_json:
        _print_json(items)
        return False
    if not items:
        out.print(f"no {what}")
        return False
    return True


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _when(timestamp: Any) -> str:
    """Local time; the date only when it is not today."""
    if not isinstance(timestamp, int | float):
        return str(timestamp) if timestamp else "-"
    moment = datetime.fromtimestamp(timestamp)
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _took(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return "-"
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000.0:.1f} s"


def _duration(item: Mapping[str, Any]) -> str:
    """A run's or step's duration: ``duration_ms``, or from its start and finish times."""
    ms, started, finished = item.get("duration_ms"), item.get("started_at"), item.get("finished_at")
    if ms is None and isinstance(started, int | float) and isinstance(finished, int | float):
        ms = (finished - started) * 1000.0
    return _took(ms)


def _status(status: Any) -> str:
    text = str(status or "-")
    style = STATUS_STYLES.get(text, "default")
    return f"[{style}]{escape(text)}[/]"


def _short_version(version: Any) -> str:
    """``svc@0123456789ab`` -> ``0123456789ab`` (the service is shown beside it); a
    ``{"id", "label"}`` reference -> ``0123456789ab (v2)``."""
    if isinstance(version, Mapping):
        label = f" ({version['label']})" if version.get("label") else ""
        return _short_version(version.get("id")) + label
    return str(version).rpartition("@")[2] if version else "-"


def _run_version(run: Mapping[str, Any], short: bool = True) -> str:
    """The run's version (``version: {id, label}`` in the API), short or in full."""
    version = run.get("version") or run.get("version_id")
    if short:
        return _short_version(version)
    if isinstance(version, Mapping):
        label = f" ({version['label']})" if version.get("label") else ""
        return f"{version.get('id')}{label}"
    return str(version or "-")


def _mapping(value: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (value or {}).items()) or "-"


def log_fields(line: Any) -> tuple[Any, str, str, str]:
    """(time, level, step, message) of a log line: a JSON object or a 4-item list."""
    if isinstance(line, Mapping):
        return (
            line.get("time"),
            str(line.get("level") or "INFO"),
            str(line.get("step") or ""),
            str(line.get("message", "")),
        )
    if isinstance(line, list | tuple) and len(line) >= 4:
        return line[0], str(line[1]), str(line[2] or ""), str(line[3])
    return None, "INFO", "", str(line)


def _print_log(line: Any, service: str = "") -> None:
    _, level, step, message = log_fields(line)
    style = LEVEL_STYLES.get(level, "default")
    lines = message.splitlines() or [""]
    prefix = f"[dim]\\[{escape(step or service)}][/] [{style}]{escape(level)}[/]"
    out.print(f"{prefix} {escape(lines[0])}")
    for more in lines[1:]:
        out.print(f"    {escape(more)}")


def _rows(rows: list[tuple[str, str]]) -> None:
    """Aligned ``key  value`` lines (values already rich markup)."""
    width = max((len(k) for k, _ in rows), default=0)
    for name, value in rows:
        out.print(f"  {name:<{width}}  {value}")


# -- services ---------------------------------------------------------------------------------

service_app = typer.Typer(
    help="Services on the platform: push packages, list them.", no_args_is_help=True
)


@service_app.command("push")
def service_push(
    directory: Annotated[str, typer.Argument(help="A service package folder (or .zip file).")],
    label: Annotated[str | None, typer.Option(help="A label for the version (e.g. v2).")] = None,
    project: Annotated[
        str | None, typer.Option(help="The project [default: the key's project].")
    ] = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Deploy a service package (validated and zipped here) as a new version."""
    with _api(url, key) as api:
        answer = api.push_service(directory, label=label, project=project)
        if as_json:
            _print_json(answer)
            return
        service = answer.get("service") or {}
        version = answer.get("version") or {}
        name = escape(str(service.get("name", "?")))
        vid = escape(str(version.get("id", "?")))
        tag = f" label [bold]{escape(str(version['label']))}[/]" if version.get("label") else ""
        where = f" in project {escape(str(service['project']))}" if service.get("project") else ""
        if answer.get("created", True):
            out.print(f"[green]deployed[/] [bold]{name}[/] version {vid}{tag}{where}")
        else:
            out.print(
                f"[yellow]unchanged[/] [bold]{name}[/] version {vid}{tag} was deployed before"
            )
        for trigger in answer.get("triggers") or []:
            out.print(
                f"  trigger {escape(str(trigger.get('id')))}: "
                f"{escape(str(trigger.get('pattern')))} -> {name}"
            )
        _print_isolation(version)


def _print_isolation(version: dict[str, Any]) -> None:
    """Where the version runs, when there was anything to decide (requirements, a choice)."""
    isolation = version.get("isolation") or {}
    if not isolation or not (version.get("requirements") or isolation.get("mode") == "process"):
        return
    style = "yellow" if isolation.get("mode") == "process" else "dim"
    out.print(f"  [{style}]{escape(str(isolation.get('summary', '')))}[/]")
    if isolation.get("note"):
        out.print(f"  [yellow]{escape(str(isolation['note']))}[/]")


@service_app.command("list")
def service_list(
    project: Annotated[str | None, typer.Option(help="Only this project's services.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 100,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """List services: project, active, latest version, description."""
    with _api(url, key) as api:
        services = api.list_services(project, limit=limit)
        if not _listed(services, as_json, "services"):
            return
        table = _table("SERVICE", "PROJECT", "STATE", "LATEST", "DESCRIPTION")
        for svc in services:
            latest = _short_version(svc.get("latest_version"))
            active = svc.get("active", True)
            table.add_row(
                f"[bold]{escape(str(svc.get('name')))}[/]",
                escape(str(svc.get("project") or "-")),
                "[green]active[/]" if active else "[yellow]inactive[/]",
                escape(latest),
                escape(str(svc.get("description") or "")),
            )
        out.print(table)


# -- triggers ---------------------------------------------------------------------------------

trigger_app = typer.Typer(
    help="Triggers: link event types to services (late linking, A/B weights, shadow).",
    no_args_is_help=True,
)


@trigger_app.command("add")
def trigger_add(
    pattern: Annotated[str, typer.Argument(help="An event type, or a glob (orders.*).")],
    service: Annotated[str, typer.Argument(help="The service to run.")],
    weights: Annotated[
        str | None,
        typer.Option(help="A/B split over versions (id, label or hash): v1=70,v2=30."),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="Only events whose attribute or data field matches: source=shop/*, "
            "data.country=CH (repeat for more).",
        ),
    ] = None,
    shadow: Annotated[
        str | None, typer.Option(help="A version that also runs on a copy of the traffic.")
    ] = None,
    ordered: Annotated[
        bool, typer.Option("--ordered", help="Run one partition key's events one at a time.")
    ] = False,
    project: ServiceProject = None,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Link events whose type matches PATTERN to SERVICE (routers pick it up at once)."""
    with _api(url, key) as api:
        trigger = api.add_trigger(
            pattern,
            service,
            filters=parse_filters(filters),
            weights=parse_weights(weights),
            shadow_version=shadow,
            ordered=ordered,
            project=project,
        )
        if as_json:
            _print_json(trigger)
            return
        out.print(
            f"[green]linked[/] {escape(trigger.get('pattern', pattern))} -> "
            f"[bold]{escape(trigger.get('service', service))}[/] "
            f"(trigger {escape(str(trigger.get('id')))})"
        )


@trigger_app.command("list")
def trigger_list(
    service: Annotated[str | None, typer.Option(help="Only this service's triggers.")] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's triggers.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 100,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """List triggers: pattern, service, filters, weights, shadow version."""
    with _api(url, key) as api:
        triggers = api.list_triggers(service, project=project, limit=limit)
        if not _listed(triggers, as_json, "triggers"):
            return
        table = _table("ID", "PATTERN", "SERVICE", "FILTERS", "WEIGHTS", "SHADOW", "ORDERED")
        for t in triggers:
            weights = {_short_version(k): v for k, v in (t.get("weights") or {}).items()}
            inactive = "" if t.get("active", True) else " [yellow](inactive)[/]"
            table.add_row(
                escape(str(t.get("id"))),
                escape(str(t.get("pattern"))) + inactive,
                f"[bold]{escape(str(t.get('service')))}[/]",
                escape(_mapping(t.get("filters"))),
                escape(_mapping(weights) if weights else "latest"),
                escape(_short_version(t.get("shadow_version"))),
                "yes" if t.get("ordered") else "no",
            )
        out.print(table)


@trigger_app.command("remove")
def trigger_remove(
    trigger_id: Annotated[str, typer.Argument(metavar="ID", help="The trigger's id.")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Delete a trigger (events of its pattern stop reaching the service at once)."""
    with _api(url, key) as api:
        api.remove_trigger(trigger_id)
        out.print(f"removed trigger {escape(trigger_id)}")


# -- events -----------------------------------------------------------------------------------

event_app = typer.Typer(help="Events: send CloudEvents to the platform.", no_args_is_help=True)


@event_app.command("send")
def event_send(
    type: Annotated[str, typer.Argument(metavar="TYPE", help="The event type.")],
    data: Annotated[
        str | None,
        typer.Option(help="The event's data as JSON, or @file.json (@- reads stdin)."),
    ] = None,
    source: Annotated[str, typer.Option(help="The event's source attribute.")] = "fxray/cli",
    subject: Annotated[str | None, typer.Option(help="The event's subject attribute.")] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Send one CloudEvent; prints its id (it follows the runs it causes)."""
    with _api(url, key) as api:
        value = None if data is None else parse_json(data, "--data")
        attributes = {"subject": subject} if subject else {}
        event_id = api.send_event(type, value, source=source, **attributes)
        out.print(f"sent {escape(type)} event {escape(event_id)}")


# -- runs -------------------------------------------------------------------------------------

run_app = typer.Typer(help="Runs: show one, start one, cancel one.", no_args_is_help=True)


def runs(
    service: Annotated[str | None, typer.Option(help="Only this service's runs.")] = None,
    status: Annotated[
        str | None,
        typer.Option(help="pending, running, succeeded, failed, timed_out or cancelled."),
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Only runs of this flow.")
    ] = None,
    project: Annotated[str | None, typer.Option(help="Only this project's runs.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """List runs: service, version, status, trigger event, start time, duration."""
    with _api(url, key) as api:
        found = api.runs(service, status, correlation_id, limit=limit, project=project)
        if not _listed(found, as_json, "runs"):
            return
        table = _table("RUN", "SERVICE", "VERSION", "STATUS", "EVENT", "CREATED", "DURATION")
        for run in found:
            shadow = " [dim](shadow)[/]" if run.get("shadow") else ""
            table.add_row(
                escape(str(run.get("id"))),
                f"[bold]{escape(str(run.get('service')))}[/]",
                escape(_run_version(run)) + shadow,
                _status(run.get("status")),
                escape(str(run.get("event_type") or "-")),
                _when(run.get("created_at")),
                _duration(run),
            )
        out.print(table)


@run_app.command("show")
def run_show(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="The run's id.")],
    url: Url = None,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """A run's detail: trigger event, version, steps with timings, result, error, logs."""
    with _api(url, key) as api:
        run = api.get_run(run_id)
        if as_json:
            _print_json(run)
            return
        _print_run_detail(run)


def _print_run_detail(run: Mapping[str, Any]) -> None:
    service = str(run.get("service", ""))
    out.print(f"run [bold]{escape(str(run.get('id')))}[/] of [bold]{escape(service)}[/]")
    event = run.get("trigger_event")
    event = event if isinstance(event, Mapping) else {}
    rows = [
        ("status", _status(run.get("status"))),
        ("version", escape(_run_version(run, short=False))),
        ("event", escape(f"{run.get('event_type', '-')} {run.get('event_id', '')}".strip())),
        ("correlation", escape(str(run.get("correlation_id") or "-"))),
        ("created", _when(run.get("created_at"))),
        ("duration", _duration(run)),
    ]
    if event and event.get("source"):
        rows.insert(3, ("source", escape(str(event["source"]))))
    if run.get("trigger_id"):
        rows.append(("trigger", escape(str(run["trigger_id"]))))
    if run.get("priority") is not None:
        rows.append(("priority", escape(str(run["priority"]))))
    if run.get("attempt", 1) != 1:
        rows.append(("attempt", escape(str(run["attempt"]))))
    if run.get("shadow"):
        rows.append(("shadow", "yes (emitted events are not routed onward)"))
    _rows(rows)
    steps = run.get("steps") or []
    if steps:
        out.print("steps")
        for step in steps:
            ms = step.get("duration_ms")
            timing = f"{ms:.1f} ms" if isinstance(ms, int | float) else _duration(step)
            note = f"  {escape(str(step['error']))}" if step.get("error") else ""
            name = escape(str(step.get("name")))
            out.print(f"  {name} {_status(step.get('status'))} {timing}{note}")
    if run.get("result") is not None:
        result = json.dumps(run["result"], ensure_ascii=False, default=str)
        out.print(f"result {escape(result)}")
    if run.get("error"):
        out.print(f"[bold red]error[/] {escape(str(run['error']))}")
    logs = run.get("logs") or []
    if logs:
        out.print("logs")
        for line in logs:
            _print_log(line, service)


@run_app.command("start")
def run_start(
    service: Annotated[str, typer.Argument(help="The service to run.")],
    params: Annotated[
        str | None, typer.Option(help="Parameters as a JSON object, or @file.json.")
    ] = None,
    version: Annotated[
        str | None, typer.Option(help="A version (id, label or hash) [default: latest].")
    ] = None,
    priority: Annotated[
        int | None, typer.Option(min=1, max=10, help="1 (low) to 10 (high).")
    ] = None,
    project: ServiceProject = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Start a manual run with parameters (checked against the service's parameters.json)."""
    with _api(url, key) as api:
        values = {} if params is None else parse_json(params, "--params")
        if not isinstance(values, dict):
            raise _usage("--params must be a JSON object")
        answer = api.run(service, values, version=version, priority=priority, project=project)
        out.print(
            f"started run {escape(str(answer.get('run_id')))} of [bold]{escape(service)}[/] "
            f"(event {escape(str(answer.get('event_id')))})"
        )


@run_app.command("cancel")
def run_cancel(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="The run's id.")],
    url: Url = None,
    key: Key = None,
) -> None:
    """Cancel a queued or running run."""
    with _api(url, key) as api:
        answer = api.cancel(run_id) or {}
        outcome = answer.get("outcome") or answer.get("status") or "cancel requested"
        out.print(f"run {escape(run_id)}: {escape(str(outcome))}")


def logs(
    run_id: Annotated[str, typer.Argument(metavar="ID", help="The run's id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream new lines until the run finishes.")
    ] = False,
    url: Url = None,
    key: Key = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Print a run's logs; with --follow, stream them until the run finishes."""
    with _api(url, key) as api:
        lines = api.follow_logs(run_id) if follow else api.logs(run_id)
        for line in lines:
            if as_json:
                sys.stdout.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
                sys.stdout.flush()
            else:
                _print_log(line)
        if follow and not as_json:
            run = api.get_run(run_id)
            status = run.get("status")
            text = f"{_status(status)} {escape(str(run.get('service', '')))}"
            took = _duration(run)
            text += f" in {took}" if took != "-" else ""
            if run.get("error"):
                text += f": {escape(str(run['error']))}"
            out.print(text)


def replay(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run to replay.")],
    version: Annotated[
        str | None,
        typer.Option(help="Run on this version (id, label or hash) [default: as before]."),
    ] = None,
    url: Url = None,
    key: Key = None,
) -> None:
    """Run a past run's trigger event again, on the same or another version."""
    with _api(url, key) as api:
        answer = api.replay(run_id, version)
        on = f" on version {escape(version)}" if version else ""
        out.print(
            f"replaying run {escape(run_id)}{on} as run {escape(str(answer.get('run_id')))} "
            f"(event {escape(str(answer.get('event_id')))})"
        )


def register(app: typer.Typer) -> None:
    """Add these commands to the ``fxray`` command line."""
    app.add_typer(service_app, name="service", rich_help_panel=PANEL)
    app.add_typer(trigger_app, name="trigger", rich_help_panel=PANEL)
    app.add_typer(event_app, name="event", rich_help_panel=PANEL)
    app.add_typer(run_app, name="run", rich_help_panel=PANEL)
    app.command("runs", rich_help_panel=PANEL)(runs)
    app.command("logs", rich_help_panel=PANEL)(logs)
    app.command("replay", rich_help_panel=PANEL)(replay)
