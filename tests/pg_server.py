"""A private PostgreSQL server for tests that stop and start their database.

The machine's shared PostgreSQL (port 5432) serves every other test, so an outage test never
touches it: :class:`PrivatePostgres` runs ``initdb`` into a temporary folder, starts its own
``postgres`` on a free 127.0.0.1 port (trust auth, its unix socket in that folder) and stops it
by its data folder (``pg_ctl`` signals the postmaster's PID from ``postmaster.pid``). The
binaries come from ``FXRAY_TEST_PG_BIN``, else the newest ``/usr/lib/postgresql/<major>/bin``
(Debian's layout), else ``initdb`` on the ``PATH``. ``initdb`` refuses to run as root, so as
root every command runs as the ``postgres`` OS user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import sqlalchemy as sa

SERVER_USER = "postgres"
"""The OS user the server runs as when the tests run as root."""


def postgres_bin_dir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``, or None if PostgreSQL is not installed."""
    configured = os.environ.get("FXRAY_TEST_PG_BIN")
    if configured:
        return Path(configured)
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        majors = sorted(
            (p for p in root.iterdir() if (p / "bin" / "initdb").exists()),
            key=lambda p: int(p.name) if p.name.isdigit() else -1,
        )
        if majors:
            return majors[-1] / "bin"
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of one test's own: ``start()``, ``stop()``, ``start()`` again (same
    port, same data), ``close()`` (stops it, removes its folder). Use it as a context manager."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="fxpg"))  # short: unix socket paths are
        self.data = self.folder / "data"  # limited to ~100 characters
        self.log = self.folder / "server.log"
        self.port = free_port()
        self._as_other_user = os.geteuid() == 0
        if self._as_other_user:
            try:
                user = pwd.getpwnam(SERVER_USER)
            except KeyError:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise RuntimeError(
                    f"initdb does not run as root, and there is no {SERVER_USER!r} user to run "
                    "it as"
                ) from None
            os.chown(self.folder, user.pw_uid, user.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                      "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the ``postgres`` database."""
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1"
            f" -c unix_socket_directories={self.folder}"
            " -c max_connections=60 -c shared_buffers=16MB -c fsync=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` disconnects every client and rolls back their
        transactions (an outage as clients see it); ``immediate`` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while the server runs."""
        try:
            first = (self.data / "postmaster.pid").read_text().split("\n", 1)[0]
        except OSError:
            return None
        return int(first) if first.strip().isdigit() else None

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL."""
        engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.database_url(name)

    def close(self) -> None:
        """Stop the server if it runs, and remove its folder."""
        try:
            if self.pid is not None:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self._as_other_user:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        done = subprocess.run(
            command, cwd=self.folder, capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({done.returncode}): {done.stderr.strip()[-2000:]}\n{log}"
            )
