"""Alembic environment of the operator's tables: runs on the connection ``MailboxStore.create`` hands over."""

from __future__ import annotations

from accesspoint.servicekit.database import run_environment
from operators.mailbox import metadata

run_environment(metadata)
