"""``fxray db``: the management database's schema revision, and its migration."""

from __future__ import annotations

from pathlib import Path

import typer

from fxray.cli.output import EXIT_FAILED, UsageProblem, cli_errors, fail, out

db_app = typer.Typer(
    help="The management database (FXRAY_DATABASE_URL): schema revision and migrations.",
    no_args_is_help=True,
)


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

    with cli_errors():
        url, shown, sqlite_file = _database()
        if sqlite_file is not None and not sqlite_file.exists():
            fail(f"no database at {sqlite_file}: `fxray db upgrade` creates it", EXIT_FAILED)
        current, newest = revision(url), head()
        if current == newest:
            out.print(f"{shown}: at revision {newest} (up to date)")
            return
        out.print(f"{shown}: at revision {current or 'none'}, newest is {newest}")
        fail("the database is behind: run `fxray db upgrade`", EXIT_FAILED)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the database to this fxray's newest schema (``fxray up`` does it at start too)."""
    from fxray.store import migrate

    with cli_errors():
        url, shown, _ = _database()
        out.print(f"{shown}: at revision {migrate(url)} (up to date)")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
