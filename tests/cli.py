"""The ``accesspoint`` command line run by tests: as a process (the command as users run it) or through its ``main``
in this process. A fresh interpreter costs about a second of CPU; the one-shot commands keep no state between calls,
so each test module runs one call as a process and the rest here."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accesspoint.cli import main

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CliRun:
    """One run of the command: its exit code, stdout and stderr."""

    code: int
    stdout: str
    stderr: str

    @property
    def document(self) -> Any:
        """The one JSON document the command printed."""
        return json.loads(self.stdout)


@contextlib.contextmanager
def _environment(env: dict[str, str] | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env or {}}
    os.environ.update(env or {})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def in_process(*args: str | Path, env: dict[str, str] | None = None) -> CliRun:
    """``accesspoint ARGS`` through the CLI's ``main`` in this process (``env`` set for the call)."""
    out, err = io.StringIO(), io.StringIO()
    with _environment(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in args])
    return CliRun(code, out.getvalue(), err.getvalue())


def as_process(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120) -> CliRun:
    """``python -m accesspoint ARGS`` as a child process from the repository root."""
    done = subprocess.run(
        [sys.executable, "-m", "accesspoint", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip
    return CliRun(done.returncode, done.stdout, done.stderr)
