"""Writes that ride along in the transaction of a message's insert or move: outbox events, route targets, idempotency
keys. What a move causes is committed with it or not at all, so a restart never finds one without the other."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection

from accesspoint.store.records import StoredMessage


class TransactionHook(Protocol):
    """Something written in the same transaction as a message's insert or move."""

    def write(self, connection: Connection, message: StoredMessage) -> None:
        """Write in the transaction; message is the row as inserted or moved. Raising rolls the whole back."""
        ...

    def committed(self) -> None:
        """Called once the transaction committed (wake whoever waits for what was written); must not raise."""
        ...


def write_all(hooks: Sequence[TransactionHook], connection: Connection, message: StoredMessage) -> None:
    """Run every hook's write in the transaction."""
    for hook in hooks:
        hook.write(connection, message)


def committed_all(hooks: Sequence[TransactionHook]) -> None:
    """Tell every hook its transaction committed."""
    for hook in hooks:
        hook.committed()
