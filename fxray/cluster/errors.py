"""The errors of ``fxray cluster``: each one a message a person can act on."""

from __future__ import annotations


class ClusterError(Exception):
    """Something ``fxray cluster`` cannot do; the message says what and what to try.
    ``status`` is the API server's HTTP status, when it answered with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RenderError(ClusterError):
    """The manifests cannot be rendered (a bad kustomization, a missing file...)."""


class NoCluster(ClusterError):
    """No Kubernetes configuration, or its API server cannot be reached."""


class NoKubeRay(ClusterError):
    """The API server does not serve ``ray.io/v1`` RayClusters: the KubeRay CRDs are missing."""


class Forbidden(ClusterError):
    """The API server refused a request (403): the user lacks a permission."""


class Invalid(ClusterError):
    """The API server (or the client's own model check) refused an object as invalid."""
