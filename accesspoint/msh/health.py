"""Liveness and readiness: ``/healthz`` (and its old name ``/health``) and ``/readyz`` (the admin listener's
``/status`` is ``accesspoint.msh.status``).

``/healthz`` answers from the event loop and nothing else, so it says exactly that the loop is not blocked.
``/readyz`` says whether this instance can do its work: the database answers, its schema is at the newest
migration, every key's certificate is valid now and every supervised task runs (none waits to be restarted).
It answers 200 or 503 with each check's verdict, for load balancers and operators alike.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from accesspoint.msh.context import Context
from accesspoint.msh.supervisor import Supervisor
from accesspoint.store.db import alembic_config

CHECK_TIMEOUT = 2.0  # seconds the database may take to answer a readiness check


class Readiness:
    """The checks behind ``/readyz``."""

    def __init__(self, ctx: Context, supervisor: Supervisor) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self._head: str | None = None  # read on the first check: reading the migration scripts costs a start time

    async def head(self) -> str | None:
        """The newest migration the code ships."""
        if self._head is None:
            self._head = await asyncio.to_thread(_newest_migration)
        return self._head

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """Whether the instance is ready, and what each check found."""
        checks: dict[str, Any] = {}
        try:
            revision = await asyncio.wait_for(self.ctx.store.db.run(_revision), CHECK_TIMEOUT)
        except Exception as exc:  # whatever the driver raises, the answer is "not ready"
            checks["database"] = f"unavailable: {type(exc).__name__}: {exc}"[:300]
            checks["migrations"] = "unknown"
        else:
            checks["database"] = "ok"
            head = await self.head()
            checks["migrations"] = "ok" if revision == head else f"at {revision}, newest is {head}"
        checks["keys"] = self._keys()
        checks["tasks"] = {s.name: s.state.value for s in self.supervisor.status()}
        ready = all(checks[name] == "ok" for name in ("database", "migrations", "keys")) and self.supervisor.healthy
        return ready, checks

    def _keys(self) -> str:
        keys = self.ctx.settings.keys
        now = self.ctx.clock.now()
        for pair in (*keys.signing, *keys.decryption):
            certificate = pair.certificate
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                return f"the certificate {certificate.subject.rfc4514_string()} is not valid now"
        return "ok"


READINESS = web.AppKey("readiness", Readiness)


def _newest_migration() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def healthz(_request: web.Request) -> web.Response:
    """GET /healthz (and /health): the event loop answers."""
    return web.json_response({"ok": True})


async def readyz(request: web.Request) -> web.Response:
    """GET /readyz: 200 when the database, migrations, keys and every supervised task are up; else 503."""
    readiness = request.config_dict.get(READINESS)
    if readiness is None:
        return web.json_response({"ready": False, "checks": {"start": "not started yet"}}, status=503)
    ready, checks = await readiness.check()
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)
