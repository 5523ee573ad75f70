"""A mass mailing end to end: FaR's checking rate, letters/s into mailboxes, CPU per letter, the router's memory.

The demo's federation (``accesspoint.demo_federation``), every part its own process on loopback: FaR with
``--registered`` recipients (1,000,000 by default: the mailing's recipients and as many more), the Swedish router
and two operators, each an access point + ``accesspoint operator serve`` with a mailbox for every other mailing
recipient (one in a hundred has none: FaR refuses it). A Swedish agency connected through the router posts one
mailing of ``--recipients`` (100,000 by default) as JSON lines to ``POST /api/v1/mailings``; the router checks
them in FaR in batches of 1,000 and sends each letter (an SBDH around the content) to its operator, which files
it and answers with its signed notification.

Figures: FaR's checking rate (recipients per second of FaR calls, as the router measured them), letters per
second from the POST to the last operator answer (``delivered-to-mailbox``), CPU ms per letter summed over every
process of the federation, and the router's RSS sampled every second (memory flat: max - min).

With ``--kill-after N`` the router is killed (SIGKILL) once it has made N letters and started again on its
store; then the mailboxes are read: every reachable recipient exactly one letter, none for the refused, the
mailing's counts adding up (``make bench`` does this on a second mailing of 10,000, killed after 2,000 letters).

``python -m bench.mailing [--recipients 100000] [--registered 1000000] [--rate 2000] [--kill-after N]``, or
``python -m bench --only mailing``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accesspoint import demo_federation as fed
from accesspoint.keys_cli import generate_keys
from bench.e2e import cpu_seconds, rss_mib
from bench.routing import per_letter, process_cpu, say_split

TARGET_FAR_RATE = 50_000.0


def _import_more(federation: fed.Federation, registered: int) -> float:
    """Register recipients beyond the mailing's in FaR (``far import``); the seconds it took."""
    extra = fed.mailing_recipients(registered)[len(federation.mailing) :]
    if not extra:
        return 0.0
    csv = federation.far.folder / "more.csv"
    with csv.open("w") as out:
        out.write("recipient,status,operator\n")
        for index, recipient in enumerate(extra):
            out.write(f"{recipient},secure,{fed.OPERATORS[index % 2].orgnr}\n")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "accesspoint", "far", "import", str(csv), "--config", str(federation.far.argv[-1])],
        capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"far import failed: {done.stdout} {done.stderr}")
    return time.monotonic() - started


def _post(federation: fed.Federation, file: Path) -> dict[str, Any]:
    sweden = federation.sweden
    with file.open("rb") as body:
        request = urllib.request.Request(sweden.url + "/api/v1/mailings", data=body, method="POST")  # noqa: S310
        request.add_header("Authorization", f"Bearer {sweden.token}")
        request.add_header("Content-Type", "application/x-ndjson")
        request.add_header("Content-Length", str(file.stat().st_size))
        with urllib.request.urlopen(request, timeout=3600) as response:  # noqa: S310 (loopback)
            document: dict[str, Any] = json.loads(response.read())
            return document


def _drive(
    federation: fed.Federation, folder: Path, *, rate: float, timeout: float, kill_after: int | None
) -> dict[str, Any]:
    recipients = federation.mailing
    file = folder / "mailing.jsonl"
    metadata = {
        "id": "bench",
        "sender": fed.SWEDISH_AGENCY,
        "action": fed.ACTION,
        "rate": rate,
        "payloads": [
            {"content_id": "letter@se", "mime_type": "application/xml",
             "data": base64.b64encode(fed.MAILING_LETTER).decode()}
        ],
    }  # fmt: skip
    with file.open("w") as out:
        out.write(json.dumps(metadata) + "\n")
        for recipient in recipients:
            out.write(f'"{recipient}"\n')
    sweden = federation.sweden
    cpu_from = process_cpu(federation.all)
    started = time.monotonic()
    answer = _post(federation, file)
    posted = time.monotonic() - started
    mailbox_count = sum(1 for index in range(len(recipients)) if fed.registered(index))
    far_cpu_from = cpu_seconds(federation.far.pid)
    rss: list[float] = []
    loads: list[float] = []
    far_load: float | None = None  # the load average when the router had checked every recipient in FaR
    far_cpu = 0.0
    progress: dict[str, Any] = {}
    killed: dict[str, Any] = {}
    cpu_of_the_killed = 0.0
    while time.monotonic() - started < timeout:
        rss.append(rss_mib(sweden.pid))
        loads.append(os.getloadavg()[0])
        progress = sweden.api("GET", "/api/v1/mailings/bench")[1]
        if far_load is None and progress.get("far", {}).get("checked", 0) >= len(recipients):
            far_load = loads[-1]
            far_cpu = cpu_seconds(federation.far.pid) - far_cpu_from
        answered = progress.get("end_to_end", {}).get("delivered-to-mailbox", 0)
        if progress.get("state") == "completed" and (answered >= mailbox_count or killed):
            break  # after a kill, the mailboxes themselves are counted (below)
        letters = progress.get("letters", {})
        if kill_after is not None and not killed and sum(letters.values()) >= kill_after:
            cpu_of_the_killed = cpu_seconds(sweden.pid)
            down = time.monotonic()
            sweden.kill_and_restart()  # SIGKILL with letters on their way, then the same store again
            killed = {"letters": letters, "restart_seconds": time.monotonic() - down}
        time.sleep(1.0)
    in_mailboxes = progress.get("end_to_end", {}).get("delivered-to-mailbox", 0)
    far = progress.get("far", {})
    if killed:
        # The letters in the mailboxes themselves: one for every reachable recipient, none twice, none astray.
        mailboxes = fed.check_mailboxes(federation, timeout=300)
        in_mailboxes = mailboxes.reachable - len(mailboxes.missing)
        killed.update(
            reachable=mailboxes.reachable,
            missing=len(mailboxes.missing),
            twice=len(mailboxes.twice),
            strays=len(mailboxes.strays),
            exactly_once=mailboxes.exactly_once,
            counts_add_up=sum(progress.get("recipients", {}).values()) == len(recipients)
            and progress.get("recipients", {}).get("queued") == mailboxes.reachable
            and progress.get("letters") == {"delivered": mailboxes.reachable},
        )
        progress = sweden.api("GET", "/api/v1/mailings/bench")[1]  # with the operators' answers come meanwhile
    elapsed = time.monotonic() - started
    cpu_to = process_cpu(federation.all)
    cpu_to[sweden.name] += cpu_of_the_killed  # the router restarted: its first process's CPU as well
    cpu = sum(cpu_to.values()) - sum(cpu_from.values())
    return {
        "recipients": len(recipients),
        "accepted": answer.get("accepted"),
        "post_seconds": posted,
        "completed": progress.get("state") == "completed",
        "counts": {key: progress.get(key) for key in ("recipients", "letters", "end_to_end")},
        "far_checked": far.get("checked"),
        "far_recipients_per_s": far.get("recipients_per_second"),
        # FaR's process CPU until the last recipient was checked (its only work then: the mailing's batches).
        "far_cpu_us_per_recipient": far_cpu * 1e6 / len(recipients) if far_load is not None else None,
        "far_load_average": far_load,
        "seconds": elapsed,
        "letters_in_mailboxes": in_mailboxes,
        "letters_per_s": in_mailboxes / elapsed,
        "cpu_ms_per_letter": cpu * 1000 / max(in_mailboxes, 1),
        "cpu_ms_per_letter_by_process": per_letter(cpu_from, cpu_to, in_mailboxes),
        "router_rss_mib": {
            "first": rss[0] if rss else None,
            "min": min(rss, default=0),
            "max": max(rss, default=0),
            "last": rss[-1] if rss else None,
        },
        "load_average": {"min": min(loads, default=0.0), "max": max(loads, default=0.0)},
        "kill_9": killed or None,
    }


def run(
    *,
    recipients: int = 100_000,
    registered: int = 1_000_000,
    rate: float = 2000,
    timeout: float = 6 * 3600,
    kill_after: int | None = None,
) -> dict[str, Any]:
    """Start the federation, register, mail, stop; the figures. With ``kill_after``, the router is killed (SIGKILL)
    once it has made that many letters and started again, and the mailboxes are checked: exactly one letter each."""
    with tempfile.TemporaryDirectory(prefix="bench-mailing-") as name:
        folder = Path(name)
        pki = generate_keys(folder / "keys", fed.PARTY_IDS, days=1)
        federation = fed.build(folder, pki, mailing=recipients)
        try:
            fed.start(federation, pki)
            import_seconds = _import_more(federation, registered)
            result = _drive(federation, folder, rate=rate, timeout=timeout, kill_after=kill_after)
        finally:
            codes = fed.stop(federation)
    result.update(registered=max(registered, recipients), import_seconds=import_seconds, exit_codes=codes)
    return result


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table."""
    say(
        f"mailing: {result['recipients']:,} recipients ({result['registered']:,} registered in FaR) from a Swedish "
        "agency through the router to two operators' mailboxes (the demo's federation, SQLite, AS4 1.15)"
    )
    far_rate = result["far_recipients_per_s"] or 0.0
    if result["far_checked"]:
        checked = result["far_checked"]
        cpu = result.get("far_cpu_us_per_recipient")
        load = result.get("far_load_average")
        say(
            f"  FaR checks {far_rate:12,.0f} recipients/s ({checked:,} checked, batches of 1,000, 4 at once; FaR's CPU "
            + (f"{cpu:.1f} us per recipient, load average {load:.1f} then)" if cpu is not None else "not measured)")
        )
    else:  # the router counts FaR's calls since it started: after a kill, none
        say("  FaR checks: not measured (all before the router's restart)")
    say(
        f"  letters    {result['letters_per_s']:12.1f} /s into mailboxes end to end ({result['letters_in_mailboxes']:,}"
        f" in {result['seconds']:.0f} s; upload {result['post_seconds']:.1f} s); completed: {result['completed']}"
    )
    rss = result["router_rss_mib"]
    say(
        f"  CPU {result['cpu_ms_per_letter']:.1f} ms per letter across every process; router RSS "
        f"{rss['min']:.0f}-{rss['max']:.0f} MiB (first {rss['first']:.0f}, last {rss['last']:.0f}); load average "
        f"{result['load_average']['min']:.1f}-{result['load_average']['max']:.1f} on {os.cpu_count()} CPUs"
    )
    say_split(result["cpu_ms_per_letter_by_process"], say)
    say(f"  counts: {result['counts']}")
    killed = result.get("kill_9")
    if killed:
        say(
            f"  kill -9 of the router with {sum(killed['letters'].values()):,} letters made ({killed['letters']}), "
            f"back in {killed['restart_seconds']:.1f} s: {killed['reachable']:,} reachable recipients, missing "
            f"{killed['missing']}, twice {killed['twice']}, letters to refused recipients {killed['strays']}; "
            f"exactly once: {'yes' if killed['exactly_once'] else 'NO'}; counts add up: "
            f"{'yes' if killed['counts_add_up'] else 'NO'}"
        )
    if result["far_checked"]:
        ok = far_rate >= TARGET_FAR_RATE
        say(f"  target: FaR >= {TARGET_FAR_RATE:,.0f} recipients/s: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.mailing``."""
    parser = argparse.ArgumentParser(prog="python -m bench.mailing", description=__doc__)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--registered", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--timeout", type=float, default=6 * 3600)
    parser.add_argument("--kill-after", type=int, help="kill -9 the router once it made this many letters")
    args = parser.parse_args(argv)
    result = run(**vars(args))  # the options are run's parameters
    print_result(result, _say)
    _say(json.dumps(result, default=str))


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
