"""``python -m racer.cli``: the same as the ``racer`` command."""

from racer.cli import app

app()
