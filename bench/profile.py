"""Where an end-to-end message's CPU goes: both access points and the load in this one process, profiled.

``bench.e2e`` measures two ``accesspoint serve`` processes; on a shared machine their msg/s, and less so their CPU
per message, swing with everyone else's load, and py-spy's samples count time a thread waited for a core. This
runs the same pair (``bench.e2e``'s settings, P-Modes and development PKI, SQLite, ``power-loss``, JSON logs at
INFO into a file and the garbage collector set as ``accesspoint serve`` sets them) as two aiohttp applications in
one event loop, with a closed loop of ``window`` JSON submissions in flight through the sender's REST API, and reports:

- CPU per delivered message of this process (user and system, every thread: both servers, their store writers
  and the load's small client), the part of it spent on the event loop's thread (what one core bounds), with
  the context switches per message;
- with ``--top N``: the functions with the most own CPU time on the event-loop thread (cProfile timed by that
  thread's CPU clock, so time spent waiting for a core does not count; cProfile adds its own cost per Python call,
  so the Python share reads larger than it is). ``--output FILE`` keeps the pstats for ``python -m pstats``.

``python -m bench.profile [--profile 1.15|2.0] [--messages 600] [--window 64] [--size 4096] [--top 40]
[--output FILE]``. A diagnostic, not part of ``make bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import json
import os
import pstats
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint.demo import PARTIES, RECEIVER, SENDER
from accesspoint.demo_common import free_port
from accesspoint.keys_cli import generate_keys
from accesspoint.msh.app import create_app, settle_collector
from accesspoint.msh.config import load_config
from accesspoint.security.policy import Profile
from accesspoint.servicekit.logs import configure_logging
from bench.e2e import LABELS, PMODES, Server
from bench.ledger import Ledger, open_ledger

WARM_UP = 100  # messages before measuring (caches, pools, the first batches)


@contextlib.asynccontextmanager
async def serving(folder: Path) -> AsyncIterator[Server]:
    """Sweden's and Norway's access points served from this loop; the sender's ``Server`` (port, token, ledger)."""
    pki = generate_keys(folder / "keys", PARTIES)
    ports = {name: free_port() for name in PARTIES}
    settings = {"send": {"workers": 8, "timeout": "30s", "lease": "2m"}, "durability": "power-loss"}
    servers = {name: Server(name, folder / name, pki, ports, settings) for name in PARTIES}
    runners: list[web.AppRunner] = []
    try:
        for name in (RECEIVER, SENDER):
            runner = web.AppRunner(create_app(load_config(servers[name].folder / "server.yaml")), access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", servers[name].port).start()
        await settle_collector(runners[-1].app)  # as `accesspoint serve` does once started
        yield servers[SENDER]
    finally:
        for runner in reversed(runners):
            await runner.cleanup()


class ClosedLoop:
    """Keeps ``window`` submissions in flight until ``count`` of them are settled (per the sender's database)."""

    def __init__(self, http: aiohttp.ClientSession, sender: Server, ledger: Ledger, pmode: str, size: int) -> None:
        self.http = http
        self.url = f"http://127.0.0.1:{sender.port}/api/v1/messages"
        self.ledger = ledger
        self.pmode = pmode
        text = os.urandom(size // 2 + 1).hex().encode()[: size - len(b"<letter></letter>")]
        self.data = base64.b64encode(b"<letter>" + text + b"</letter>").decode()

    async def run(self, count: int, window: int, prefix: str) -> None:
        first = await self.ledger.last_id()
        tasks: set[asyncio.Task[None]] = set()
        launched = 0
        while (settled := await self.ledger.settled(first)) < count:
            while launched < count and launched - settled < window:
                task = asyncio.create_task(self._submit(f"{prefix}-{launched}@bench"))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                launched += 1
            await asyncio.sleep(0.01)

    async def _submit(self, message_id: str) -> None:
        document = {
            "pmode": self.pmode,
            "message_id": message_id,
            "properties": {"originalSender": "urn:se:bench", "finalRecipient": "urn:no:bench"},
            "payloads": [{"content_id": "letter@bench", "mime_type": "application/xml", "data": self.data}],
        }
        async with self.http.post(self.url, data=json.dumps(document)) as response:
            await response.read()
            if response.status != 202:
                raise RuntimeError(f"submission refused: HTTP {response.status}")


async def measure(
    profile: Profile, *, messages: int, window: int, size: int, profiler: cProfile.Profile | None
) -> dict[str, Any]:
    """Warm up, then ``messages`` through the pair: CPU, context switches and wall time per message."""
    folder = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        with (folder / "servers.log").open("w") as log:
            configure_logging(20, stream=log)  # INFO, JSON: what `accesspoint serve` writes
            async with serving(folder) as sender:
                ledger = await open_ledger(sender.ledger)
                headers = {"Authorization": f"Bearer {sender.token}", "Content-Type": "application/json"}
                async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=32)) as http:
                    load = ClosedLoop(http, sender, ledger, PMODES[profile], size)
                    await load.run(WARM_UP, window, "warm")
                    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                    loop_before = time.thread_time()
                    if profiler is not None:
                        profiler.enable()
                    await load.run(messages, window, "measured")
                    if profiler is not None:
                        profiler.disable()
                    loop_ms = (time.thread_time() - loop_before) * 1000 / messages
                    after, ended = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
                await ledger.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "profile": LABELS[profile],
        "messages": messages,
        "payload_bytes": size,
        "user_ms": (after.ru_utime - before.ru_utime) * 1000 / messages,
        "system_ms": (after.ru_stime - before.ru_stime) * 1000 / messages,
        "loop_ms": loop_ms,
        "switches": (after.ru_nvcsw - before.ru_nvcsw + after.ru_nivcsw - before.ru_nivcsw) / messages,
        "msg_per_s": messages / (ended - started),
        "load_average": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.profile``."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--profile", choices=("1.15", "2.0"), default="1.15")
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--size", type=int, default=4096, help="payload bytes")
    parser.add_argument("--top", type=int, default=0, help="profile, and print the N functions with most own CPU")
    parser.add_argument("--output", type=Path, help="keep the profile (pstats) in this file")
    args = parser.parse_args(argv)
    profile = next(p for p in Profile if LABELS[p] == args.profile)
    profiler = cProfile.Profile(time.thread_time) if args.top or args.output else None
    result = asyncio.run(
        measure(profile, messages=args.messages, window=args.window, size=args.size, profiler=profiler)
    )
    sys.stdout.write(
        f"{result['profile']}, {result['payload_bytes']} B payloads, {result['messages']} messages in one process:"
        f" CPU {result['user_ms'] + result['system_ms']:.2f} ms per message (user {result['user_ms']:.2f}, system"
        f" {result['system_ms']:.2f}; on the event loop's thread {result['loop_ms']:.2f}),"
        f" {result['switches']:.1f} context switches per message, {result['msg_per_s']:.1f} msg/s"
        f"{' (profiled)' if profiler else ''}; load average {result['load_average']:.1f}\n"
    )
    if profiler is not None and args.output is not None:
        profiler.dump_stats(args.output)
    if profiler is not None and args.top:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(args.top)


if __name__ == "__main__":
    main()
