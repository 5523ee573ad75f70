"""The P-Modes a running access point works under: loaded at start, re-read when the file changes.

Every component reads ``Agreements.current`` at the moment it decides, so a reload takes effect for the next
message without a restart; a file that no longer validates is logged and the previous version stays.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from pathlib import Path

from accesspoint.store import StoredMessage
from pmode import PModeSet, Route, load_if_changed, load_pmodes

log = logging.getLogger("accesspoint.msh")

FOREVER = timedelta(days=100 * 366)  # a P-Mode retention of "forever", as a retain_until the database can hold
RELOAD_INTERVAL = 2.0  # seconds between looks at the P-Mode file


class Agreements:
    """The current P-Mode set, the leg a stored message travels on and how long its evidence is kept."""

    def __init__(self, path: Path, *, evidence_retention: timedelta) -> None:
        self.path = path
        self.current: PModeSet = load_pmodes(path)  # PModeError stops the start
        self._evidence_retention = evidence_retention

    def route_of(self, message: StoredMessage) -> Route | None:
        """The P-Mode leg a stored message travels on (None when its P-Mode is gone)."""
        pmode = self.current.get(message.pmode_id or "")
        index = message.leg or 0
        if pmode is None or index >= len(pmode.legs):
            return None
        return Route(pmode, pmode.legs[index])

    def evidence_retention(self, route: Route | None) -> timedelta:
        """How long evidence is kept: the P-Mode's evidence retention, else the server's setting."""
        if route is None:
            return self._evidence_retention
        kept = route.pmode.retention.evidence
        return FOREVER if kept is None else kept

    async def watch(self) -> None:
        """Re-read the P-Mode file whenever it changes (a supervised task)."""
        while True:
            await asyncio.sleep(RELOAD_INTERVAL)
            await self.reload()

    async def reload(self) -> str | None:
        """Re-read the P-Mode file now if it changed (also an operator's button); the error when it does not
        validate (the previous version stays), else None."""
        reload = await asyncio.to_thread(load_if_changed, self.path, self.current)
        if reload.error is not None:
            log.error("P-Mode file %s not reloaded: %s", self.path, reload.error)
            return str(reload.error)
        if reload.changed:
            self.current = reload.pmodes
            log.info("P-Modes reloaded from %s", self.path)
        return None
