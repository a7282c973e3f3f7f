"""Isolated runs: a version's scripts in a worker process of their own, whose import path holds
only the version's packages, a small ``fxray.context`` shim and the standard library.

- :mod:`.process`: the executor's side, :class:`IsolatedWorker`;
- :mod:`.worker`: the worker process (standard library only);
- :mod:`.protocol`: the length-prefixed JSON frames between them (standard library only);
- ``shim/fxray/``: the ``fxray`` package scripts import in the worker (``context`` only).
"""

from fxray.runtime.isolated.process import (
    SHIM_DIR,
    IsolatedWorker,
    WorkerStartError,
    describe_exit,
)

__all__ = ["SHIM_DIR", "IsolatedWorker", "WorkerStartError", "describe_exit"]
