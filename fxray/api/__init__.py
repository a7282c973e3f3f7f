"""The management API (FastAPI): :func:`create_app` over a started platform."""

from fxray.api.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
