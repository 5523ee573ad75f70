"""Routed end to end: letters/s from a Nordic sender to a Swedish mailbox with the operator's signed receipt back.

The demo's federation (``accesspoint.demo_federation``), every part its own process on loopback: FaR, the Nordic
sender's access point, the Swedish access point (the router: FaR before each receipt, then forwarding), two
operators each an access point + ``accesspoint operator serve``. SQLite everywhere, eDelivery AS4 1.15 (RSA), a
small SBD letter (about 1 KB) alternately to a mailbox at each operator.

One message is: submit at the sender (REST) -> AS4 to the router -> FaR -> AS4 to the operator's access point
-> webhook -> the operator checks it, files it in the mailbox, signs a DeliveryNotification -> AS4 reply to the
router -> relayed to the sender -> verified there with the operator's certificate and recorded
(``end_to_end``). The sender's ``end-to-end-receipt`` webhook, to a listener in this process, marks it done.

A closed loop keeps ``window`` letters in flight for ``seconds`` after a warm-up; messages/s = letters whose
verified receipt was recorded in the measured window, per second; latency = submit (this process's clock,
before the POST) -> the sender's ``recorded_at`` (same machine clock), p50 / p99.

``python -m bench.routing [--quick] [--seconds 20] [--window 16]``, or ``python -m bench --only routing``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint import demo_federation as fed
from accesspoint.demo_common import Child, free_port
from accesspoint.keys_cli import generate_keys
from bench.e2e import cpu_seconds

TARGET_LETTERS_S = 80.0
TARGET_CPU_MS = 20.0
SECRET = "bench-routing-webhook-secret-0123"  # noqa: S105 (a loopback webhook of a throw-away run)


def process_cpu(children: list[Child]) -> dict[str, float]:
    """CPU seconds so far of each process of the federation, by name."""
    return {child.name: cpu_seconds(child.pid) for child in children}


def per_letter(before: dict[str, float], after: dict[str, float], letters: int) -> dict[str, float]:
    """CPU ms per letter of each process between two ``process_cpu`` readings: where a letter's CPU goes (FaR,
    each access point, each operator's AP and its ``operator serve``)."""
    return {name: (spent - before.get(name, 0.0)) * 1000 / max(letters, 1) for name, spent in after.items()}


def idle_cpu(children: list[Child], seconds: float) -> dict[str, float]:
    """CPU ms per second of each process while the federation is up with nothing to do (pollers, timers, sweeps):
    the fixed cost a letter's share of depends on the rate."""
    before = process_cpu(children)
    time.sleep(seconds)
    after = process_cpu(children)
    return {name: (spent - before.get(name, 0.0)) * 1000 / seconds for name, spent in after.items()}


def say_split(split: dict[str, float], say: Callable[[str], None]) -> None:
    """The split by process, the largest first."""
    ordered = sorted(split.items(), key=lambda item: -item[1])
    say("  CPU ms per letter by process: " + ", ".join(f"{name} {ms:.1f}" for name, ms in ordered))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def _drive(
    federation: fed.Federation, port: int, *, seconds: float, warmup: float, window: int
) -> dict[str, Any]:
    submitted: dict[str, datetime] = {}
    done: dict[str, tuple[datetime, str]] = {}
    slots = asyncio.Semaphore(window)

    async def event(request: web.Request) -> web.Response:
        document = json.loads(await request.read())
        if document.get("event") == "end-to-end-receipt":
            data = document["data"]
            if data["message_id"] in submitted and data["message_id"] not in done:
                recorded = datetime.fromisoformat(data["end_to_end"]["recorded_at"])
                done[data["message_id"]] = (recorded, data["end_to_end"]["status"])
                slots.release()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/events", event)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    headers = {"Authorization": f"Bearer {federation.nordic.token}"}
    letters = [fed.LETTERS[0], fed.LETTERS[1]]  # a mailbox at each operator
    started = time.monotonic()
    measured_from = datetime.now(UTC).timestamp() + warmup
    cpu_from: dict[str, float] | None = None
    try:
        async with aiohttp.ClientSession(headers=headers) as session:
            number = 0
            while time.monotonic() - started < warmup + seconds:
                if cpu_from is None and time.monotonic() - started >= warmup:
                    cpu_from = process_cpu(federation.all)
                await slots.acquire()
                letter = replace(letters[number % 2], message_id=f"bench-{number}@nordic")
                body = fed.submission(letter)
                submitted[letter.message_id] = datetime.now(UTC)
                async with session.post(f"{federation.nordic.url}/api/v1/messages", json=body) as response:
                    if response.status != 202:
                        raise RuntimeError(f"submission refused: HTTP {response.status} {await response.text()}")
                number += 1
            ended = datetime.now(UTC).timestamp()
            cpu_by_process = process_cpu(federation.all)
            cpu = sum(cpu_by_process.values()) - sum((cpu_from or {}).values())
    finally:
        await runner.cleanup()
    measured = {
        message_id: (recorded, status)
        for message_id, (recorded, status) in done.items()
        if measured_from <= recorded.timestamp() <= ended
    }
    latencies = [(recorded - submitted[m]).total_seconds() * 1000 for m, (recorded, _) in measured.items()]
    return {
        "seconds": seconds,
        "warmup": warmup,
        "window": window,
        "submitted": len(submitted),
        "answered": len(done),
        "delivered_to_mailbox": sum(1 for _, status in done.values() if status == "delivered-to-mailbox"),
        "measured": len(measured),
        "messages_per_s": len(measured) / (ended - measured_from),
        "p50_ms": _percentile(latencies, 0.50),
        "p99_ms": _percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        # Every process of the federation (FaR, SMP, the access points, the operators) over the measured window,
        # per letter answered in it: a close estimate in a closed loop that runs as fast as it can.
        "cpu_ms_per_letter": cpu * 1000 / max(len(measured), 1),
        "cpu_ms_per_letter_by_process": per_letter(cpu_from or {}, cpu_by_process, len(measured)),
        "load_average": os.getloadavg()[0],
    }


def run(
    *, quick: bool = False, seconds: float | None = None, window: int = 16, idle: float | None = None
) -> dict[str, Any]:
    """Start the federation, measure it idle, drive it, stop it; the figures."""
    seconds = seconds if seconds is not None else (5.0 if quick else 20.0)
    warmup = 2.0 if quick else 5.0
    idle = idle if idle is not None else (2.0 if quick else 10.0)
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as folder:
        pki = generate_keys(Path(folder) / "keys", fed.PARTY_IDS, days=1)
        port = free_port()
        hook = {
            "url": f"http://127.0.0.1:{port}/events",
            "events": ["end-to-end-receipt"],
            "secret": SECRET,
            "backoff": "200ms",
        }
        federation = fed.build(Path(folder), pki, nordic_settings={"webhooks": [hook]})
        try:
            fed.start(federation, pki)
            time.sleep(1.0)  # the start's own work (migrations, first rounds) is not idle cost
            idle_by_process = idle_cpu(federation.all, idle) if idle > 0 else {}
            result = asyncio.run(_drive(federation, port, seconds=seconds, warmup=warmup, window=window))
            result["idle_ms_per_s_by_process"] = idle_by_process
        finally:
            codes = fed.stop(federation)
    result["exit_codes"] = codes
    return result


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table."""
    say(
        "routing: Nordic sender AP -> Swedish router AP (FaR) -> operator AP + operator serve -> mailbox, signed "
        "receipt back and verified at the sender (the demo's federation, SQLite, 1.15, ~1 KB SBD)"
    )
    say(
        f"  {result['messages_per_s']:8.1f} messages/s end to end with the receipt back   "
        f"p50 {result['p50_ms']:.0f} ms   p99 {result['p99_ms']:.0f} ms   max {result['max_ms']:.0f} ms   "
        f"(window {result['window']}, {result['measured']} measured in {result['seconds']:.0f} s after "
        f"{result['warmup']:.0f} s warm-up; {result['answered']}/{result['submitted']} answered, "
        f"{result['delivered_to_mailbox']} delivered-to-mailbox)"
    )
    say(
        f"  CPU {result['cpu_ms_per_letter']:.1f} ms per letter across every process of the federation; load average"
        f" {result['load_average']:.1f} ({os.cpu_count()} CPUs; letters/s stretch with the load, CPU much less)"
    )
    say_split(result["cpu_ms_per_letter_by_process"], say)
    idle = result.get("idle_ms_per_s_by_process") or {}
    if idle:
        total = sum(idle.values())
        share = total / max(result["messages_per_s"], 1e-9)
        say(
            f"  idle (up, no letters): {total:.1f} ms CPU per second in all, {share:.1f} ms of each letter at this "
            "rate: " + ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(idle.items(), key=lambda i: -i[1]) if ms)
        )
    checks = [
        (f">= {TARGET_LETTERS_S:.0f} letters/s", result["messages_per_s"] >= TARGET_LETTERS_S),
        (f"<= {TARGET_CPU_MS:.0f} ms CPU per letter", result["cpu_ms_per_letter"] <= TARGET_CPU_MS),
    ]
    say("  targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.routing``."""
    parser = argparse.ArgumentParser(prog="python -m bench.routing", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--idle", type=float, help="seconds the federation is measured idle first (0: not at all)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, seconds=args.seconds, window=args.window, idle=args.idle)
    print_result(result, lambda text: sys.stdout.write(text + "\n"))


if __name__ == "__main__":
    main()
