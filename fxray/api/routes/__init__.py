"""The API's route modules, one per resource; :func:`fxray.api.app.create_app` mounts them."""
