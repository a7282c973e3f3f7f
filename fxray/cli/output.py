"""What every ``fxray`` command shares: the consoles, styles, exit codes, the one way errors
become a message (no tracebacks), and the one JSON reader for files and arguments."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import typer
from rich.console import Console
from rich.markup import escape

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
def cli_errors() -> Iterator[None]:
    """Turn errors into one clear message and an exit code; no tracebacks (``FXRAY_DEBUG=1``
    shows them)."""
    from fxray.events.cloudevent import InvalidEvent
    from fxray.runtime.local import LocalRunError
    from fxray.services import PackageError, ParameterError

    try:
        yield
    except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
        raise
    except PackageError as exc:
        fail(str(exc), EXIT_FAILED)
    except ParameterError as exc:
        fail(str(exc), EXIT_USAGE)
    except (UsageProblem, InvalidEvent) as exc:
        fail(str(exc), EXIT_USAGE)
    except LocalRunError as exc:
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Exception as exc:
        if os.environ.get("FXRAY_DEBUG"):
            raise
        fail(f"{type(exc).__name__}: {exc}", EXIT_FAILED)


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def read_json_file(path: Path, what: str) -> Any:
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
    except RecursionError:
        raise UsageProblem(f"{label} is nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise UsageProblem(
            f"{label} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def read_object(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    value = read_json_file(path, what)
    if not isinstance(value, dict):
        raise UsageProblem(f"{what} {path} must hold a JSON object")
    return value
