"""Alembic environment of the console's tables: runs on the connection ``Migrations.upgrade`` hands over."""

from __future__ import annotations

from accesspoint.console.model import metadata
from accesspoint.servicekit.database import run_environment

run_environment(metadata)
