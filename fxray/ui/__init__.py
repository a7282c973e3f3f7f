"""The web UI: server-rendered pages (Jinja2) with htmx, served by the management API's process.

:func:`mount` adds it to the API's app (``create_app`` does, unless ``ui_enabled`` is off).
Sign-in with an API key starts a cookie session (:mod:`.session`); every state-changing request
carries a CSRF token (:mod:`.csrf`); pages use the API's roles and project checks (:mod:`.deps`);
each view is a module of :mod:`.views` with its templates in ``templates/<view>/``
(:mod:`.app` finds them; docs/ui.md says how to add one).
"""

from fxray.ui.app import mount

__all__ = ["mount"]
