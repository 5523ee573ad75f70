"""Alembic environment of the mailing tables: runs on the connection ``MailingStore.open`` hands over."""

from __future__ import annotations

from accesspoint.servicekit.database import run_environment
from accesspoint.store.mailings import metadata

run_environment(metadata)
