"""The console on its own listener beside a running access point (``accesspoint serve --console FILE``), and its
user administration from the command line (``accesspoint console-user``): the first admin has to come from
somewhere other than the console itself."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from accesspoint.console.accounts import Accounts, Role, User
from accesspoint.console.app import create_console
from accesspoint.console.audit import Audit
from accesspoint.console.db import ConsoleDb
from accesspoint.console.settings import ConsoleSettings, load_settings
from accesspoint.servicekit.tls import server_context
from accesspoint.store import SystemClock

log = logging.getLogger("accesspoint.console")
RUNNER = web.AppKey("console_runner", web.AppRunner)


def beside(access_point: web.Application, settings: ConsoleSettings) -> None:
    """Serve the console on ``settings.host:port`` once the access point has started (its context is the
    console's), and stop it before the access point closes its context."""
    tls = None if settings.tls is None else server_context(settings.tls)  # a bad certificate stops the start now

    async def start(app: web.Application) -> None:
        runner = web.AppRunner(create_console(settings, app), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.host, settings.port, ssl_context=tls).start()
        app[RUNNER] = runner
        scheme = "https" if tls else "http"
        log.warning("console listening on %s://%s:%s", scheme, settings.host, settings.port)

    async def stop(app: web.Application) -> None:
        if RUNNER in app:
            await app[RUNNER].cleanup()

    # on_startup runs after the access point's own start (its cleanup context comes first), on_shutdown before
    # its cleanup: the console never sees a closed context.
    access_point.on_startup.append(start)
    access_point.on_shutdown.append(stop)


def beside_from(path: Path) -> Callable[[web.Application], None]:
    """``beside`` with the settings in ``path`` (SettingsError naming file and field, before anything starts)."""
    return functools.partial(beside, settings=load_settings(path))


async def set_user(settings: ConsoleSettings, storage: Path, name: str, password: str, role: Role) -> User:
    """Create a console user, or give an existing one a new password and role (ValueError for a weak one);
    audited as done from the command line."""
    db = await ConsoleDb.open(settings.database_url(storage))
    clock = SystemClock()
    try:
        user = await Accounts(db, settings, clock).add_user(name, password, role)
        await Audit(db, clock).record("command-line", "user-set", target=name, role=role.value)
        return user
    finally:
        await db.close()
