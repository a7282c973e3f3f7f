"""Service packages: the folder (or .zip) format data teams write, and its validation."""

from fxray.services.manifest import Manifest, RetryPolicy
from fxray.services.package import (
    PackageError,
    ServicePackage,
    load_package,
    load_package_bytes,
)
from fxray.services.parameters import Parameter, ParameterError, validate_params

__all__ = [
    "Manifest",
    "PackageError",
    "Parameter",
    "ParameterError",
    "RetryPolicy",
    "ServicePackage",
    "load_package",
    "load_package_bytes",
    "validate_params",
]
