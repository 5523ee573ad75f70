"""Independent implementations as test peers: each in its own venv, its scripts in this folder.

The scripts here run with the peer's Python, never ours; ``peer_python`` makes (once) and finds that Python.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AS4 = "as4==0.2.0"


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "accesspoint-tests"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``: parallel test workers (and other checkouts sharing the cache) wait for
    the one making a venv instead of clearing it under each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
        yield


def peer_python(folder: str, requirement: str) -> Path:
    """The Python of a venv holding ``requirement`` from PyPI, kept in the user's cache between runs.

    Skips where pip cannot install it; under CI=true fails instead, since CI reaches PyPI and must show the peer.
    """
    with _locked(_cache_root() / f"{folder}.lock"):
        return _made_venv(_cache_root() / folder, requirement)


def _made_venv(venv: Path, requirement: str) -> Path:
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text(encoding="utf-8") == requirement:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        output = getattr(exc, "stderr", b"") or b""
        reason = f"cannot install {requirement} from PyPI: {output.decode(errors='replace')[-300:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    marker.write_text(requirement, encoding="utf-8")
    return python


def as4_python() -> Path:
    """The Python of the venv with PyPI ``as4`` 0.2.0 (its AS4 peer, its vendored schemas)."""
    return peer_python("as4-0.2.0", AS4)
