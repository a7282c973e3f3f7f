"""Ray for the embedded-bus integration tests.

Temporary: a shared ``tests/integration/conftest.py`` with the same ``ray_session`` fixture will
replace this one. It starts Ray only if it is not running and leaves it running at the end.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One shared local Ray instance for the test session (not shut down here)."""
    import ray

    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_DEDUP_LOGS", "0")
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if "RAY_TMPDIR" not in os.environ:
            os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="fxr", dir="/tmp")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024 * 1024,
            ignore_reinit_error=True,
        )
    yield
