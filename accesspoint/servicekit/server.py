"""Running a service: aiohttp applications on their addresses until SIGTERM or SIGINT, then a graceful stop.

``run([Listener(app, host, port, tls)], started=…)`` is what ``accesspoint far|smp|operator serve`` do: start
every site (an address that cannot be bound stops those already started and raises OSError), call ``started``,
wait for a signal, then stop taking connections, let requests in flight finish (up to ``grace``) and run the
applications' cleanup contexts (closing databases and clients) in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Listener:
    """One application served at one address (plain HTTP, or HTTPS with ``tls``)."""

    app: web.Application
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """The base URL it answers at."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"


class Running:
    """Started sites; ``stop()`` stops them gracefully (new connections refused, requests in flight finished)."""

    def __init__(self, runners: list[web.AppRunner]) -> None:
        self.runners = runners

    async def stop(self) -> None:
        """Stop every site, last started first, and run the applications' cleanup."""
        while self.runners:
            await self.runners.pop().cleanup()


async def start(listeners: Sequence[Listener], *, grace: float = GRACE_SECONDS) -> Running:
    """Start every listener (one runner per application, one site per address); OSError when one cannot bind."""
    runners: dict[int, web.AppRunner] = {}
    running = Running([])
    try:
        for listener in listeners:
            runner = runners.get(id(listener.app))
            if runner is None:
                runner = web.AppRunner(listener.app, access_log=None, handle_signals=False, shutdown_timeout=grace)
                await runner.setup()
                runners[id(listener.app)] = runner
                running.runners.append(runner)
            await web.TCPSite(runner, listener.host, listener.port, ssl_context=listener.tls).start()
    except BaseException:
        await running.stop()
        raise
    return running


async def serve(
    listeners: Sequence[Listener],
    *,
    started: Callable[[], None] | None = None,
    stop: asyncio.Event | None = None,
    grace: float = GRACE_SECONDS,
) -> None:
    """Serve until SIGTERM or SIGINT (or until ``stop`` is set), then stop gracefully."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    try:
        running = await start(listeners, grace=grace)
        try:
            if started is not None:
                started()
            await stop.wait()
        finally:
            await running.stop()
    finally:
        for signum in STOP_SIGNALS:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)


def run(
    listeners: Sequence[Listener], *, started: Callable[[], None] | None = None, grace: float = GRACE_SECONDS
) -> None:
    """Serve in a new event loop until SIGTERM or SIGINT; OSError when an address cannot be bound."""
    asyncio.run(serve(listeners, started=started, grace=grace))
