"""The conformance suite's fixtures (the bed, started once) and its table: assertion -> pass / fail / not checkable.

After a run that included conformance tests, the terminal summary prints one row per assertion and profile;
with ``CONFORMANCE_TABLE=FILE`` in the environment the same table is written there as Markdown.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.bed import PROFILES, Bed, ProfileKeys, start_bed, stop_bed


@pytest.fixture(scope="package")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    """C2 and C3 with their conformance services, the interceptor and the driver, for this package's tests (then
    stopped, so the rest of a whole-suite run does not share the machine with them)."""
    started = start_bed(tmp_path_factory.mktemp("conformance-bed"))
    try:
        yield started
    finally:
        stop_bed(started)


@pytest.fixture(params=PROFILES)
def profile(request: pytest.FixtureRequest, bed: Bed) -> Iterator[ProfileKeys]:
    """Each test runs under the AS4 1.15 P-Modes and under the 2.0 ones; no interceptor hook is left behind."""
    yield bed.profiles[request.param]
    bed.harness.hook = None


# ------------------------------------------------------------------------------------------------- the table

_ASSERTION = re.compile(r"^test_as4_(cp|4ct|sbdh|dr|ds)_ta(\d+)")
_outcomes: dict[tuple[str, str], tuple[str, str]] = {}


def assertion_id(test_name: str) -> str | None:
    """``test_as4_cp_ta01[1.15]`` -> ``AS4_CP_TA01``."""
    match = _ASSERTION.match(test_name)
    if match is None:
        return None
    return f"AS4_{match.group(1).upper()}_TA{int(match.group(2)):02d}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Keep each conformance test's outcome (a failure in setup or teardown counts as a failure)."""
    name = report.nodeid.rpartition("::")[2]
    found = assertion_id(name)
    if found is None or (report.when != "call" and report.passed):
        return
    params = name.partition("[")[2].rstrip("]").split("-")
    variant = next((p for p in params if p in PROFILES), "-")
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        outcome = ("not checkable locally", reason.removeprefix("Skipped: "))
    elif report.failed:
        outcome = ("fail", report.when)
    else:
        outcome = ("pass", "")
    if _outcomes.get((found, variant), ("pass", ""))[0] != "fail":
        _outcomes[(found, variant)] = outcome


def _order(key: tuple[str, str]) -> tuple[int, int, str]:
    group = ["CP", "4CT", "SBDH", "DR", "DS"].index(key[0].split("_")[1])
    return group, int(key[0].rpartition("TA")[2]), key[1]


def table() -> str:
    """The Markdown table of the outcomes seen in this run."""
    variants = sorted({variant for _, variant in _outcomes}, key=lambda v: (v == "-", v))
    rows = ["| assertion | " + " | ".join(v if v != "-" else "profile-free" for v in variants) + " |"]
    rows.append("|---" * (len(variants) + 1) + "|")
    for assertion in sorted({a for a, _ in _outcomes}, key=lambda a: _order((a, ""))):
        cells = []
        for variant in variants:
            outcome, why = _outcomes.get((assertion, variant), ("", ""))
            cells.append(f"{outcome} ({why})" if why and outcome != "fail" else outcome)
        rows.append(f"| {assertion} | " + " | ".join(cells) + " |")
    counts = {kind: sum(1 for o, _ in _outcomes.values() if o == kind) for kind in ("pass", "fail")}
    skipped = len(_outcomes) - counts["pass"] - counts["fail"]
    rows.append("")
    rows.append(f"{counts['pass']} passed, {counts['fail']} failed, {skipped} not checkable locally")
    return "\n".join(rows)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table (and write it where CONFORMANCE_TABLE says) when conformance tests ran."""
    if not _outcomes:
        return
    text = table()
    terminalreporter.write_sep("-", "eDelivery AS4 conformance (TAD v1.2)")
    terminalreporter.write_line(text)
    target = os.environ.get("CONFORMANCE_TABLE")
    if target:
        Path(target).write_text(text + "\n", "utf-8")
