"""``accesspoint keys generate``: a development CA and access point certificates for eDelivery AS4 1.15 and 2.0."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa, x25519

from accesspoint.cli import main
from accesspoint.security.keys import certificate_sha256, load_key_pair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.trust import CertificateUsage, TrustError, TrustFailure, validate_certificate
from pmode.examples.make_certs import CERTIFICATES, generate

PARTIES = ("--party", "sweden=AP-SE-0001", "--party", "norway=0007:5567890123")
# Each file suffix, the key type it must hold, and the usages it must (and must not) be trusted for.
EXPECTED = {
    "1.15": (rsa.RSAPublicKey, {CertificateUsage.SIGNATURE, CertificateUsage.ENCRYPTION}),
    "2.0-sign": (ed25519.Ed25519PublicKey, {CertificateUsage.SIGNATURE}),
    "2.0-enc": (x25519.X25519PublicKey, {CertificateUsage.ENCRYPTION}),
}


def generate_cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, Any]]:
    """Run ``accesspoint keys generate`` in-process: exit code and the JSON document it printed."""
    code = main(["keys", "generate", *map(str, args)])
    return code, json.loads(capsys.readouterr().out)


def trust(folder: Path) -> TrustSettings:
    """Trust in the generated CA only, revocation off (a development CA publishes none)."""
    anchor = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    return TrustSettings(anchors=(anchor,), revocation=RevocationMode.OFF)


def test_generated_certificates_validate_against_the_ca_for_their_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each party gets RSA (sign + decrypt), Ed25519 (sign) and X25519 (decrypt) certificates the CA issued."""
    folder = tmp_path / "keys"
    code, document = generate_cli(capsys, folder, *PARTIES)
    assert code == 0 and document["ok"] is True
    settings, now = trust(folder), datetime.now(UTC)
    for name, party_id in (("sweden", "AP-SE-0001"), ("norway", "0007:5567890123")):
        for suffix, (key_type, usages) in EXPECTED.items():
            certificate = x509.load_pem_x509_certificate((folder / f"{name}-{suffix}.pem").read_bytes())
            assert isinstance(certificate.public_key(), key_type)
            assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == party_id
            for usage in CertificateUsage:
                if usage in usages:
                    result = validate_certificate(certificate, [], settings, at=now, usage=usage)
                    assert result is not None
                else:
                    with pytest.raises(TrustError) as refused:
                        validate_certificate(certificate, [], settings, at=now, usage=usage)
                    assert refused.value.failure is TrustFailure.KEY_USAGE
            # The private key beside it belongs to the certificate and is readable by its owner only.
            pair = load_key_pair(folder / f"{name}-{suffix}.key.pem", None, certificate=folder / f"{name}-{suffix}.pem")
            assert pair.certificate == certificate
            assert (folder / f"{name}-{suffix}.key.pem").stat().st_mode & 0o777 == 0o600


def test_x25519_certificate_is_signed_by_the_ca_key_with_key_agreement_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """X25519 cannot sign itself: the CA's key signs its certificate, whose keyUsage is keyAgreement alone."""
    generate_cli(capsys, tmp_path, "--party", "a=AP-A")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    certificate = x509.load_pem_x509_certificate((tmp_path / "a-2.0-enc.pem").read_bytes())
    certificate.verify_directly_issued_by(ca)  # raises unless the CA's key signed it
    usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_agreement and not usage.digital_signature and not usage.key_encipherment


def test_listing_names_every_file_with_subject_and_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON lists each certificate and key path, its subject and the certificate's SHA-256 fingerprint."""
    code, document = generate_cli(capsys, tmp_path / "out", *PARTIES, "--days", "30")
    assert code == 0
    entries = [document["ca"]] + [c for party in document["parties"] for c in party["certificates"]]
    assert len(entries) == 1 + 2 * 3
    assert {p["name"]: p["party_id"] for p in document["parties"]} == {
        "sweden": "AP-SE-0001",
        "norway": "0007:5567890123",
    }
    listed = set()
    for entry in entries:
        certificate = x509.load_pem_x509_certificate(Path(entry["certificate"]).read_bytes())
        assert entry["sha256"] == certificate_sha256(certificate)
        assert entry["subject"] == certificate.subject.rfc4514_string()
        assert Path(entry["key"]).is_file()
        listed |= {Path(entry["certificate"]).name, Path(entry["key"]).name}
    assert listed == {p.name for p in (tmp_path / "out").iterdir()}
    assert {e["profile"] for e in entries} == {"ca", "1.15", "2.0"}


def test_days_sets_the_validity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With --days 2 the certificates are valid now and expired three days from now."""
    generate_cli(capsys, tmp_path, "--party", "a=AP-A", "--days", "2")
    certificate = x509.load_pem_x509_certificate((tmp_path / "a-2.0-sign.pem").read_bytes())
    now = datetime.now(UTC)
    validate_certificate(certificate, [], trust(tmp_path), at=now, usage=CertificateUsage.SIGNATURE)
    with pytest.raises(TrustError) as expired:
        validate_certificate(
            certificate, [], trust(tmp_path), at=now + timedelta(days=3), usage=CertificateUsage.SIGNATURE
        )
    assert expired.value.failure is TrustFailure.EXPIRED


def test_non_empty_directory_is_refused_with_64_unless_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing non-empty DIR exits 64 and is left alone; --force writes into it, replacing same-named files."""
    (tmp_path / "notes.txt").write_text("keep me")
    code, document = generate_cli(capsys, tmp_path, "--party", "a=AP-A")
    assert code == 64 and document["ok"] is False and "--force" in document["error"]["reason"]
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    code, document = generate_cli(capsys, tmp_path, "--party", "a=AP-A", "--force")
    assert code == 0 and (tmp_path / "a-1.15.pem").is_file()
    first = (tmp_path / "a-1.15.pem").read_bytes()
    code, _ = generate_cli(capsys, tmp_path, "--party", "a=AP-A", "--force")
    assert code == 0 and (tmp_path / "a-1.15.pem").read_bytes() != first
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_an_empty_existing_directory_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty DIR needs no --force."""
    code, _ = generate_cli(capsys, tmp_path, "--party", "a=AP-A")
    assert code == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), 64),  # no --party
        (("--party", "no-equals-sign"), 64),
        (("--party", "a=AP-A", "--party", "a=AP-B"), 64),  # the same name twice
        (("--party", "a=AP-A", "--days", "0"), 64),
        (("--party", "../evil=AP-A"), 2),  # a name that would write outside DIR
        (("--party", "a= "), 2),  # an empty PartyId
    ],
)
def test_bad_arguments_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], expected: int
) -> None:
    """Usage mistakes exit 64, an unusable party name or PartyId exits 2; neither writes a file."""
    code, document = generate_cli(capsys, tmp_path / "keys", *args)
    assert (code, document["ok"]) == (expected, False)
    assert not (tmp_path / "keys").exists()


def test_a_file_in_place_of_dir_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """DIR naming an existing file exits 64."""
    (tmp_path / "file").write_text("x")
    code, document = generate_cli(capsys, tmp_path / "file", "--party", "a=AP-A")
    assert code == 64 and "not a directory" in document["error"]["reason"]


def test_cli_process_prints_one_json_document(tmp_path: Path) -> None:
    """The installed ``accesspoint`` command exits 0 and prints the listing on stdout."""
    command = [sys.executable, "-m", "accesspoint", "keys", "generate", str(tmp_path / "k"), "--party", "a=AP-A"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["parties"][0]["party_id"] == "AP-A"


def test_example_pki_script_shares_the_recipe(tmp_path: Path) -> None:
    """pmode/examples/make_certs.py builds the example certificates with the same functions; they validate."""
    generate(tmp_path)
    settings, now = trust(tmp_path), datetime.now(UTC)
    for stem, (common_name, kind) in CERTIFICATES.items():
        certificate = x509.load_pem_x509_certificate((tmp_path / f"{stem}.pem").read_bytes())
        usage = CertificateUsage.ENCRYPTION if kind == "x25519" else CertificateUsage.SIGNATURE
        validate_certificate(certificate, [], settings, at=now, usage=usage)
        assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == common_name
