"""The API's route modules, one per resource (their models are in :mod:`fxray.api.schemas`,
what several of them share in ``_common``); :func:`fxray.api.app.create_app` mounts them."""
