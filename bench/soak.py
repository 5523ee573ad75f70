"""Soak: a million 4 KB messages (1.15) between two ``accesspoint serve`` processes on SQLite, power-loss durability.

The end-to-end benchmark's servers and load generator (``bench.e2e``), run in rounds of ``round_seconds`` with
``window`` messages in flight until ``messages`` are delivered. After each round: its msg/s and both servers' CPU
per message, their RSS, and the size of each store (database with its WAL, and files). Flat means the last rounds
run as fast as the first (rate within 10 %) and memory stops growing after the first rounds; the store's bytes per
message say what a million messages cost on disk (nothing is purged during a soak: retention is days).

``python -m bench.soak [--messages 1000000] [--round-seconds 60]``; ``python -m bench --only soak``. At 400 msg/s a
million take about 45 minutes and some 25 GB of disk for both stores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accesspoint.security.policy import Profile
from bench.e2e import PMODES, Load, access_points, phase, rss_mib

TARGET_FLAT = 0.90  # the last rounds' msg/s against the first rounds'
TARGET_RSS_GROWTH_MIB = 50  # after the first rounds


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def store_bytes(folder: Path) -> int:
    """Bytes under a server's storage folder: database, WAL, files."""
    return sum(path.stat().st_size for path in (folder / "data").rglob("*") if path.is_file())


def run(
    *,
    messages: int = 1_000_000,
    round_seconds: float = 60.0,
    window: int = 64,
    workers: int = 8,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Rounds until ``messages`` are delivered; each round's figures, printed as they come."""
    rounds: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    started = time.monotonic()
    result: dict[str, Any] = {"messages": messages, "window": window, "load_average_start": os.getloadavg()}
    try:
        with access_points(folder, workers=workers, durability="power-loss") as (sender, receiver):
            url = f"http://127.0.0.1:{sender.port}/api/v1/messages"
            pmode = PMODES[Profile.EDELIVERY_1_15]
            delivered = 0
            say(f"  {'round':>5} {'delivered':>10} {'msg/s':>7} {'CPU ms/msg':>10} {'RSS MiB':>13} {'store MiB':>13}")
            while delivered < messages:
                load = Load(url, sender.token, pmode, f"soak{len(rounds)}", round_seconds, sender.ledger, window=window)
                measured = phase(sender, receiver, load)
                delivered += measured["delivered"]
                sizes = [store_bytes(server.folder) for server in (sender, receiver)]
                row = {
                    "delivered_total": delivered,
                    "msg_per_s": measured["msg_per_s"],
                    "cpu_ms_per_msg": measured["cpu_ms_per_msg"],
                    "failed": measured["failed"],
                    "rss_mib": [rss_mib(sender.pid), rss_mib(receiver.pid)],
                    "store_bytes": sizes,
                    "load_average": measured["load_average"][0],
                }
                rounds.append(row)
                rss, mib = row["rss_mib"], [size / 2**20 for size in sizes]
                say(
                    f"  {len(rounds):>5} {delivered:>10,} {row['msg_per_s']:>7.1f} {row['cpu_ms_per_msg']:>10.2f}"
                    f" {rss[0]:>6.0f}/{rss[1]:<6.0f} {mib[0]:>6.0f}/{mib[1]:<6.0f}"
                )
    finally:
        subprocess.run(["rm", "-rf", str(folder)], check=False)
    result.update(rounds=rounds, seconds=time.monotonic() - started, load_average_end=os.getloadavg())
    result["summary"] = summarise(rounds)
    return result


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rate of the first and last tenth of the rounds (at least one each), RSS growth after them, bytes per message."""
    edge = max(1, len(rounds) // 10)
    first = sum(r["msg_per_s"] for r in rounds[:edge]) / edge
    last = sum(r["msg_per_s"] for r in rounds[-edge:]) / edge
    settled_rss = rounds[edge - 1]["rss_mib"]
    growth = max(end - begin for begin, end in zip(settled_rss, rounds[-1]["rss_mib"], strict=True))
    delivered = rounds[-1]["delivered_total"]
    return {
        "first_msg_per_s": first,
        "last_msg_per_s": last,
        "flat": last / first if first else float("nan"),
        "rss_growth_mib": growth,
        "store_bytes_per_message": [size / delivered for size in rounds[-1]["store_bytes"]],
        "failed": sum(r["failed"] for r in rounds),
    }


def print_summary(result: dict[str, Any], say: Callable[[str], None] = _say) -> None:
    """The closing lines: rate and memory flat or not, store size per message."""
    summary = result["summary"]
    per_message = summary["store_bytes_per_message"]
    say(
        f"Soak: {result['rounds'][-1]['delivered_total']:,} messages in {result['seconds'] / 60:.0f} min"
        f" ({summary['failed']} failed); load average {result['load_average_start'][0]:.1f} ->"
        f" {result['load_average_end'][0]:.1f}"
    )
    say(
        f"  msg/s first tenth {summary['first_msg_per_s']:.1f}, last tenth {summary['last_msg_per_s']:.1f}"
        f" ({summary['flat']:.2f}); RSS growth after the first tenth {summary['rss_growth_mib']:.0f} MiB; store"
        f" {per_message[0]:,.0f} / {per_message[1]:,.0f} bytes per message (sender / receiver)"
    )
    checks = [
        (f"rate flat (last >= {TARGET_FLAT:.0%} of first)", summary["flat"] >= TARGET_FLAT),
        (f"memory flat (< {TARGET_RSS_GROWTH_MIB} MiB growth)", summary["rss_growth_mib"] < TARGET_RSS_GROWTH_MIB),
    ]
    say("  targets: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks))


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.soak``."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--round-seconds", type=float, default=60.0)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)
    result = run(messages=args.messages, round_seconds=args.round_seconds, window=args.window)
    print_summary(result)


if __name__ == "__main__":
    main()
