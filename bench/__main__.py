"""``make bench`` = ``python -m bench``: run every benchmark, print a table, write JSON to bench/results/."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lxml import etree

from bench import console as console_bench
from bench import e2e as e2e_bench
from bench import far as far_bench
from bench import far_check as far_check_bench
from bench import holder_crypto as holder_crypto_bench
from bench import holders as holders_bench
from bench import large_letter as large_letter_bench
from bench import loop as loop_bench
from bench import mailing as mailing_bench
from bench import routing as routing_bench
from bench import security as security_bench
from bench import small
from bench import smp as smp_bench
from bench import soak as soak_bench
from bench import store as store_bench
from bench.fixtures import GIB, MIB

RESULTS = Path(__file__).resolve().parent / "results"


def _say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _size(value: str) -> int:
    """``64M``, ``1G``, ``256MiB`` or a plain number of bytes."""
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    units = {"K": 1024, "M": MIB, "G": GIB}
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _human(size: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB)):
        if size >= scale and size % scale == 0:
            return f"{size // scale} {unit}"
    return f"{size} B"


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=10
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "lxml": ".".join(map(str, etree.LXML_VERSION)),
        "libxml2": ".".join(map(str, etree.LIBXML_VERSION)),
        "commit": commit or None,
    }


def _stream_once(size: int, *, gzip: bool, baseline: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.stream", "--size", str(size)]
    command += ["--gzip"] * gzip + ["--baseline"] * baseline
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=RESULTS.parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_stream(size: int, *, gzip: bool, repeats: int) -> dict[str, Any]:
    """Pipeline and baseline, each in fresh processes, alternating; median MB/s, highest peak RSS."""
    pipeline = []
    baseline = []
    for _ in range(repeats):
        baseline.append(_stream_once(size, gzip=gzip, baseline=True))
        pipeline.append(_stream_once(size, gzip=gzip, baseline=False))
    digests = {run["sha256"] for run in pipeline + baseline}
    if len(digests) != 1:
        raise AssertionError(f"sha256 differs between runs of {_human(size)} gzip={gzip}: {digests}")
    mb_s = statistics.median(run["mb_per_s"] for run in pipeline)
    base_mb_s = statistics.median(run["mb_per_s"] for run in baseline)
    return {
        "size": size,
        "gzip": gzip,
        "repeats": repeats,
        "sha256": digests.pop(),
        "wire_bytes": pipeline[0]["wire_bytes"],
        "mb_per_s": mb_s,
        "baseline_mb_per_s": base_mb_s,
        "ratio": mb_s / base_mb_s,
        "peak_rss_mib": max(run["peak_rss_kib"] for run in pipeline) / 1024,
        "start_rss_mib": max(run["rss_start_kib"] for run in pipeline) / 1024,
        "baseline_peak_rss_mib": max(run["peak_rss_kib"] for run in baseline) / 1024,
        "runs": pipeline,
        "baseline_runs": baseline,
    }


def _print_small(result: dict[str, Any]) -> None:
    _say(
        f"4 KB user message: envelope {result['envelope_bytes']} B + gzip attachment {result['attachment_bytes']} B"
        f" = {result['wire_bytes']} B on the wire; {result['repeats']} rounds of {result['seconds_per_round']} s"
    )
    _say(f"  {'case':58} {'per CPU s':>12} {'us each':>9}")
    _say(
        f"  {'build + parse (model -> wire bytes -> ReceivedMessage)':58} {result['messages_per_s']:>12,.0f}"
        f" {result['us_per_message']:>9.1f}"
    )
    _say(
        f"  {'baseline: lxml fromstring + tostring, same envelope':58} {result['baseline_per_s']:>12,.0f}"
        f" {1e6 / result['baseline_per_s']:>9.1f}"
    )
    _say(f"  {'ratio (ours / baseline)':58} {result['ratio']:>12.3f}")
    _say(f"  {'target: >= 5,000 msg/s':58} {'met' if result['messages_per_s'] >= 5000 else 'NOT met':>12}")
    _say("  stages, each measured alone (us per call):")
    for name, micros in result["stages_us"].items():
        _say(f"    {name:56} {micros:>9.1f}")


def _print_stream(results: list[dict[str, Any]]) -> None:
    _say("Large payload through pack_message -> MessageReader.feed (64 KiB chunks, sha256 sink, no disk)")
    header = (
        f"  {'payload':>9} {'gzip':>4} {'MB/s':>8} {'base MB/s':>10} {'ratio':>6}"
        f" {'peak RSS':>9} {'start RSS':>10} {'base peak':>10} {'runs':>4}  sha256"
    )
    _say(header)
    for result in results:
        _say(
            f"  {_human(result['size']):>9} {'yes' if result['gzip'] else 'no':>4} {result['mb_per_s']:>8.1f}"
            f" {result['baseline_mb_per_s']:>10.1f} {result['ratio']:>6.3f}"
            f" {result['peak_rss_mib']:>7.1f}Mi {result['start_rss_mib']:>8.1f}Mi"
            f" {result['baseline_peak_rss_mib']:>8.1f}Mi {result['repeats']:>4}  {result['sha256'][:16]}… ok"
        )
    _say("  MB = 10^6 bytes of payload; baseline = the same chunks into sha256 (through gzip + gunzip when gzip);")
    _say("  peak RSS = VmHWM of the process (interpreter and imports included); start RSS = before the payload.")
    for gzip in (False, True):
        runs = sorted((r for r in results if r["gzip"] == gzip), key=lambda r: r["size"])
        if len(runs) >= 2:
            small_run, big_run = runs[0], runs[-1]
            growth = round(big_run["peak_rss_mib"] - small_run["peak_rss_mib"], 1) + 0.0  # never "-0.0"
            _say(
                f"  gzip={'yes' if gzip else 'no '}: peak RSS {_human(small_run['size'])} -> {_human(big_run['size'])}"
                f" grows by {growth:+.1f} MiB for {big_run['size'] / small_run['size']:.0f}x the payload"
                f" (target: under 100 MB: {'met' if big_run['peak_rss_mib'] * MIB < 100e6 else 'NOT met'})"
            )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmarks."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        choices=(
            "small",
            "stream",
            "smp",
            "far",
            "security",
            "store",
            "e2e",
            "e2e-postgresql",
            "routing",
            "mailing",
            "soak",
            "loop",
            "holder-crypto",
            "holders",
            "console",
            "large-letter",
        ),
        help="run one benchmark only (soak only when named: a million messages take the best part of an hour)",
    )
    parser.add_argument(
        "--console-messages", type=int, default=1_000_000, help="messages in the console's store (default 1M)"
    )
    parser.add_argument("--soak-messages", type=int, default=1_000_000, help="messages of the soak (default 1M)")
    parser.add_argument("--mailing-recipients", type=int, default=100_000, help="recipients of the mass mailing")
    parser.add_argument("--mailing-registered", type=int, default=1_000_000, help="recipients registered in FaR")
    parser.add_argument("--quick", action="store_true", help="short rounds and small payloads (a smoke test)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per round of the 4 KB case")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the 4 KB case (the median is reported)")
    parser.add_argument("--small-size", type=_size, default=64 * MIB, help="the smaller payload (default 64M)")
    parser.add_argument("--size", type=_size, default=GIB, help="the large payload, uncompressed (default 1G)")
    parser.add_argument(
        "--gzip-size", type=_size, default=256 * MIB, help="the large payload, gzip (default 256M: deflate is slow)"
    )
    parser.add_argument("--stream-repeats", type=int, default=3, help="runs of each uncompressed payload")
    parser.add_argument(
        "--letter-size", type=_size, default=2 * GIB, help="the large letter through the federation (default 2G)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.repeats = 0.3, 3
        args.small_size, args.size, args.gzip_size, args.stream_repeats = 4 * MIB, 64 * MIB, 16 * MIB, 1
        args.letter_size = 200 * MIB

    started = time.time()
    report: dict[str, Any] = {"machine": _machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    machine = report["machine"]
    _say(
        f"bench: {machine['cpu']}, {machine['cpus']} CPUs; single-threaded; "
        f"Python {machine['python']}, lxml {machine['lxml']} (libxml2 {machine['libxml2']})"
    )
    _say()
    if args.only in (None, "small"):
        report["small"] = small.run(seconds=args.seconds, repeats=args.repeats, stage_seconds=min(args.seconds, 0.5))
        _print_small(report["small"])
        _say()
    if args.only in (None, "stream"):
        plan = [
            (args.small_size, False, args.stream_repeats),
            (args.size, False, args.stream_repeats),
            (args.small_size, True, 1),
            (args.gzip_size, True, 1),
        ]
        report["stream"] = [run_stream(size, gzip=gzip, repeats=repeats) for size, gzip, repeats in plan]
        _print_stream(report["stream"])
        _say()
    if args.only in (None, "smp"):
        report["smp"] = smp_bench.run(quick=args.quick)
        smp_bench.print_result(report["smp"])
        _say()
    if args.only in (None, "far"):
        report["far"] = far_bench.run(quick=args.quick)
        far_bench.print_result(report["far"])
        _say()
        # The router's FaR check at the mass-mailing issue's size: 100,000 recipients against 1,000,000 registered.
        size = (100_000, 20_000) if args.quick else (args.mailing_registered, args.mailing_recipients)
        report["far_check"] = far_check_bench.run(registered=size[0], recipients=size[1])
        far_check_bench.print_result(report["far_check"], _say)
        _say()
    if args.only in (None, "security"):
        # CPU-time rounds of at most 1 s (the 4 KB cases are stable by then) keep the whole run short.
        report["security"] = security_bench.run(
            seconds=min(args.seconds, 1.0),
            repeats=min(args.repeats, 3),
            stream_size=args.size,
            stream_repeats=args.stream_repeats,
        )
        security_bench.print_result(report["security"], _say)
        _say()
    if args.only in (None, "holder-crypto"):
        # End-to-end encryption to the holder per letter and as a 1 GiB stream; signatures through PKCS#11.
        report["holder_crypto"] = holder_crypto_bench.run(size=args.size, seconds=min(args.seconds, 1.0))
        holder_crypto_bench.print_result(report["holder_crypto"], _say)
        _say()
    if args.only in (None, "store"):
        # The group-committing writer alone, against raw sqlite3 doing the same rows (and on PostgreSQL).
        report["store"] = store_bench.run(quick=args.quick, postgresql=True)
        store_bench.print_result(report["store"], _say)
        _say()
    if args.only in (None, "e2e"):
        # Two access point processes and a load generator: a 60 s steady run of 1.15 (10 s with --quick), then
        # 200 KB and 2 MB payloads.
        sizes = () if args.quick else (200 * 1024, 2 * MIB)
        report["e2e"] = e2e_bench.run(quick=args.quick, sizes=sizes)
        e2e_bench.print_result(report["e2e"], _say)
        _say()
    if args.only in (None, "e2e-postgresql"):
        # The same pair, each on its database of one PostgreSQL (fsync on), 4 KB.
        report["e2e_postgresql"] = e2e_bench.run(quick=args.quick, database="postgresql")
        e2e_bench.print_result(report["e2e_postgresql"], _say)
        if "e2e" in report:
            sqlite_rate = report["e2e"]["profiles"]["1.15"]["max"]["msg_per_s"]
            postgres_rate = report["e2e_postgresql"]["profiles"]["1.15"]["max"]["msg_per_s"]
            share = postgres_rate / sqlite_rate
            met = "met" if share >= 0.6 else "NOT met"
            _say(f"  PostgreSQL / SQLite msg/s (1.15, 64 in flight): {share:.2f} (target >= 0.60: {met})")
        _say()
    if args.only in (None, "holders"):
        # A mailbox of 10,000 letters (1,000 with --quick) moved between the two operators of the federation.
        report["holders"] = holders_bench.run(letters=1000 if args.quick else 10_000)
        holders_bench.print_result(report["holders"], _say)
        _say()
    if args.only in (None, "large-letter"):
        # A 2 GiB letter from the agency through the router to a mailbox and the holder's download: MB/s, and the
        # peak memory of each process on the way (issue 14: under 150 MB each).
        report["large_letter"] = large_letter_bench.run(size=args.letter_size)
        large_letter_bench.print_result(report["large_letter"], _say)
        _say()
    if args.only in (None, "routing"):
        # Seven processes (the demo's federation): routed letters with the operator's signed receipt back.
        report["routing"] = routing_bench.run(quick=args.quick)
        routing_bench.print_result(report["routing"], _say)
        _say()
    if args.only in (None, "console"):
        # The admin console's pages (search, filter, detail, errors, status) over a store of a million messages.
        messages = min(args.console_messages, 50_000) if args.quick else args.console_messages
        report["console"] = console_bench.run(messages=messages, requests=20 if args.quick else 200)
        console_bench.print_result(report["console"], _say)
        _say()
    if args.only in (None, "mailing"):
        _say()
        size = (1000, 20_000) if args.quick else (args.mailing_recipients, args.mailing_registered)
        report["mailing"] = mailing_bench.run(recipients=size[0], registered=size[1])
        mailing_bench.print_result(report["mailing"], _say)
        # A second mailing, the router killed (SIGKILL) in its middle: exactly one letter per reachable recipient.
        size = (1000, 200) if args.quick else (10_000, 2000)
        report["mailing_kill_9"] = mailing_bench.run(recipients=size[0], registered=size[0], kill_after=size[1])
        mailing_bench.print_result(report["mailing_kill_9"], _say)
    if args.only == "soak":
        # A million messages on SQLite (or --soak-messages): rate and memory flat, the store's size per message.
        report["soak"] = soak_bench.run(messages=args.soak_messages, round_seconds=10.0 if args.quick else 60.0)
        soak_bench.print_summary(report["soak"], _say)
        _say()
    if args.only in (None, "loop"):
        # /healthz latency of an access point receiving and sending a 1 GiB message and meeting slow OCSP/CRL.
        report["loop"] = loop_bench.run(size=args.size)
        loop_bench.print_result(report["loop"], _say)
        _say()
    report["seconds"] = time.time() - started
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"bench-{time.strftime('%Y%m%dT%H%M%S')}.json"
    text = json.dumps(report, indent=2) + "\n"
    path.write_text(text)
    (RESULTS / "latest.json").write_text(text)
    _say(
        f"results: {path.relative_to(RESULTS.parent.parent)} (and bench/results/latest.json), {report['seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
