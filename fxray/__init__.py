"""fxray: event-driven Python microservices on Ray.

Service authors use :data:`context`; operators use :class:`Platform` and :class:`Settings`.
"""

from typing import TYPE_CHECKING, Any

from fxray.context import context
from fxray.services import PackageError, load_package
from fxray.settings import Settings

if TYPE_CHECKING:
    from fxray.platform import Deployment, Platform, PlatformError

__version__ = "0.1.0"

_LAZY = {"Deployment", "Platform", "PlatformError"}


def __getattr__(name: str) -> Any:
    # the platform pulls in Ray (~1 s); scripts and `fxray validate` do not need it
    if name in _LAZY:
        from fxray import platform

        return getattr(platform, name)
    raise AttributeError(f"module 'fxray' has no attribute {name!r}")


__all__ = [
    "Deployment",
    "PackageError",
    "Platform",
    "PlatformError",
    "Settings",
    "__version__",
    "context",
    "load_package",
]
