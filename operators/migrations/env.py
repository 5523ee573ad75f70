"""Alembic environment of the operator's tables: runs on the connection ``MailboxStore.create`` hands over."""

from __future__ import annotations

from accesspoint.servicekit.database import run_environment
from operators.twoway_store import metadata  # the mailbox's tables and the two-way tables beside them

run_environment(metadata)
