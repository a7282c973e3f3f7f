"""fxray: event-driven Python microservices on Ray.

Service authors use :data:`context`; operators use :class:`Platform` and :class:`Settings`.
"""

from fxray.context import context
from fxray.platform import Deployment, Platform, PlatformError
from fxray.services import PackageError, load_package
from fxray.settings import Settings

__version__ = "0.1.0"

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
