"""The ``fxray`` command line.

::

    fxray validate examples/order-intake
    fxray run-local examples/order-intake --event examples/order-intake/sample-event.json
    fxray demo
    fxray up                      # the management API on http://127.0.0.1:8080
    fxray db status               # the database's schema revision (fxray db upgrade migrates)
    fxray service push examples/order-intake   # and the other commands over the API
    fxray status                  # what runs where; fxray scale: a version's executors

Commands live by concern: :mod:`.local` (this machine), :mod:`.remote` (over the management
API), :mod:`.status` (``status``, ``scale`` over the API), :mod:`.deadletters`, :mod:`.db`,
:mod:`.cluster` (Kubernetes); :mod:`.output` holds what they share.
"""

import typer

from fxray.cli import cluster, db, deadletters, local, remote, status

app = typer.Typer(
    name="fxray",
    help="Event-driven Python microservices on Ray.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _module in (local, deadletters, db, remote, status, cluster):
    _module.register(app)

__all__ = ["app"]
