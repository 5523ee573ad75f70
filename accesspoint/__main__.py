"""``python -m accesspoint``: the CLI."""

from accesspoint.cli import run

run()
