"""The development time-stamp authority for tests and the bench: its certificate under a test CA, and the
authority running as ``accesspoint tsa serve`` on a free loopback port (``running_authority``)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from accesspoint.security.keys import KeyPair
from accesspoint.security.tsa import authority_certificate
from accesspoint.testing.pki import NOT_AFTER, NOT_BEFORE
from accesspoint.testing.services import free_port


def tsa_certificate(
    ca: KeyPair,
    common_name: str = "Test Time-Stamp Authority",
    *,
    critical: bool = True,
    purposes: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.TIME_STAMPING,),
) -> KeyPair:
    """The authority's key and certificate under ``ca`` (critical id-kp-timeStamping unless asked otherwise)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return authority_certificate(
        ca, subject, not_before=NOT_BEFORE, not_after=NOT_AFTER, critical=critical, purposes=purposes
    )


def write(keys: KeyPair, folder: Path) -> tuple[Path, Path]:
    """The authority's key and certificate as ``tsa.key`` and ``tsa.pem`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    key_path, certificate_path = folder / "tsa.key", folder / "tsa.pem"
    key_path.write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate_path.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    return key_path, certificate_path


@contextmanager
def running_authority(keys: KeyPair, folder: Path, timeout: float = 60) -> Iterator[str]:
    """``accesspoint tsa serve`` with ``keys`` on a free port; yields its URL and stops it afterwards."""
    key_path, certificate_path = write(keys, folder)
    port = free_port()
    with (folder / "tsa.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "accesspoint", "tsa", "serve", "--key", str(key_path),
             "--certificate", str(certificate_path), "--port", str(port)],
            stdout=log, stderr=log,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the time-stamp authority exited: {(folder / 'tsa.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "health", timeout=1):  # noqa: S310 (loopback)
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the time-stamp authority did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
