"""Alembic environment of the key archive's tables (run through accesspoint.keyarchive.model.upgrade_schema)."""

from __future__ import annotations

from accesspoint.keyarchive.model import metadata
from accesspoint.servicekit.database import run_environment

run_environment(metadata)
