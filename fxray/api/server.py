"""``fxray up``: start the platform and serve the API until interrupted."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

import uvicorn

from fxray.api.app import create_app
from fxray.settings import Settings
from fxray.store import StateStore

log = logging.getLogger("fxray.api")

BOOTSTRAP_KEY_NAME = "bootstrap admin"


def bootstrap_admin_key(store: StateStore, configured: str | None) -> str | None:
    """Make sure someone can log in: returns a new admin token to print once, or None.

    With ``admin_key`` set (``FXRAY_ADMIN_KEY``, e.g. from a secret) that token becomes a
    platform-wide admin key if it is not one already. Otherwise, on the first start (no keys
    at all) a platform-wide admin key is created and returned.
    """
    if configured:
        if store.authenticate(configured) is None:
            store.import_api_key(configured, BOOTSTRAP_KEY_NAME, "admin", None)
        return None
    if store.count_api_keys() > 0:
        return None
    _, token = store.create_api_key(BOOTSTRAP_KEY_NAME, "admin", None)
    return token


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, the platform, the app) out of the garbage collector's
    view: a full collection then scans only what requests made since, instead of taking a
    couple of hundred milliseconds out of whichever request triggers it (bench/ui.py)."""
    gc.collect()
    gc.freeze()


def serve(settings: Settings, announce: Callable[[str], None] = print, demo: bool = False) -> None:
    """Start the platform, create the first admin key if needed, serve until Ctrl-C.

    ``demo``: first deploy the sample shop services of ``examples/`` and send them orders
    (see :mod:`fxray.demo`), and print a sign-in key for the web UI.
    """
    from fxray.platform import Platform

    platform = Platform(settings).start()
    try:
        assert platform.store is not None
        token = bootstrap_admin_key(platform.store, settings.admin_key)
        url = f"http://{settings.api_host}:{settings.api_port}"
        if demo:
            from fxray.demo import deploy_shop, send_orders

            announce("deploying the sample shop services and sending them orders...")
            deploy_shop(platform)
            send_orders(platform)
            if token is None:
                _, token = platform.store.create_api_key("demo sign-in", "admin", None)
            announce(
                f"fxray web UI on {url}/  (the shop's runs are under way)\n"
                "Sign in with this platform-wide admin key (shown only now):\n\n"
                f"    {token}\n"
            )
        elif token:
            announce(
                "A platform-wide admin key was created. It is shown only now; keep it safe:\n\n"
                f"    export FXRAY_API_KEY={token}\n"
            )
        announce(f"fxray API on {url}/api/v1  (OpenAPI: {url}/openapi.json, docs: {url}/docs)")
        if settings.ui_enabled and not demo:
            announce(f"fxray web UI on {url}/  (sign in with an API key)")
        app = create_app(platform)
        freeze_startup_objects()
        uvicorn.run(
            app,
            host=settings.api_host,
            port=settings.api_port,
            log_level="warning",
        )
    finally:
        platform.stop()
