"""Outages at full size: the scenarios of tests/outages.py with 1,000 messages and a 10 s PostgreSQL outage.

- PostgreSQL stopped for 10 s a quarter into a stream of 1,000 submissions at 20/s between two access points,
  then started: every 202 delivered exactly once, every 503 stored nothing (then submitted again: 202).
- Redis stopped for 10 s and started empty, the same stream: every submission 202, delivered exactly once.
- Two sending instances on one PostgreSQL + Redis, 1,000 messages, the one delivering webhooks killed with an
  event on the wire: every receipt event arrives; an event arrives twice (same id) only if in flight at the kill.

Not timings: what is checked is that nothing is lost or doubled; the seconds are shown for scale.
``python -m bench.outages [--quick]`` runs it alone; ``python -m bench --only outages`` within ``make bench``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import outages, services


def run(*, quick: bool = False) -> dict[str, Any]:
    """Run the three scenarios; their reports."""
    messages, outage = (120, 3.0) if quick else (1000, 10.0)
    if services.missing_postgres() or services.missing_redis():
        return {"skipped": services.missing_postgres() or services.missing_redis()}
    result: dict[str, Any] = {"messages": messages, "outage_s": outage}
    with tempfile.TemporaryDirectory(prefix="bench-outages-") as folder:
        root = Path(folder)
        with services.postgres_server() as server, services.redis_server() as redis:
            result["postgresql"] = vars(
                outages.postgres_outage(root / "pg", server, messages=messages, rate=20, outage=outage)
            )
            result["redis"] = vars(
                outages.redis_restart(root / "redis", server, messages=messages, rate=20, outage=outage)
            )
            result["killed"] = vars(outages.instance_killed(root / "killed", server, redis.url(), messages=messages))
    return result


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table."""
    if "skipped" in result:
        say(f"outages: skipped ({result['skipped']})")
        return
    say(f"outages: {result['messages']} messages, outage {result['outage_s']:.0f} s (nothing lost or doubled)")
    for name in ("postgresql", "redis", "killed"):
        report = result[name]
        shown = {k: v for k, v in report.items() if k != "notes" and v}
        say(
            f"  {name:10} "
            + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        )
        for note in report.get("notes", []):
            say(f"             {note}")


def main(argv: list[str] | None = None) -> None:
    """python -m bench.outages."""
    parser = argparse.ArgumentParser(prog="python -m bench.outages", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="120 messages and a 3 s outage")
    args = parser.parse_args(argv)
    print_result(run(quick=args.quick), lambda text: print(text, file=sys.stdout, flush=True))


if __name__ == "__main__":
    main()
