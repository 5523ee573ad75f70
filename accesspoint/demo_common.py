"""What both parts of ``make demo`` share (``demo.py``, ``demo_federation.py``): child processes answering HTTP
on loopback ports, the failure a step raises, how the demo prints, key files as settings take them."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

from accesspoint.keys_cli import Issued
from accesspoint.servicekit.ports import free_port as free_port

# Generous: eight processes start at once, and a loaded machine (or one that writes no .pyc) takes long to import.
START_TIMEOUT = 120.0
WIDTH = 110


class DemoFailure(Exception):
    """Something the demo expected did not happen; the message says what."""


def say(text: str = "", indent: int = 3) -> None:
    """Print a paragraph, wrapped for a terminal; continuation lines are indented by ``indent``."""
    wrapped = textwrap.fill(text, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False) if text else ""
    sys.stdout.write(wrapped + "\n")
    sys.stdout.flush()


class Child:
    """One child process answering HTTP on a loopback port: started, awaited, stopped with one SIGTERM."""

    def __init__(self, name: str, folder: Path, port: int, argv: list[str], *, health: str = "/health") -> None:
        self.name, self.folder, self.port, self.argv, self.health = name, folder, port, argv, health
        self.log_path = folder / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._terminated = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        """Start ``python -m accesspoint <argv>`` (``wait_ready`` waits for it to answer)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "accesspoint", *self.argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                # preexec_fn is safe here: the demo starts no threads.
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )

    def wait_ready(self) -> None:
        """Poll the health URL until it answers (the process must stay alive meanwhile)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoFailure(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1):  # noqa: S310 (http on loopback)
                    return
            except urllib.error.HTTPError:
                return  # it answers (a server without a health path says 404)
            except OSError:
                time.sleep(0.05)
        raise DemoFailure(f"{self.name} did not answer on {self.url} within {START_TIMEOUT:.0f} s")

    def terminate(self) -> None:
        """Ask the process to stop, once: SIGTERM makes aiohttp shut down gracefully, a second one would not."""
        if self.process is not None and self.process.poll() is None and not self._terminated:
            self._terminated = True
            self.process.terminate()

    def stop(self) -> int | None:
        """Terminate the process and wait for it (SIGKILL after 15 s); its exit code."""
        if self.process is None:
            return None
        self.terminate()
        return stop_process(self.process, terminate=False)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the process's log, indented."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return "    (no log)"
        return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])


# A service finishes its requests for up to servicekit.server.GRACE_SECONDS (10 s) after SIGTERM, then cleans up and
# exits: on a loaded machine that took over 15 s, and a SIGKILL then reads as a failed stop.
STOP_TIMEOUT = 30.0


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT, *, terminate: bool = True) -> int:
    """SIGTERM (unless it has stopped, or ``terminate`` is False: sent already), wait up to ``timeout`` s, then
    SIGKILL; the exit code."""
    if process.poll() is None:
        if terminate:
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def die_with_parent() -> None:
    """In the child: get SIGTERM when the demo dies, even by SIGKILL, so no server outlives it (Linux)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def key_files(issued: Issued) -> dict[str, str]:
    """A key and its certificate as the settings files take them: ``{key, certificate}``."""
    return {"key": str(issued.key_path), "certificate": str(issued.certificate_path)}
