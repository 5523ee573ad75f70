"""The archive master key: an AES-256 key made in a PKCS#11 token, non-extractable; wrapping happens in the token.

A holder's private key (PKCS#8) is encrypted with CKM_AES_GCM under the master key, with the holder and key id as
additional authenticated data, so a wrapped key moved to another holder's row does not unwrap. Blob: version byte
1, the 12-byte nonce, then ciphertext and the 16-byte tag as the token returns them. Rotating the master key (a
two-person act) makes a new token key and wraps every holder key again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams

from accesspoint.security.pkcs11 import library

VERSION = 1
NONCE = 12


class MasterKeyError(Exception):
    """The token could not wrap or unwrap (a wrong key, an altered blob, a token without the key)."""


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """Where the master keys live: the PKCS#11 module, the token and its user PIN."""

    module: Path
    token: str
    pin: str


class MasterKeys:
    """Master keys in one token, by label; one session, one thread at a time."""

    def __init__(self, settings: TokenSettings) -> None:
        token = library(settings.module).get_token(token_label=settings.token)
        try:
            self.session: Any = token.open(user_pin=settings.pin, rw=True)
        except pkcs11.UserAlreadyLoggedIn:
            self.session = token.open(rw=True)
        self.lock = threading.Lock()

    def exists(self, label: str) -> bool:
        """True when the token holds a secret key with this label."""
        with self.lock:
            found = list(self.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}))
        return bool(found)

    def generate(self, label: str) -> None:
        """Make a new AES-256 master key in the token: sensitive, never extractable."""
        with self.lock:
            self.session.generate_key(
                KeyType.AES,
                256,
                label=label,
                store=True,
                template={Attribute.EXTRACTABLE: False, Attribute.SENSITIVE: True, Attribute.TOKEN: True},
            )

    def _key(self, label: str) -> Any:
        try:
            return self.session.get_key(object_class=ObjectClass.SECRET_KEY, label=label)
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
            raise MasterKeyError(f"the token has no single master key {label!r}") from None

    def wrap(self, label: str, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt in the token under the master key ``label``."""
        nonce = os.urandom(NONCE)
        with self.lock:
            sealed = self._key(label).encrypt(
                plaintext, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
            )
        return bytes([VERSION]) + nonce + bytes(sealed)

    def unwrap(self, label: str, blob: bytes, aad: bytes) -> bytes:
        """Decrypt in the token; MasterKeyError when the blob or its context was altered."""
        if len(blob) < 1 + NONCE + 16 or blob[0] != VERSION:
            raise MasterKeyError("not a wrapped key of this archive")
        nonce = blob[1 : 1 + NONCE]
        try:
            with self.lock:
                plain = self._key(label).decrypt(
                    blob[1 + NONCE :], mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
        except pkcs11.PKCS11Error:
            raise MasterKeyError("the token refused to unwrap (altered, or wrapped for another holder)") from None
        return bytes(plain)

    def close(self) -> None:
        """Log out."""
        self.session.close()
