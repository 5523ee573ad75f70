"""Access point keys in SoftHSM2: signing in the token, non-extractable, mechanism checks at start, rollover."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from pkcs11 import Attribute, ObjectClass

from accesspoint.msh.config import ConfigError, load_config
from accesspoint.security.keys import KeyPair
from accesspoint.security.pkcs11 import Pkcs11ConfigError, Pkcs11KeyProvider, Pkcs11Settings
from accesspoint.testing.hsm import SoftHsm, generate_key, shared_softhsm, store_certificate
from accesspoint.testing.pki import make_ca
from tests.conftest import REPO

NOW = datetime.now(UTC)


@pytest.fixture(scope="module")
def hsm() -> SoftHsm:
    return shared_softhsm()


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("HSM test CA")


@pytest.fixture
def session(hsm: SoftHsm) -> Iterator[Any]:
    opened = hsm.session("ap")
    yield opened
    opened.close()


def _certify(
    ca: KeyPair, public: rsa.RSAPublicKey | ed25519.Ed25519PublicKey, name: str, start: datetime
) -> x509.Certificate:
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=30))
        .sign(ca.private_key, hashes.SHA256())  # type: ignore[arg-type]
    )


def _on_token(session: Any, ca: KeyPair, kind: str, label: str, start: datetime = NOW - timedelta(days=1)) -> bytes:
    """A key made in the token with its certificate beside it; the CKA_ID."""
    key_id = uuid.uuid4().bytes
    store_certificate(session, _certify(ca, generate_key(session, kind, label, key_id), label, start), label, key_id)
    return key_id


def _settings(hsm: SoftHsm, **labels: tuple[str, ...]) -> Pkcs11Settings:
    return Pkcs11Settings(hsm.module, "ap", hsm.pin, refresh=60.0, **labels)


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
def test_signs_in_the_token(kind: str, hsm: SoftHsm, session: Any, ca: KeyPair) -> None:
    """A key made in the token signs there (RSA PKCS#1 v1.5 SHA-256 for 1.15, Ed25519 for 2.0), verifiably."""
    label = f"sign-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, kind, label)
    provider = Pkcs11KeyProvider.open(_settings(hsm, signing=(label,)))
    (pair,) = provider.signing_keys()
    key, public = pair.private_key, pair.certificate.public_key()
    if kind == "rsa":
        assert isinstance(key, rsa.RSAPrivateKey) and isinstance(public, rsa.RSAPublicKey)
        public.verify(
            key.sign(b"letter", padding.PKCS1v15(), hashes.SHA256()), b"letter", padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        assert isinstance(key, ed25519.Ed25519PrivateKey) and isinstance(public, ed25519.Ed25519PublicKey)
        public.verify(key.sign(b"letter"), b"letter")


def test_keys_do_not_leave_the_token(hsm: SoftHsm, session: Any, ca: KeyPair) -> None:
    """The token marks the key sensitive and non-extractable, and the key object refuses to serialise."""
    label = f"sealed-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, "rsa", label)
    handle = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
    assert handle[Attribute.EXTRACTABLE] is False and handle[Attribute.SENSITIVE] is True
    (pair,) = Pkcs11KeyProvider.open(_settings(hsm, signing=(label,))).signing_keys()
    assert isinstance(pair.private_key, rsa.RSAPrivateKey)
    with pytest.raises(TypeError, match="cannot be exported"):
        pair.private_key.private_numbers()


def test_token_decrypts_what_it_offers(hsm: SoftHsm, session: Any, ca: KeyPair) -> None:
    """RSA-OAEP with SHA-1, which SoftHSM 2.6.1 takes, decrypts in the token; SHA-256 is refused as a ValueError."""
    label = f"oaep-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, "rsa", label)
    (pair,) = Pkcs11KeyProvider.open(_settings(hsm, signing=(label,))).signing_keys()
    key = pair.private_key
    assert isinstance(key, rsa.RSAPrivateKey)
    sha1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 (what the token takes)
    assert key.decrypt(key.public_key().encrypt(b"content key", sha1), sha1) == b"content key"
    sha256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    with pytest.raises(ValueError, match="refused"):
        key.decrypt(key.public_key().encrypt(b"content key", sha256), sha256)


def test_decryption_without_the_mechanism_refuses_to_start(hsm: SoftHsm, session: Any, ca: KeyPair) -> None:
    """A token key listed for decryption where the token lacks RSA-OAEP with SHA-256 is refused, naming it."""
    label = f"dec-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, "rsa", label)
    with pytest.raises(Pkcs11ConfigError, match=r"decryption\[0\].*CKM_RSA_PKCS_OAEP with CKM_SHA256"):
        Pkcs11KeyProvider.open(_settings(hsm, decryption=(label,)))


def test_serve_refuses_to_start_naming_the_mechanism(hsm: SoftHsm, session: Any, ca: KeyPair, tmp_path: Path) -> None:
    """`accesspoint serve` with a token decryption key the token cannot use exits 2 naming the mechanism and field."""
    label = f"serve-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, "rsa", label)
    (tmp_path / "pmodes.yaml").write_text(json.dumps({"version": 1, "self": "a", "parties": {}, "pmodes": []}))
    pkcs11 = {"module": str(hsm.module), "token": "ap", "pin_env": "AP_TEST_PIN", "signing": [label]}
    (tmp_path / "server.yaml").write_text(
        json.dumps({"pmodes": "pmodes.yaml", "keys": {"pkcs11": {**pkcs11, "decryption": [label]}}})
    )
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "serve", "--config", str(tmp_path / "server.yaml")],
        cwd=REPO, env={**hsm.env(), "AP_TEST_PIN": hsm.pin}, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr.decode()
    reason = json.loads(result.stdout)["error"]["reason"]
    assert "keys.pkcs11.decryption[0]" in reason and "CKM_RSA_PKCS_OAEP" in reason


def test_settings_name_a_missing_label(hsm: SoftHsm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A signing label with no key on the token stops load_config with the file and field."""
    monkeypatch.setenv("AP_TEST_PIN", hsm.pin)
    (tmp_path / "server.yaml").write_text(
        json.dumps(
            {
                "pmodes": "pmodes.yaml",
                "keys": {
                    "pkcs11": {
                        "module": str(hsm.module),
                        "token": "ap",
                        "pin_env": "AP_TEST_PIN",
                        "signing": ["nowhere"],
                    }
                },
            }
        )
    )
    with pytest.raises(
        ConfigError, match=r"server.yaml: field keys.pkcs11.signing\[0\]: no private key labelled 'nowhere'"
    ):
        load_config(tmp_path / "server.yaml")


def test_rollover_without_restart(hsm: SoftHsm, session: Any, ca: KeyPair) -> None:
    """A newer key put on the token under the same label signs after the next look, without reopening anything."""
    label = f"roll-{uuid.uuid4().hex[:8]}"
    _on_token(session, ca, "ed25519", label, start=NOW - timedelta(days=2))
    ticks = [0.0]
    settings = Pkcs11Settings(hsm.module, "ap", hsm.pin, signing=(label,), refresh=30.0)
    provider = Pkcs11KeyProvider.open(settings, clock=lambda: ticks[0])
    old = provider.signing_keys()[0].certificate
    _on_token(session, ca, "ed25519", label, start=NOW - timedelta(hours=1))
    assert provider.signing_keys()[0].certificate == old  # not looked again yet
    ticks[0] = 31.0
    new = provider.signing_keys()[0]
    assert new.certificate != old
    assert new.certificate.not_valid_before_utc > old.not_valid_before_utc
    public = new.certificate.public_key()
    assert isinstance(public, ed25519.Ed25519PublicKey) and isinstance(new.private_key, ed25519.Ed25519PrivateKey)
    public.verify(new.private_key.sign(b"after rollover"), b"after rollover")
