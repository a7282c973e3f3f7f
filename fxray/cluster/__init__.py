"""fxray on Kubernetes: render ``deploy/kuberay`` (kustomize), apply it idempotently with the
official ``kubernetes`` client, show its state, scale a worker group, delete it.

:mod:`.render` finds and renders an overlay (``kubectl kustomize`` or :mod:`.kustomize`),
:mod:`.kube` talks to the API server, :mod:`.apply` applies, :mod:`.operations` holds status,
scale and delete, :mod:`.progress` follows the pods while they come up, :mod:`.errors` says
what went wrong.
"""

from fxray.cluster.errors import (
    ClusterError,
    Forbidden,
    Invalid,
    NoCluster,
    NoKubeRay,
    RenderError,
)

__all__ = ["ClusterError", "Forbidden", "Invalid", "NoCluster", "NoKubeRay", "RenderError"]
