"""The mutation check's report: mutants per function and outcome, then every survivor (after `make mutation`).

Reads `mutmut results --all true` for the mutant names given (globs, as `mutmut run` takes them) and prints a
Markdown table (function, killed, survived, other) and the survivors' names; `mutmut show NAME` shows a diff.
"""

from __future__ import annotations

import collections
import fnmatch
import subprocess
import sys
from pathlib import Path


def main(patterns: list[str]) -> int:
    """Print the table and the survivors; exit 0 (the survivors are for a person to judge, see README)."""
    mutmut = Path(sys.executable).with_name("mutmut")
    listing = subprocess.run([str(mutmut), "results", "--all", "true"], capture_output=True, text=True, check=True)
    outcomes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    survivors = []
    for line in listing.stdout.splitlines():
        name, sep, status = line.strip().partition(": ")
        if not sep or (patterns and not any(fnmatch.fnmatchcase(name, p) for p in patterns)):
            continue
        function = name.rsplit("__mutmut_", 1)[0]
        outcomes[function][status] += 1
        if status == "survived":
            survivors.append(name)
    print("| function | killed | survived | other |")
    print("|---|---:|---:|---|")
    totals: collections.Counter[str] = collections.Counter()
    for function, counts in sorted(outcomes.items()):
        totals.update(counts)
        other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k not in ("killed", "survived"))
        print(f"| {function} | {counts['killed']} | {counts['survived']} | {other} |")
    other = ", ".join(f"{k} {v}" for k, v in sorted(totals.items()) if k not in ("killed", "survived"))
    print(f"| **all {sum(totals.values())}** | {totals['killed']} | {totals['survived']} | {other} |")
    print()
    for name in survivors:
        print("survived:", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
