"""Every long-lived task of the access point runs here: logged and restarted with backoff when it fails.

A send worker that meets a database outage, a pull loop whose partner answers garbage, a webhook delivery
whose outbox folder vanished: each is one task; when it raises, the supervisor logs the exception, waits
(``backoff``, doubling up to ``backoff_max``) and starts it again, so one fault never silently stops a kind
of work until the next restart. ``/readyz`` reports every task's state from here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

log = logging.getLogger("accesspoint.msh.supervisor")

# A task that ran this long before failing starts again after the first backoff, not the last one.
STABLE_AFTER = 60.0


class TaskState(StrEnum):
    """Where a supervised task stands."""

    RUNNING = "running"
    RESTARTING = "restarting"  # it failed and waits for its backoff to run out
    DONE = "done"  # a one-shot task (``once=True``) that finished


@dataclass(slots=True)
class TaskStatus:
    """What ``/readyz`` shows of a task."""

    name: str
    state: TaskState = TaskState.RUNNING
    restarts: int = 0
    last_error: str | None = None

    @property
    def up(self) -> bool:
        """True while it runs, or once a one-shot task finished."""
        return self.state is not TaskState.RESTARTING


class Supervisor:
    """Starts tasks, restarts those that fail, stops them all at the end."""

    def __init__(self, *, backoff: timedelta = timedelta(seconds=0.5), backoff_max: timedelta = timedelta(seconds=30)):
        self.backoff = backoff.total_seconds()
        self.backoff_max = backoff_max.total_seconds()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._status: dict[str, TaskStatus] = {}

    def spawn(self, name: str, run: Callable[[], Awaitable[None]], *, once: bool = False) -> None:
        """Run ``run()`` under supervision; a ``once`` task is done when it returns, others are restarted."""
        if name in self._tasks:
            raise ValueError(f"a task named {name!r} is supervised already")
        status = self._status[name] = TaskStatus(name)
        self._tasks[name] = asyncio.create_task(self._keep(run, status, once), name=f"supervised:{name}")

    def status(self) -> list[TaskStatus]:
        """Every task's state, in the order they were started."""
        return list(self._status.values())

    @property
    def healthy(self) -> bool:
        """True when no task waits to be restarted."""
        return all(status.up for status in self._status.values())

    async def stop(self) -> None:
        """Cancel every task and wait for them to end."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _keep(self, run: Callable[[], Awaitable[None]], status: TaskStatus, once: bool) -> None:
        delay = self.backoff
        while True:
            status.state = TaskState.RUNNING
            started = time.monotonic()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.backoff if time.monotonic() - started > STABLE_AFTER else delay
                status.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.exception("%s failed; restarting it in %.1f s", status.name, delay)
            else:
                if once:
                    status.state = TaskState.DONE
                    return
                delay = self.backoff if time.monotonic() - started > STABLE_AFTER else delay
                status.last_error = "returned"
                log.error("%s ended by itself; restarting it in %.1f s", status.name, delay)
            status.state = TaskState.RESTARTING
            status.restarts += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)
