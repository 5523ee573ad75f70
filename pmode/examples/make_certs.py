"""Regenerate the example's development PKI: a CA, and access point certificates for 1.15 (RSA) and 2.0.

Development only: the keys are published with the project. Run ``python -m pmode.examples.make_certs [FOLDER]``.
The certificates are built by ``accesspoint keys generate``'s functions; only the file names, the CNs and the
fixed validity period are this example's own.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from accesspoint.keys_cli import KeyKind, dev_name, issue, new_ca, write_pem

NOT_BEFORE = datetime(2026, 1, 1, tzinfo=UTC)
NOT_AFTER = datetime(2046, 1, 1, tzinfo=UTC)
ORGANIZATION = "Example Federation (development only)"
# file stem -> (CN, key type); the CN equals the party's PartyId so Peppol-style CN binding works too.
CERTIFICATES: dict[str, tuple[str, KeyKind]] = {
    "ap-sweden-sign": ("AP-SE-0001", "rsa"),
    "ap-sweden-sign-2.0": ("AP-SE-0001", "ed25519"),
    "ap-sweden-enc-2.0": ("AP-SE-0001", "x25519"),
    "partner-115": ("AP-BE-0115", "rsa"),
    "partner-20-sign": ("AP-NO-0200", "ed25519"),
    "partner-20-enc": ("AP-NO-0200", "x25519"),
}


def generate(folder: Path) -> None:
    """Write ca.pem / ca.key.pem and every access point certificate and key into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = new_ca(dev_name("Example Development CA", ORGANIZATION), NOT_BEFORE, NOT_AFTER)
    write_pem(folder, "ca", ca_key, ca)
    for stem, (common_name, kind) in CERTIFICATES.items():
        key, certificate = issue(ca_key, ca, dev_name(common_name, ORGANIZATION), kind, NOT_BEFORE, NOT_AFTER)
        write_pem(folder, stem, key, certificate)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "certs")
