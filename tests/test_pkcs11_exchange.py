"""Two `accesspoint serve` processes, one with its keys in SoftHSM2, exchange letters under AS4 1.15 and 2.0."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from accesspoint import demo
from accesspoint.demo_common import free_port, key_files
from accesspoint.keys_cli import generate_keys
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.testing.hsm import import_key, shared_softhsm, store_certificate
from accesspoint.testing.pki import NOT_AFTER, NOT_BEFORE, new_key


def _encryption_key(ca: KeyPair, subject: x509.Name, folder: Path) -> dict[str, str]:
    """An RSA key for 1.15 decryption only, in files (SoftHSM's OAEP takes SHA-1 only), issued by the demo CA."""
    key = new_key("rsa")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOT_BEFORE)
        .not_valid_after(NOT_AFTER)
        .add_extension(x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True)
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (folder / "norway-1.15-enc.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "norway-1.15-enc.key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return {"key": str(folder / "norway-1.15-enc.key.pem"), "certificate": str(folder / "norway-1.15-enc.pem")}


def test_hsm_signing_access_point_exchanges_under_both_profiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Norway signs its receipts with RSA and Ed25519 keys in SoftHSM2 and decrypts with file keys (as configured);
    Sweden, all in files, delivers a letter under 1.15 and one under 2.0 and verifies Norway's signed receipts."""
    hsm = shared_softhsm()
    monkeypatch.setenv("AP_HSM_PIN", hsm.pin)
    pki = generate_keys(tmp_path / "keys", demo.PARTIES, days=1)
    norway = pki.parties[demo.RECEIVER]
    session = hsm.session("ap")
    try:
        for label, issued in (("norway-1.15", norway.rsa), ("norway-2.0", norway.ed25519)):
            pair = load_key_pair(issued.key_path, certificate=issued.certificate_path)
            key_id = label.encode()
            import_key(session, pair.private_key, label, key_id)
            store_certificate(session, pair.certificate, label, key_id)
    finally:
        session.close()
    ca = load_key_pair(pki.ca.key_path, certificate=pki.ca.certificate_path)
    decrypt_115 = _encryption_key(ca, norway.rsa.certificate.subject, tmp_path / "keys")

    ports = {demo.SENDER: free_port(), demo.RECEIVER: free_port()}
    points = [demo.AccessPoint(name, tmp_path / name, pki, ports) for name in (demo.SENDER, demo.RECEIVER)]
    for point in points:  # both sides encrypt 1.15 letters to Norway's file key, not to its token key
        document = json.loads((point.folder / "pmodes.yaml").read_text())
        document["parties"]["norway-1.15"]["encryption_certificate"] = decrypt_115["certificate"]
        (point.folder / "pmodes.yaml").write_text(json.dumps(document))
    settings_file = points[1].folder / "server.yaml"
    settings = json.loads(settings_file.read_text())
    settings["keys"] = {
        "pkcs11": {
            "module": str(hsm.module),
            "token": "ap",
            "pin_env": "AP_HSM_PIN",
            "signing": ["norway-1.15", "norway-2.0"],
        },
        "decryption": [key_files(norway.x25519), decrypt_115],
    }
    settings_file.write_text(json.dumps(settings))
    sender, receiver = points
    try:
        for point in points:
            point.start()
        for point in points:
            point.wait_ready()
        for number, profile in enumerate(demo.PROFILES, start=1):
            # Checks the receipt's signature against Norway's certificate, whose key is in the token.
            demo.exchange(number, profile, sender, receiver, pki)
    finally:
        for point in points:
            point.stop()
    log = (receiver.folder / f"{receiver.name}.log").read_text()
    assert "Traceback" not in log
