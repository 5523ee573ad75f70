"""Alembic environment of the SMP's tables: runs on the connection ``smp.store.SmpStore.open`` hands over."""

from __future__ import annotations

from accesspoint.servicekit.database import run_environment
from smp.store import metadata

run_environment(metadata)
