"""fxray: event-driven Python microservices on Ray.

Service authors use :data:`context`; operators use :class:`Platform` and :class:`Settings`,
or :class:`FxrayClient` to drive a running installation through its management API.
"""

from typing import TYPE_CHECKING, Any

from fxray._version import __version__
from fxray.runtime.context import context
from fxray.services import PackageError, load_package
from fxray.settings import Settings

if TYPE_CHECKING:
    from fxray.client import FxrayClient
    from fxray.platform import Deployment, Platform, PlatformError


_LAZY = {"Deployment", "Platform", "PlatformError"}


def __getattr__(name: str) -> Any:
    # the platform pulls in Ray (~1 s), the client httpx; scripts and `fxray validate` need neither
    if name in _LAZY:
        from fxray import platform

        return getattr(platform, name)
    if name == "FxrayClient":
        from fxray.client import FxrayClient

        return FxrayClient
    raise AttributeError(f"module 'fxray' has no attribute {name!r}")


__all__ = [
    "Deployment",
    "FxrayClient",
    "PackageError",
    "Platform",
    "PlatformError",
    "Settings",
    "__version__",
    "context",
    "load_package",
]
