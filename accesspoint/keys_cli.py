"""``accesspoint keys generate``: a development CA and access point certificates for eDelivery AS4 1.15 and 2.0.

Development only: the keys are written unencrypted. Per party (``--party NAME=PARTYID``, CN = PartyId so that
Peppol-style CN binding works too) the folder gets, beside ``ca.pem`` / ``ca.key.pem``:

  NAME-1.15.pem         RSA-2048, keyUsage digitalSignature + keyEncipherment (1.15 signs and decrypts with it)
  NAME-2.0-sign.pem     Ed25519, keyUsage digitalSignature
  NAME-2.0-enc.pem      X25519, keyUsage keyAgreement (X25519 cannot sign, so the CA's key signs it)

each with its private key in ``….key.pem`` (PKCS#8, mode 0600). ``pmode/examples/make_certs.py`` and
``make demo`` build their certificates with the same functions.

Exit codes: 0 written; 2 a party's NAME or PARTYID cannot be used; 64 usage (bad arguments, or DIR exists and
is not empty: pass ``--force`` to write into it, replacing files of the same names).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519
from cryptography.x509.oid import NameOID

from accesspoint.cli import EXIT_MALFORMED, EXIT_OK, UsageError, failure
from accesspoint.security.issuing import certificate_builder, end_entity_key_usage
from accesspoint.security.keys import PrivateKey, certificate_sha256

KeyKind = Literal["rsa", "ed25519", "x25519"]
DEV_ORGANIZATION = "accesspoint development PKI (not for production)"
# A certificate is valid from a few minutes back, so that a peer whose clock runs slightly behind accepts it.
CLOCK_SKEW = timedelta(minutes=5)
GENERATE_EPILOG = """files written into DIR (each certificate with its key in NAME-….key.pem, mode 0600):
  ca.pem                 the development CA (RSA-2048, self-signed)
  NAME-1.15.pem          RSA-2048: eDelivery AS4 1.15 signing and decryption
  NAME-2.0-sign.pem      Ed25519: eDelivery AS4 2.0 signing
  NAME-2.0-enc.pem       X25519: eDelivery AS4 2.0 decryption (keyUsage keyAgreement)

exit codes: 0 written (JSON listing on stdout); 2 unusable NAME or PARTYID;
64 usage, or DIR exists and is not empty (--force writes into it)"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Issued:
    """One key and certificate written to disk."""

    profile: str  # "ca", "1.15" or "2.0"
    use: str  # what the certificate is for: "ca", "sign+decrypt", "sign", "decrypt"
    algorithm: str
    certificate: x509.Certificate
    certificate_path: Path
    key_path: Path

    def to_json(self) -> dict[str, Any]:
        """Paths, subject and the certificate's SHA-256 fingerprint (over its DER)."""
        return {
            "profile": self.profile,
            "use": self.use,
            "algorithm": self.algorithm,
            "certificate": str(self.certificate_path),
            "key": str(self.key_path),
            "subject": self.certificate.subject.rfc4514_string(),
            "issuer": self.certificate.issuer.rfc4514_string(),
            "not_after": self.certificate.not_valid_after_utc.isoformat(),
            "sha256": certificate_sha256(self.certificate),
        }


@dataclass(frozen=True, slots=True)
class PartyKeys:
    """A party's access point certificates for both profiles."""

    name: str
    party_id: str
    rsa: Issued  # 1.15: signs and decrypts
    ed25519: Issued  # 2.0 signing
    x25519: Issued  # 2.0 encryption (key agreement)


@dataclass(frozen=True, slots=True)
class DevelopmentPki:
    """What ``generate_keys`` wrote: the CA and every party's certificates."""

    folder: Path
    ca: Issued
    parties: dict[str, PartyKeys]

    def to_json(self) -> dict[str, Any]:
        """The JSON listing ``keys generate`` prints."""
        return {
            "ok": True,
            "directory": str(self.folder),
            "ca": self.ca.to_json(),
            "parties": [
                {
                    "name": keys.name,
                    "party_id": keys.party_id,
                    "certificates": [keys.rsa.to_json(), keys.ed25519.to_json(), keys.x25519.to_json()],
                }
                for keys in self.parties.values()
            ],
        }


# ---------------------------------------------------------------------------------- building blocks


def dev_name(common_name: str, organization: str = DEV_ORGANIZATION) -> x509.Name:
    """O=organization, CN=common_name."""
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def new_key(kind: KeyKind) -> PrivateKey:
    """A fresh RSA-2048, Ed25519 or X25519 private key."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate() if kind == "ed25519" else x25519.X25519PrivateKey.generate()


def _key_usage(kind: KeyKind) -> x509.KeyUsage:
    agreement = kind == "x25519"
    return end_entity_key_usage(sign=not agreement, encipher=kind == "rsa", agree=agreement)


def new_ca(name: x509.Name, not_before: datetime, not_after: datetime) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-signed RSA-2048 CA (basicConstraints CA, keyCertSign + cRLSign)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = (
        certificate_builder(name, name, key.public_key(), not_before=not_before, not_after=not_after, ca=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def issue(
    ca_key: rsa.RSAPrivateKey,
    ca: x509.Certificate,
    subject: x509.Name,
    kind: KeyKind,
    not_before: datetime,
    not_after: datetime,
) -> tuple[PrivateKey, x509.Certificate]:
    """A new key of ``kind`` and its end-entity certificate, signed by the CA's key (SHA-256)."""
    key = new_key(kind)
    certificate = (
        certificate_builder(subject, ca.subject, key.public_key(), not_before=not_before, not_after=not_after)
        .add_extension(_key_usage(kind), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def write_pem(folder: Path, stem: str, key: PrivateKey, certificate: x509.Certificate) -> tuple[Path, Path]:
    """Write ``stem.pem`` (certificate) and ``stem.key.pem`` (PKCS#8, unencrypted, mode 0600); their paths."""
    pem = serialization.Encoding.PEM
    key_path, certificate_path = folder / f"{stem}.key.pem", folder / f"{stem}.pem"
    key_bytes = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_bytes)
    key_path.chmod(0o600)  # an existing file (--force) keeps its old mode through O_CREAT
    certificate_path.write_bytes(certificate.public_bytes(pem))
    return certificate_path, key_path


# ------------------------------------------------------------------------------- development e-ID


@dataclass(frozen=True, slots=True)
class EidIssuer:
    """A development e-ID CA: it issues holders' signing certificates whose subject serialNumber is the holder's
    personnummer (or eIDAS identifier), as Swedish e-ID certificates do (accesspoint/envelopes/identity.py)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def create(cls, name: str = "Development e-ID CA", *, now: datetime | None = None, days: int = 3650) -> EidIssuer:
        """A new CA valid from a little before ``now`` for ``days``."""
        start = (now or datetime.now(UTC)) - CLOCK_SKEW
        key, certificate = new_ca(dev_name(name), start, start + timedelta(days=days))
        return cls(key, certificate)

    def holder(
        self, identity: str, name: str, *, not_before: datetime | None = None, not_after: datetime | None = None
    ) -> tuple[PrivateKey, x509.Certificate]:
        """An RSA key and signing certificate for ``identity`` (CN = name, serialNumber = identity)."""
        start = not_before or (datetime.now(UTC) - CLOCK_SKEW)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "SE"),
                x509.NameAttribute(NameOID.SERIAL_NUMBER, identity),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        return issue(self.key, self.certificate, subject, "rsa", start, not_after or start + timedelta(days=365))


# -------------------------------------------------------------------------------------------- recipe

_PROFILES: tuple[tuple[str, str, str, KeyKind, str], ...] = (
    # (file suffix, profile, use, key kind, algorithm)
    ("1.15", "1.15", "sign+decrypt", "rsa", "rsa-2048"),
    ("2.0-sign", "2.0", "sign", "ed25519", "ed25519"),
    ("2.0-enc", "2.0", "decrypt", "x25519", "x25519"),
)


def check_party(name: str, party_id: str) -> None:
    """ValueError when NAME is not a safe file name stem or PARTYID is empty."""
    if not _NAME.match(name):
        raise ValueError(f"party name {name!r}: letters, digits, '.', '_' and '-' only (it names files)")
    if not party_id.strip():
        raise ValueError(f"party {name}: the PartyId is empty")


def generate_keys(
    folder: Path,
    parties: Mapping[str, str],
    *,
    days: int = 365,
    now: datetime | None = None,
    organization: str = DEV_ORGANIZATION,
) -> DevelopmentPki:
    """Write a development CA and, for each ``name -> PartyId``, its 1.15 and 2.0 certificates into ``folder``.

    Overwrites files of the same names; the CLI decides whether that is allowed.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    for name, party_id in parties.items():
        check_party(name, party_id)
    start = (now or datetime.now(UTC)) - CLOCK_SKEW
    end = start + CLOCK_SKEW + timedelta(days=days)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = new_ca(dev_name("Development CA", organization), start, end)
    ca_paths = write_pem(folder, "ca", ca_key, ca)
    issued_ca = Issued("ca", "ca", "rsa-2048", ca, *ca_paths)
    written: dict[str, PartyKeys] = {}
    for name, party_id in parties.items():
        made = []
        for suffix, profile, use, kind, algorithm in _PROFILES:
            key, certificate = issue(ca_key, ca, dev_name(party_id, organization), kind, start, end)
            made.append(
                Issued(profile, use, algorithm, certificate, *write_pem(folder, f"{name}-{suffix}", key, certificate))
            )
        written[name] = PartyKeys(name, party_id, *made)
    return DevelopmentPki(folder, issued_ca, written)


# ------------------------------------------------------------------------------------------------ CLI


def register(commands: Any) -> None:
    """Add ``keys generate`` to the CLI."""
    keys = commands.add_parser("keys", help="development keys and certificates")
    actions = keys.add_subparsers(dest="keys_command", required=True, parser_class=type(keys))
    generate = actions.add_parser(
        "generate",
        help="a development CA and access point certificates for eDelivery AS4 1.15 (RSA) and 2.0 (Ed25519, X25519)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=GENERATE_EPILOG,
    )
    generate.add_argument("directory", metavar="DIR", help="where to write the PEM files (created if missing)")
    generate.add_argument(
        "--party",
        action="append",
        default=[],
        metavar="NAME=PARTYID",
        help="a party: NAME names its files, PARTYID becomes the certificates' CN (repeatable; at least one)",
    )
    generate.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    generate.add_argument("--force", action="store_true", help="write into a non-empty DIR, replacing same-named files")
    generate.set_defaults(handler=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Write the CA and each party's certificates; print what was written."""
    if not args.party:
        raise UsageError("at least one --party NAME=PARTYID is required")
    if args.days < 1:
        raise UsageError("--days must be at least 1")
    parties: dict[str, str] = {}
    for entry in args.party:
        name, equals, party_id = str(entry).partition("=")
        if not equals:
            raise UsageError(f"--party {entry!r}: expected NAME=PARTYID")
        if name in parties:
            raise UsageError(f"--party {name!r} is given twice")
        parties[name] = party_id
    folder = Path(args.directory)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a directory")
    if folder.is_dir() and any(folder.iterdir()) and not args.force:
        raise UsageError(f"{folder} is not empty; pass --force to write into it (same-named files are replaced)")
    try:
        pki = generate_keys(folder, parties, days=args.days)
    except ValueError as exc:
        return EXIT_MALFORMED, failure("invalid-party", str(exc))
    except OSError as exc:
        raise UsageError(f"cannot write into {folder}: {exc.strerror}") from None
    return EXIT_OK, pki.to_json()
