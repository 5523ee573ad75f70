"""Run one fuzz target under atheris (libFuzzer): ``python -m tests.fuzz.main TARGET [libFuzzer flags] [corpus dirs]``.

The project's packages are imported under atheris' instrumentation, so libFuzzer's ``cov:``/``ft:`` figures
count edges in the product code only: not in the stdlib or libraries it calls, nor in the harness (targets,
mutator), whose own branches would only add noise to the feedback. ``run.py`` (``make fuzz``)
starts one of these per target with the flags for time, runs, per-input timeout and memory.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import atheris  # type: ignore[import-not-found]  # the optional "fuzz" extra

with atheris.instrument_imports(include=["accesspoint", "smp", "far", "pmode", "operators"]):
    from tests.fuzz.targets import TARGETS


def main() -> None:
    """Prepare the named target (keys, signed documents), then hand it to libFuzzer."""
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        sys.stderr.write(f"usage: python -m tests.fuzz.main TARGET [libFuzzer flags]; targets: {', '.join(TARGETS)}\n")
        raise SystemExit(64)
    chosen = TARGETS[sys.argv[1]]
    # A warning (say, cryptography's about a malformed certificate field) is no contract violation.
    warnings.simplefilter("ignore")
    chosen.prepare()
    # libFuzzer writes the failing input as crash-<sha1> itself; this copy is kept even when its handler does not
    # get that far (seen a few times on the loaded machine: the log ended after the traceback).
    prefix = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("-artifact_prefix=")), "./")

    def run(data: bytes) -> None:
        try:
            chosen.run(data)
        except BaseException:
            Path(f"{prefix}exception-input").write_bytes(data)
            raise

    # The target's input cap first, so that a -max_len given on the command line overrides it.
    atheris.Setup([sys.argv[0], f"-max_len={chosen.max_len}", *sys.argv[2:]], run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
