"""Access point keys in a PKCS#11 token (an HSM; SoftHSM2 in tests): they sign and decrypt there, never leave.

A key is named by its label. Each private key on the token has a CKA_ID; the certificate with the same CKA_ID
(a CKO_CERTIFICATE object on the token) says who it is. Rollover: put a new key and its certificate on the token
under the same label; the provider looks again every ``refresh`` and signs with the newest valid certificate's key,
while every key under a decryption label keeps decrypting (old messages in flight). No restart.

The keys are wrapped as cryptography's key types (``Pkcs11RsaPrivateKey`` is an ``RSAPrivateKey``), so the
signing and decryption code that takes a ``KeyPair`` works unchanged; what the token cannot do raises.

At start ``Pkcs11KeyProvider.open`` checks that the token offers each mechanism the configured keys need
(``C_GetMechanismInfo``, and for RSA-OAEP a probe decryption with the profile's SHA-256 parameters, since the
mechanism list cannot say which hashes a token's OAEP takes). SoftHSM 2.6.1 lists CKM_RSA_PKCS_OAEP but takes SHA-1
only, and has no Montgomery (X25519) keys: configured to decrypt with such keys, the access point refuses to start
with an error naming the mechanism; keep those decryption keys in files (``keys.decryption``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self

import pkcs11
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass

from accesspoint.security.keys import KeyPair

# Not every PKCS#11 binding names it: CKM_EC_MONTGOMERY_KEY_PAIR_GEN (PKCS#11 3.0), how a token says it has
# X25519 keys.
CKM_EC_MONTGOMERY_KEY_PAIR_GEN = 0x1056
_SIGN_MECHANISMS: dict[type[hashes.HashAlgorithm], Mechanism] = {
    hashes.SHA256: Mechanism.SHA256_RSA_PKCS,
    hashes.SHA384: Mechanism.SHA384_RSA_PKCS,
    hashes.SHA512: Mechanism.SHA512_RSA_PKCS,
}
_OAEP_HASHES: dict[type[hashes.HashAlgorithm], tuple[Mechanism, Any]] = {
    hashes.SHA1: (Mechanism.SHA_1, pkcs11.MGF.SHA1),
    hashes.SHA256: (Mechanism.SHA256, pkcs11.MGF.SHA256),
    hashes.SHA384: (Mechanism.SHA384, pkcs11.MGF.SHA384),
    hashes.SHA512: (Mechanism.SHA512, pkcs11.MGF.SHA512),
}


class Pkcs11ConfigError(ValueError):
    """A token, key or mechanism the settings name that is not there; the message names the setting."""


_LIBRARIES: dict[str, Any] = {}  # Any: the binding's stub for lib lacks get_token
_LIBRARIES_LOCK = threading.Lock()


def library(module: Path) -> Any:
    """The module, loaded and initialised once per process (C_Initialize a second time is an error)."""
    with _LIBRARIES_LOCK:
        found = _LIBRARIES.get(str(module))
        if found is None:
            found = _LIBRARIES[str(module)] = pkcs11.lib(str(module))
        return found


class _Token:
    """One logged-in session, used by one thread at a time (PKCS#11 sessions are not to be shared concurrently)."""

    def __init__(self, module: Path, token_label: str, pin: str) -> None:
        self.lib = library(module)
        self.token = self.lib.get_token(token_label=token_label)
        try:
            self.session = self.token.open(user_pin=pin)
        except pkcs11.UserAlreadyLoggedIn:
            # Login is per application and token: another session of this process has logged in already.
            self.session = self.token.open()
        self.lock = threading.Lock()

    def mechanisms(self) -> set[int]:
        return {int(m) for m in self.token.slot.get_mechanisms()}

    def flags(self, mechanism: Mechanism) -> MechanismFlag:
        return MechanismFlag(self.token.slot.get_mechanism_info(mechanism).flags)

    def close(self) -> None:
        self.session.close()


def _refuse_export() -> NoReturn:
    raise TypeError("a key in a PKCS#11 token cannot be exported")


class _InToken:
    """What every token key shares: nothing to serialise, and a copy is the same handle."""

    def private_bytes(
        self,
        encoding: serialization.Encoding,
        format: serialization.PrivateFormat,
        encryption_algorithm: serialization.KeySerializationEncryption,
    ) -> bytes:
        _refuse_export()

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Self:
        return self


class Pkcs11RsaPrivateKey(_InToken, rsa.RSAPrivateKey):
    """An RSA key that stays in the token: PKCS#1 v1.5 signatures and RSA-OAEP decryption happen there."""

    def __init__(self, token: _Token, handle: Any, public: rsa.RSAPublicKey) -> None:  # Any: the binding's mixins
        self._token, self._handle, self._public = token, handle, public

    # ``algorithm: Any``: the supertype's union grows with cryptography's releases (NoDigestInfo in 46).
    def sign(self, data: bytes, padding: padding.AsymmetricPadding, algorithm: Any) -> bytes:
        """PKCS#1 v1.5 with SHA-256/384/512 (what eDelivery AS4 1.15 signs with)."""
        mechanism = _SIGN_MECHANISMS.get(type(algorithm))
        if padding.name != "EMSA-PKCS1-v1_5" or mechanism is None:
            raise ValueError(f"the token key signs PKCS#1 v1.5 with SHA-2 only, not {padding.name}/{algorithm!r}")
        with self._token.lock:
            return bytes(self._handle.sign(data, mechanism=mechanism))

    def decrypt(self, ciphertext: bytes, padding: padding.AsymmetricPadding) -> bytes:
        """RSA-OAEP in the token (ValueError when the token refuses, as cryptography's keys raise)."""
        oaep_hash = getattr(padding, "_algorithm", None)
        mgf = getattr(getattr(padding, "_mgf", None), "_algorithm", None)
        chosen = _OAEP_HASHES.get(type(oaep_hash)) if isinstance(oaep_hash, hashes.HashAlgorithm) else None
        if padding.name != "EME-OAEP" or type(oaep_hash) is not type(mgf) or chosen is None:
            raise ValueError("the token key decrypts RSA-OAEP with the same SHA for the hash and MGF1 only")
        digest, mgf_id = chosen
        try:
            with self._token.lock:
                return bytes(
                    self._handle.decrypt(
                        ciphertext, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=(digest, mgf_id, None)
                    )
                )
        except pkcs11.PKCS11Error as exc:
            raise ValueError(f"the token refused to decrypt ({type(exc).__name__})") from None

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def public_key(self) -> rsa.RSAPublicKey:
        return self._public

    def private_numbers(self) -> rsa.RSAPrivateNumbers:
        _refuse_export()



class Pkcs11Ed25519PrivateKey(_InToken, ed25519.Ed25519PrivateKey):
    """An Ed25519 key that stays in the token (CKM_EDDSA): what eDelivery AS4 2.0 signs with."""

    def __init__(self, token: _Token, handle: Any, public: ed25519.Ed25519PublicKey) -> None:
        self._token, self._handle, self._public = token, handle, public

    def sign(self, data: bytes | bytearray | memoryview) -> bytes:
        """A pure Ed25519 signature made by the token."""
        with self._token.lock:
            return bytes(self._handle.sign(bytes(data), mechanism=Mechanism.EDDSA))

    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public

    def private_bytes_raw(self) -> bytes:
        _refuse_export()


@dataclass(frozen=True, slots=True)
class Pkcs11Settings:
    """``keys.pkcs11`` in the access point's settings: which token and which labels do what."""

    module: Path
    token: str
    pin: str
    signing: tuple[str, ...] = ()
    decryption: tuple[str, ...] = ()
    refresh: float = 60.0  # seconds between looks at the token for rolled-over keys
    where: str = "keys.pkcs11"


def _key_pairs(token: _Token, label: str, now: datetime) -> list[KeyPair]:
    """Every key under ``label`` that has a valid certificate on the token, the newest certificate first."""
    pairs: list[tuple[datetime, KeyPair]] = []
    # One search at a time per session (C_FindObjectsInit while another is open is CKR_OPERATION_ACTIVE).
    handles = list(token.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: label}))
    for handle in handles:
        assert isinstance(handle, pkcs11.PrivateKey)
        key_id = handle[Attribute.ID]
        search = {Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.ID: key_id}
        for cert_object in list(token.session.get_objects(search)):
            certificate = x509.load_der_x509_certificate(bytes(cert_object[Attribute.VALUE]))
            if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
                continue
            public = certificate.public_key()
            key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
            if handle.key_type == KeyType.RSA and isinstance(public, rsa.RSAPublicKey):
                key = Pkcs11RsaPrivateKey(token, handle, public)
            elif handle.key_type == KeyType.EC_EDWARDS and isinstance(public, ed25519.Ed25519PublicKey):
                key = Pkcs11Ed25519PrivateKey(token, handle, public)
            else:
                continue
            pairs.append((certificate.not_valid_before_utc, KeyPair(key, certificate)))
    pairs.sort(key=lambda p: p[0], reverse=True)
    return [pair for _, pair in pairs]


def _check_signing(token: _Token, pair: KeyPair, where: str) -> None:
    eddsa = isinstance(pair.private_key, ed25519.Ed25519PrivateKey)
    mechanism = Mechanism.EDDSA if eddsa else Mechanism.SHA256_RSA_PKCS
    if int(mechanism) not in token.mechanisms() or not token.flags(mechanism) & MechanismFlag.SIGN:
        raise Pkcs11ConfigError(f"{where}: the token does not offer CKM_{mechanism.name} for signing")


def _check_decryption(token: _Token, pair: KeyPair, where: str) -> None:
    key = pair.private_key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise Pkcs11ConfigError(f"{where}: only RSA keys decrypt in a token (X25519 needs a Montgomery key)")
    if int(Mechanism.RSA_PKCS_OAEP) not in token.mechanisms() or not token.flags(Mechanism.RSA_PKCS_OAEP) & (
        MechanismFlag.DECRYPT
    ):
        raise Pkcs11ConfigError(f"{where}: the token does not offer CKM_RSA_PKCS_OAEP for decryption")
    # The list cannot say which hashes the token's OAEP takes: ask it to decrypt a block made with the profile's.
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    probe = b"pkcs11 oaep probe"
    try:
        answer = key.decrypt(key.public_key().encrypt(probe, oaep), oaep)
    except ValueError:
        answer = b""
    if answer != probe:
        raise Pkcs11ConfigError(
            f"{where}: the token refuses CKM_RSA_PKCS_OAEP with CKM_SHA256 and CKG_MGF1_SHA256 (eDelivery AS4 "
            "1.15 RSA-OAEP); keep this decryption key in a file (keys.decryption)"
        )


@dataclass
class Pkcs11KeyProvider:
    """The token's keys by label, looked up again every ``refresh`` seconds (rollover without restart)."""

    settings: Pkcs11Settings
    token: _Token
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _signing: tuple[KeyPair, ...] = ()
    _decryption: tuple[KeyPair, ...] = ()
    _checked_at: float = float("-inf")
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Pkcs11Settings, **options: Any) -> Pkcs11KeyProvider:
        """Log in and check every configured key and the mechanisms it needs; Pkcs11ConfigError names what fails."""
        where = settings.where
        if not settings.signing and not settings.decryption:
            raise Pkcs11ConfigError(f"{where}: name at least one signing or decryption label")
        try:
            token = _Token(settings.module, settings.token, settings.pin)
        except (pkcs11.PKCS11Error, RuntimeError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise Pkcs11ConfigError(
                f"{where}: cannot open token {settings.token!r} in {settings.module}: {detail}"
            ) from None
        provider = cls(settings, token, **options)
        try:
            provider.refresh()
            for i, label in enumerate(settings.signing):
                for pair in provider._by_label(label, f"{where}.signing[{i}]"):
                    _check_signing(token, pair, f"{where}.signing[{i}] {label!r}")
            for i, label in enumerate(settings.decryption):
                for pair in provider._by_label(label, f"{where}.decryption[{i}]"):
                    _check_decryption(token, pair, f"{where}.decryption[{i}] {label!r}")
        except Exception:
            token.close()
            raise
        return provider

    def _by_label(self, label: str, where: str) -> list[KeyPair]:
        pairs = _key_pairs(self.token, label, self.now())
        if not pairs:
            raise Pkcs11ConfigError(f"{where}: no private key labelled {label!r} with a valid certificate on the token")
        return pairs

    def refresh(self) -> None:
        """Look at the token again: the newest valid key per signing label, every valid key per decryption label."""
        with self.token.lock:
            now = self.now()
            signing = tuple(p[0] for p in (_key_pairs(self.token, label, now) for label in self.settings.signing) if p)
            decryption = tuple(
                pair for label in self.settings.decryption for pair in _key_pairs(self.token, label, now)
            )
        with self._lock:
            self._signing, self._decryption = signing, decryption
            self._checked_at = self.clock()

    def _current(self) -> None:
        if self.clock() - self._checked_at >= self.settings.refresh:
            self.refresh()

    def signing_keys(self) -> Sequence[KeyPair]:
        """The current key of each signing label."""
        self._current()
        return self._signing

    def decryption_keys(self) -> Sequence[KeyPair]:
        """Every valid key under the decryption labels, the newest first."""
        self._current()
        return self._decryption

    def close(self) -> None:
        """Log out."""
        self.token.close()


class HardwareKeys(Protocol):
    """What the access point's key ring asks of keys held outside the process."""

    def signing_keys(self) -> Sequence[KeyPair]:
        """The current signing key of each configured label."""
        ...

    def decryption_keys(self) -> Sequence[KeyPair]:
        """Every key that may decrypt, the newest first."""
        ...


_SETTINGS = {"module", "token", "pin", "pin_env", "signing", "decryption", "refresh"}


def parse_settings(base: Path, value: object, where: str) -> Pkcs11Settings:
    """``keys.pkcs11`` from a settings mapping; Pkcs11ConfigError names the field at fault.

    ``{module: FILE, token: LABEL, pin_env: NAME (or pin: PIN), signing: [LABEL...], decryption: [LABEL...],
    refresh: SECONDS}``
    """
    if not isinstance(value, dict):
        raise Pkcs11ConfigError(f"{where}: expected a mapping {{module, token, pin_env, signing, decryption}}")
    unknown = sorted(set(value) - _SETTINGS)
    if unknown:
        raise Pkcs11ConfigError(f"{where}.{unknown[0]}: unknown setting (known: {', '.join(sorted(_SETTINGS))})")
    for required in ("module", "token"):
        if not isinstance(value.get(required), str) or not value[required]:
            raise Pkcs11ConfigError(f"{where}.{required}: required (a string)")
    if "pin_env" in value:
        pin = os.environ.get(str(value["pin_env"]))
        if pin is None:
            raise Pkcs11ConfigError(f"{where}.pin_env: the environment variable {value['pin_env']} is not set")
    elif isinstance(value.get("pin"), str | int):
        pin = str(value["pin"])
    else:
        raise Pkcs11ConfigError(f"{where}.pin_env: required (or pin): the token's user PIN")
    labels: dict[str, tuple[str, ...]] = {}
    for use in ("signing", "decryption"):
        entries = value.get(use, [])
        if not isinstance(entries, list) or not all(isinstance(e, str) and e for e in entries):
            raise Pkcs11ConfigError(f"{where}.{use}: a list of key labels")
        labels[use] = tuple(entries)
    refresh = value.get("refresh", 60)
    if isinstance(refresh, bool) or not isinstance(refresh, int | float) or refresh < 0:
        raise Pkcs11ConfigError(f"{where}.refresh: seconds between looks at the token (0 or more)")
    module = Path(value["module"])
    return Pkcs11Settings(
        module if module.is_absolute() else base / module,
        value["token"],
        pin,
        labels["signing"],
        labels["decryption"],
        float(refresh),
        where,
    )


def open_hardware_keys(base: Path, value: object, where: str) -> Pkcs11KeyProvider | None:
    """The token's keys as configured (None when ``keys.pkcs11`` is absent), checked as ``Pkcs11KeyProvider.open``."""
    if value is None:
        return None
    return Pkcs11KeyProvider.open(parse_settings(base, value, where))
