"""``fxray deadletters``: list and replay dead letters, straight from the event bus.

Each letter's mark (requeued or discarded, by the web UI, the API or ``replay``) comes from the
installation's key/value store (:mod:`fxray.events.deadletters`); without one (an embedded
store that was never created here) letters show no marks and ``replay`` marks nothing."""

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


def _marks_kv(settings: Any) -> Any:
    """The installation's key/value store, where the marks are; None for an embedded store
    that does not exist (a list must not create one)."""
    if settings.kv_store != "consul" and not settings.kv_path.exists():
        return None
    from fxray.platform import _make_kv

    return _make_kv(settings)


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
        kv = _marks_kv(settings)
        marks = deadletters.read_marks(kv, settings.deadletter_topic) if kv is not None else {}
        for letter in letters:
            summary = {**letter.summary(), "mark": marks.get(letter.position)}
            if as_json:
                out.print_json(json.dumps(summary))
            else:
                run = f"  run {summary['run_id']}" if summary["run_id"] else ""
                reason = escape(summary["reason"])
                mark = summary["mark"]
                state = f"[{mark.get('action', 'handled')}]" if mark else "[open]"
                out.print(
                    f"{summary['position']:>8}  {escape(f'{state:11}')}  from {summary['from']}"
                    f"{run}  {reason}"
                )
        if not letters and not as_json:
            out.print(f"no dead letters on {settings.deadletter_topic}")


@deadletters_app.command("replay")
def deadletters_replay(
    positions: Annotated[list[str], typer.Argument(help="partition:offset of each dead letter.")],
) -> None:
    """Send dead letters back to the events topic (failed runs' events get a new id) and mark
    them requeued; a letter already requeued or discarded is left alone (exit code 1)."""
    from fxray.events import deadletters

    with cli_errors():
        try:
            parsed = [deadletters.parse_position(p) for p in positions]
        except ValueError as exc:
            raise UsageProblem(str(exc)) from exc
        settings, bus = _bus_from_settings()
        kv = _marks_kv(settings)
        if kv is None:
            for line in deadletters.republish(
                bus, settings.deadletter_topic, settings.events_topic, parsed
            ):
                out.print(line)
            return
        outcomes = deadletters.handle(
            bus, kv, settings.deadletter_topic, settings.events_topic,
            list(positions), "requeue", "cli",
        )  # fmt: skip
        for outcome in outcomes:
            out.print(outcome.text if outcome.ok else f"{outcome.position}: {outcome.text}")
        if not all(outcome.ok for outcome in outcomes):
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(deadletters_app, name="deadletters")
