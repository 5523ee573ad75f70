"""Waiting for a child process the tests started to answer: one place for the start-up timeout.

Many tests start ``python -m accesspoint ...`` processes; on a loaded machine (other jobs on both cores, sources
compiled at every start) one can take tens of seconds to import and listen. The wait is generous because it only
costs time when the process never comes up, and then the process's log says why.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

START_TIMEOUT = 120.0  # seconds a child process may take to answer after it was started


class DidNotStart(AssertionError):
    """The process exited, or did not answer within the start-up timeout; the message carries its log."""


def wait_until(
    answers: Callable[[], bool],
    process: subprocess.Popen[bytes],
    what: str,
    *,
    log: Path | None = None,
    timeout: float = START_TIMEOUT,
) -> None:
    """Poll ``answers()`` (OSError counts as not yet) until it is true; DidNotStart if the process exits or time runs
    out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DidNotStart(f"{what} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            if answers():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise DidNotStart(f"{what} did not answer within {timeout:.0f} s:\n{log_tail(log)}")


def listens(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A check that something accepts TCP connections on ``host:port``."""

    def check() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex((host, port)) == 0

    return check


def log_tail(log: Path | None, lines: int = 40) -> str:
    """The last lines of a server's log, for a failure report."""
    if log is None or not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
