"""Operations that run to their end even when whoever awaits them is cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

_Result = TypeVar("_Result")


class Shield:
    """Runs each operation in a task of its own that a cancelled caller does not cancel.

    Cancelling a SQLAlchemy or redis-py operation half-way can leave its connection in a state the
    library does not recover from: an SQLite write lock held until other writers time out, a pool that
    hangs, a reply read by the next command. Finishing the operation is harmless here, since everything
    the store commits is covered by its recovery rules, like a crash right after the commit.
    """

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, operation: Awaitable[_Result]) -> _Result:
        """Await operation; if the caller is cancelled, the operation still completes in the background."""
        task = asyncio.ensure_future(operation)
        self._running.add(task)
        task.add_done_callback(self._finished)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for the operations whose callers were cancelled."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled():
            # Retrieved so that an operation whose caller went away fails quietly, not in the loop's log.
            task.exception()
