"""The UI's views, one module each: a ``router`` and, for a nav bar entry, ``NAV``.

Modules here are found by :func:`fxray.ui.app.view_modules`; names starting with ``_`` are
helpers, not views.
"""
