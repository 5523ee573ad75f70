"""The holder's client of the key archive: deposit a new key, get every key released to a new device, delete.

A release generates a one-time X25519 key here, binds its hash into the e-ID proof and decrypts the packages with
it; the keys exist in clear only in this process (the holder's environment).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from accesspoint.keyarchive.eid import sign_proof
from accesspoint.keyarchive.service import client_key_binding
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair, PrivateKey
from accesspoint.servicekit.httpclient import fetch, new_session

MAX_ANSWER = 16 * 1024 * 1024  # a release carries every key the holder has: generous, but bounded


class ArchiveRefusal(Exception):
    """The archive said no: its HTTP status and problem body."""

    def __init__(self, status: int, problem: Any) -> None:
        self.status, self.problem = status, problem
        detail = problem.get("detail") if isinstance(problem, dict) else problem
        super().__init__(f"HTTP {status}: {detail}")


@dataclass
class ArchiveClient:
    """Talks to ``base`` (the archive's URL) as the person whose e-ID is ``eid``."""

    base: str
    eid: KeyPair
    timeout: float = 30.0

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        # Through the shared client: the archive's answer bounded, no redirect followed.
        async with new_session(timeout=self.timeout) as session:
            answer = await fetch(session, "POST", self.base.rstrip("/") + path, json=body, max_bytes=MAX_ANSWER)
        document = json.loads(answer.body)
        if answer.status >= 400:
            raise ArchiveRefusal(answer.status, document)
        return document

    async def challenge(self) -> str:
        """A fresh challenge."""
        return str((await self._post("/api/v1/challenges", {}))["challenge"])

    async def deposit(self, holder: str, pair: KeyPair) -> dict[str, Any]:
        """Deposit the holder's key pair (after the operator registered its certificate in FaR)."""
        challenge = await self.challenge()
        private = pair.private_key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        body = {
            "challenge": challenge,
            "eid": sign_proof(self.eid, "deposit", holder, challenge).to_json(),
            "private_key": base64.b64encode(private).decode(),
            "certificate": pair.certificate.public_bytes(serialization.Encoding.PEM).decode(),
        }
        return dict(await self._post(f"/api/v1/holders/{holder}/keys", body))

    async def release(self, holder: str) -> list[KeyPair]:
        """Every key the archive keeps for the holder, decrypted here with a one-time key."""
        one_time = x25519.X25519PrivateKey.generate()
        public = one_time.public_key().public_bytes_raw()
        binding = client_key_binding(public)
        challenge = await self.challenge()
        body = {
            "challenge": challenge,
            "eid": sign_proof(self.eid, "release", holder, challenge, binding).to_json(),
            "client_key": base64.b64encode(public).decode(),
        }
        answer = await self._post(f"/api/v1/holders/{holder}/releases", body)
        mine = cms.DecryptionKey.from_private_key(one_time, bytes.fromhex(binding)[:20])
        pairs = []
        for item in answer["keys"]:
            plain = cms.decrypt(base64.b64decode(item["package"]), [mine])
            key = serialization.load_der_private_key(plain, None)
            assert isinstance(key, PrivateKey)
            pairs.append(KeyPair(key, x509.load_pem_x509_certificate(item["certificate"].encode())))
        return pairs

    async def delete(self, holder: str) -> int:
        """Ask the archive to erase every key it keeps for the holder."""
        challenge = await self.challenge()
        body = {"challenge": challenge, "eid": sign_proof(self.eid, "delete", holder, challenge).to_json()}
        return int((await self._post(f"/api/v1/holders/{holder}/deletion", body))["deleted"])
