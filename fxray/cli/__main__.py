"""``python -m fxray.cli``."""

from fxray.cli import app

app()
