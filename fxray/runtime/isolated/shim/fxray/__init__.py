"""The ``fxray`` a script sees in an isolated worker process: ``from fxray import context``.

Only the script API is here (see ``context.py``); the platform itself is not importable from
an isolated run, so a service's own dependencies never meet fxray's.
"""

from .context import context

__all__ = ["context"]
