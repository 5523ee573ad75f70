"""Alembic environment of FaR's tables: runs on the connection ``far.model.upgrade_schema`` hands over."""

from __future__ import annotations

from accesspoint.servicekit.database import run_environment
from far.model import metadata

run_environment(metadata)
