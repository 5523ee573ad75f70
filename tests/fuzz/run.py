"""``make fuzz``: run every fuzz target under atheris, one after the other, and print what each did.

    python -m tests.fuzz.run [--runs N] [--max-time S] [--timeout S] [--rss-limit-mb M] [--work DIR] [TARGET ...]

Each target runs in its own process (``main.py``) with the seed corpus from ``corpus/<target>`` (read only) and
a working corpus in ``<work>/<target>/corpus`` that grows across runs; a crash, a hang past ``--timeout``
seconds on one input, or memory past ``--rss-limit-mb`` stops the target and leaves the input in
``<work>/<target>/artifacts/``. The table at the end gives per target the executions, exec/s, libFuzzer's
coverage (``cov:`` edges and ``ft:`` features in the instrumented packages) and the outcome; exit status 1
when any target found something.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
_STATUS = re.compile(
    r"^#(\d+)\s+(\w+)\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+ .*?exec/s: (\d+) rss: (\d+)Mb", re.MULTILINE
)
_FINAL = re.compile(r"^stat::(\w+):\s+(\d+)", re.MULTILINE)
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second", re.MULTILINE)
_KINDS = (
    ("timeout", "ERROR: libFuzzer: timeout"),
    ("out-of-memory", "ERROR: libFuzzer: out-of-memory"),
    ("crash", "Uncaught Python exception"),
    ("crash", "ERROR: libFuzzer: deadly signal"),
)


@dataclass
class Outcome:
    """What one target's run printed."""

    target: str
    executions: int = 0
    seconds: float = 0.0
    exec_per_second: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    peak_rss_mb: int = 0
    result: str = "ok"
    artifact: str = ""
    returncode: int = 0


def _targets() -> list[str]:
    # The registry is read in a child so that this process never imports the packages uninstrumented.
    found = subprocess.run(
        [sys.executable, "-c", "from tests.fuzz.targets import TARGETS; print(' '.join(TARGETS))"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return found.stdout.split()


def _parse(target: str, log: str, seconds: float, returncode: int, artifacts: list[Path]) -> Outcome:
    outcome = Outcome(target, seconds=round(seconds, 1), returncode=returncode)
    statuses = _STATUS.findall(log)
    if statuses:
        runs, _kind, cov, ft, corpus, _rate, rss = statuses[-1]
        outcome.executions, outcome.cov, outcome.ft, outcome.corpus, outcome.peak_rss_mb = map(
            int, (runs, cov, ft, corpus, rss)
        )
    final = dict(_FINAL.findall(log))
    if "number_of_executed_units" in final:
        outcome.executions = int(final["number_of_executed_units"])
        outcome.peak_rss_mb = int(final.get("peak_rss_mb", outcome.peak_rss_mb))
    outcome.exec_per_second = round(outcome.executions / seconds) if seconds else 0
    if returncode != 0:
        outcome.result = next((kind for kind, marker in _KINDS if marker in log), f"exit {returncode}")
        outcome.artifact = str(artifacts[-1]) if artifacts else "(no input written: see the log)"
    return outcome


def run_target(target: str, args: argparse.Namespace) -> Outcome:
    """Run one target to its limit; the full libFuzzer log goes to ``<work>/<target>/log.txt``."""
    work = Path(args.work) / target
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "tests.fuzz.main",
        target,
        f"-runs={args.runs}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        "-print_pcs=0",
    ]
    if args.max_time:
        command.append(f"-max_total_time={args.max_time}")
    dictionary = HERE / "dicts" / f"{target}.dict"
    if dictionary.exists():
        command.append(f"-dict={dictionary}")
    command += [str(corpus), str(HERE / "corpus" / target)]
    before = set(artifacts.iterdir())
    started = time.monotonic()
    with (work / "log.txt").open("w") as log:
        finished = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.monotonic() - started
    written = sorted(set(artifacts.iterdir()) - before, key=lambda p: p.stat().st_mtime)
    return _parse(target, (work / "log.txt").read_text(errors="replace"), seconds, finished.returncode, written)


def _row(o: Outcome) -> tuple[str, ...]:
    result = o.result + (f" ({o.artifact})" if o.artifact else "")
    figures = (o.executions, o.seconds, o.exec_per_second)
    return (o.target, *(f"{n:,.0f}" for n in figures), str(o.cov), str(o.ft), str(o.corpus), str(o.peak_rss_mb), result)


def _table(outcomes: list[Outcome]) -> str:
    header = ("target", "executions", "seconds", "exec/s", "cov", "ft", "corpus", "rss MB", "result")
    rows = [_row(o) for o in outcomes]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen (default: all) targets in turn and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--runs", type=int, default=1_000_000, help="executions per target (libFuzzer -runs)")
    parser.add_argument("--max-time", type=int, default=0, help="seconds per target, 0 for no limit")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take before it is a hang")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory one target process may use")
    parser.add_argument("--work", default=str(ROOT / ".fuzz"), help="working corpora, logs and crash inputs")
    args = parser.parse_args(argv)
    known = _targets()
    chosen = args.targets or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(known)}")
    outcomes = []
    for target in chosen:
        print(f"fuzzing {target} ...", flush=True)
        outcome = run_target(target, args)
        outcomes.append(outcome)
        print(
            f"  {outcome.executions:,} executions in {outcome.seconds:,.0f} s ({outcome.exec_per_second:,}/s), "
            f"cov: {outcome.cov} ft: {outcome.ft}, {outcome.result} {outcome.artifact}",
            flush=True,
        )
    print()
    print(_table(outcomes))
    summary = Path(args.work) / "summary.json"
    summary.write_text(json.dumps([asdict(o) for o in outcomes], indent=2) + "\n")
    return 1 if any(o.result != "ok" for o in outcomes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
