"""``fxray deadletters``: list and replay dead letters, straight from the event bus."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from fxray.cli.output import UsageProblem, cli_errors, out

deadletters_app = typer.Typer(
    help="Dead letters: bad records and events of runs that failed for good.",
    no_args_is_help=True,
)


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
    from fxray.events import deadletters

    with cli_errors():
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
    from fxray.events import deadletters

    with cli_errors():
        try:
            parsed = [deadletters.parse_position(p) for p in positions]
        except ValueError as exc:
            raise UsageProblem(str(exc)) from exc
        settings, bus = _bus_from_settings()
        for line in deadletters.republish(
            bus, settings.deadletter_topic, settings.events_topic, parsed
        ):
            out.print(line)


def register(app: typer.Typer) -> None:
    app.add_typer(deadletters_app, name="deadletters")
