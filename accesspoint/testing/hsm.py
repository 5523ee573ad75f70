"""SoftHSM2 for tests and benchmarks: one token folder per process, keys put on tokens as an HSM's admin would.

SoftHSM reads ``SOFTHSM2_CONF`` once, when the process first initialises the module, and sees only the tokens that
existed then: ``shared_softhsm`` therefore makes every token a process needs in one go, before anything loads the
module, and child processes get the same folder through ``SoftHsm.env``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from pkcs11 import Attribute, KeyType, ObjectClass
from pkcs11.util.ec import encode_named_curve_parameters

from accesspoint.security.keys import PrivateKey
from accesspoint.security.pkcs11 import library

MODULES = (Path("/usr/lib/softhsm/libsofthsm2.so"), Path("/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so"))
TOKENS = ("ap", "archive", "bench")
PIN = "4711-test-pin"
ED25519_OID = "1.3.101.112"
_NON_EXTRACTABLE = {Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.TOKEN: True}


@dataclass(frozen=True, slots=True)
class SoftHsm:
    """A SoftHSM2 token folder: its configuration file, the module and the user PIN of every token."""

    folder: Path
    conf: Path
    module: Path
    pin: str = PIN

    def env(self) -> dict[str, str]:
        """The environment a child process needs to see these tokens."""
        return {**os.environ, "SOFTHSM2_CONF": str(self.conf)}

    def session(self, token: str) -> Any:
        """A read-write session, logged in as the user (close it after use)."""
        found = library(self.module).get_token(token_label=token)
        try:
            return found.open(user_pin=self.pin, rw=True)
        except pkcs11.UserAlreadyLoggedIn:
            return found.open(rw=True)


_SHARED: SoftHsm | None = None


def softhsm_module() -> Path:
    """Debian's SoftHSM2 module (AssertionError when softhsm2 is not installed)."""
    found = next((m for m in MODULES if m.exists()), None)
    assert found is not None and shutil.which("softhsm2-util"), "softhsm2: scripts/ensure-system-packages.sh"
    return found


def shared_softhsm() -> SoftHsm:
    """This process's SoftHSM2 folder with the tokens in TOKENS, made on first use; SOFTHSM2_CONF points at it."""
    global _SHARED  # one per process: the module is initialised once
    if _SHARED is None:
        module = softhsm_module()
        folder = Path(tempfile.mkdtemp(prefix="softhsm-"))
        (folder / "tokens").mkdir()
        conf = folder / "softhsm2.conf"
        conf.write_text(f"directories.tokendir = {folder / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
        env = {**os.environ, "SOFTHSM2_CONF": str(conf)}
        for label in TOKENS:
            subprocess.run(
                ["softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", PIN + "-so"],
                env=env, check=True, capture_output=True,
            )  # fmt: skip
        os.environ["SOFTHSM2_CONF"] = str(conf)
        _SHARED = SoftHsm(folder, conf, module)
    return _SHARED


def store_certificate(session: Any, certificate: x509.Certificate, label: str, key_id: bytes) -> None:
    """A CKO_CERTIFICATE with the key's label and CKA_ID: how the provider finds a key's certificate."""
    session.create_object(
        {
            Attribute.CLASS: ObjectClass.CERTIFICATE,
            Attribute.CERTIFICATE_TYPE: pkcs11.CertificateType.X_509,
            Attribute.TOKEN: True,
            Attribute.LABEL: label,
            Attribute.ID: key_id,
            Attribute.SUBJECT: certificate.subject.public_bytes(),
            Attribute.VALUE: certificate.public_bytes(serialization.Encoding.DER),
        }
    )


def import_key(session: Any, key: PrivateKey, label: str, key_id: bytes) -> None:
    """Put an existing RSA or Ed25519 private key on the token, non-extractable from then on."""
    template: dict[Any, Any] = {
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.LABEL: label,
        Attribute.ID: key_id,
        Attribute.SIGN: True,
        **_NON_EXTRACTABLE,
    }
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()

        def big(value: int) -> bytes:
            return value.to_bytes((value.bit_length() + 7) // 8, "big")

        template |= {
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.DECRYPT: True,
            Attribute.MODULUS: big(numbers.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: big(numbers.public_numbers.e),
            Attribute.PRIVATE_EXPONENT: big(numbers.d),
            Attribute.PRIME_1: big(numbers.p),
            Attribute.PRIME_2: big(numbers.q),
            Attribute.EXPONENT_1: big(numbers.dmp1),
            Attribute.EXPONENT_2: big(numbers.dmq1),
            Attribute.COEFFICIENT: big(numbers.iqmp),
        }
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.private_bytes_raw()
        template |= {
            Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
            Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID),
            Attribute.VALUE: raw,
        }
    else:
        raise TypeError(f"cannot import a {type(key).__name__}")
    session.create_object(template)


def generate_key(session: Any, kind: str, label: str, key_id: bytes) -> rsa.RSAPublicKey | ed25519.Ed25519PublicKey:
    """A key made in the token (never outside it): RSA-2048 or Ed25519; its public key for a certificate."""
    if kind == "rsa":
        public, _ = session.generate_keypair(
            KeyType.RSA, 2048, store=True, label=label, id=key_id, private_template=_NON_EXTRACTABLE
        )
        return rsa.RSAPublicNumbers(
            int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"), int.from_bytes(public[Attribute.MODULUS], "big")
        ).public_key()
    public, _ = session.generate_keypair(
        KeyType.EC_EDWARDS,
        store=True,
        label=label,
        id=key_id,
        public_template={Attribute.EC_PARAMS: encode_named_curve_parameters(ED25519_OID)},
        private_template=_NON_EXTRACTABLE,
    )
    point = bytes(public[Attribute.EC_POINT])
    return ed25519.Ed25519PublicKey.from_public_bytes(point[-32:])  # a DER OCTET STRING around the 32 bytes
