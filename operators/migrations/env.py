"""Alembic environment of the operator's tables: runs on the connection ``MailboxStore.create`` hands over."""

from __future__ import annotations

import operators.twoway_store  # noqa: F401  (its tables join the mailbox's metadata)
from accesspoint.servicekit.database import run_environment
from operators.mailbox import metadata

run_environment(metadata)
