"""Encryption at the sender to the mailbox holder: per network form, the sender's choice without a key, decryption."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.demo_federation import Letter, letter_document
from accesspoint.envelopes.holder_content import (
    ENCRYPTED_CONTENT,
    decrypt_content,
    encrypt_sbd,
    encrypt_secure_delivery,
)
from accesspoint.envelopes.minameddelanden import (
    Attachment,
    ReceiptRequest,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_signed_delivery,
    verify_signed_delivery,
)
from accesspoint.envelopes.sbdh import parse_sbd
from accesspoint.envelopes.schemas import load_minameddelanden_schema
from accesspoint.msh.holder_encryption import (
    MAX_KEY_ANSWER,
    EncryptionRequest,
    HolderKeySource,
    HolderKeyUnavailable,
    WithoutKey,
    current_certificate,
    encrypt_payloads,
    parse_request,
)
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.store import NewPayload
from accesspoint.testing.holders import holder_key, write_key_pair
from accesspoint.testing.pki import issue, make_ca
from far.app import create_app
from far.settings import FarSettings
from tests.conftest import REPO, interop_path
from tests.test_far_support import KIVRA, make_service, seed_people

FAR_TOKEN = "kivra-far-token-0123456789"
FAR_SETTINGS = FarSettings(tokens=(BearerToken("kivra", FAR_TOKEN, scopes("read", f"write:operator={KIVRA.id}")),))

HOLDER = "197802022389"
MM_DELIVERY = SecureDelivery(
    sender=Sender("162021005448", "Skatteverket"),
    recipient=HOLDER,
    messages=(
        SecureMessage(
            id="c1f3a2e4-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
            subject="Beslut",
            support=SupportInfo("Ring oss"),
            content_type="text/plain",
            body="Ditt beslut är bifogat.".encode(),
            attachments=(Attachment("application/pdf", b"%PDF-1.7 beslut", "beslut.pdf"),),
            receipt_request=ReceiptRequest.SIGNED,
        ),
    ),
)
NOW = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("Holder key CA")


@pytest.fixture(scope="module")
def holder(ca: KeyPair) -> KeyPair:
    return holder_key(ca, HOLDER, "x25519")


def _letter() -> bytes:
    return letter_document(Letter("letter-1@nordic", HOLDER, "2021005448", "delivered", "test"))


async def _chunks(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _read(payload: NewPayload) -> bytes:
    return b"".join([chunk async for chunk in payload.chunks])


def test_sbd_keeps_its_header_and_hides_its_document(holder: KeyPair) -> None:
    """The SBDH (sender, receiver, document id) stays readable; the business document is only ciphertext."""
    plain = _letter()
    encrypted = encrypt_sbd(plain, cms.Recipient.from_certificate(holder.certificate))
    assert b"Ditt beslut" not in encrypted
    before, after = parse_sbd(plain), parse_sbd(encrypted)
    assert after.header == before.header
    assert after.document.tag == ENCRYPTED_CONTENT
    assert after.document.get("keyId") == cms.key_id(holder.certificate)
    wrapped, opened = decrypt_content(encrypted, [cms.DecryptionKey.from_key_pair(holder)])
    assert etree.fromstring(opened).tag == before.document.tag
    assert b"Ditt beslut" in opened and wrapped.content_type == "application/xml"


async def test_other_payloads_become_cms_streamed(holder: KeyPair) -> None:
    """A 3 MiB PDF payload (spooled, encrypted off the loop) becomes one CMS message naming the key and the type."""
    pdf = b"%PDF-1.7\n" + bytes(range(256)) * (3 * 4096)
    request = EncryptionRequest(HOLDER, certificate=holder.certificate)
    (payload,) = await encrypt_payloads(
        request, [NewPayload("letter@se", "application/pdf", _chunks(pdf))], source=None, now=NOW
    )
    assert payload.mime_type.startswith("application/pkcs7-mime")
    assert payload.properties["ContentEncryption"] == "end-to-end"
    assert payload.properties["HolderKeyId"] == cms.key_id(holder.certificate)
    assert payload.properties["OriginalMimeType"] == "application/pdf"
    encrypted = await _read(payload)
    assert cms.decrypt(encrypted, [cms.DecryptionKey.from_key_pair(holder)]) == pdf


@pytest.fixture
async def far(aiohttp_server: Any, tmp_path: Path) -> AsyncIterator[HolderKeySource]:
    """A FaR (real app on loopback) where Kivra's holder 197802022389 is reachable; a read token."""
    service = await make_service(tmp_path / "far.db")
    await seed_people(service)
    server = await aiohttp_server(create_app(FAR_SETTINGS, service=service))
    yield HolderKeySource(str(server.make_url("")).rstrip("/"), FAR_TOKEN)
    await service.engine.dispose()


async def test_without_a_key_the_sender_chooses(far: HolderKeySource) -> None:
    """FaR has no key for the holder: refuse fails the submission; hop-by-hop sends it marked as hop-by-hop."""
    refused = EncryptionRequest(HOLDER, WithoutKey.REFUSE)
    with pytest.raises(ValueError, match="has no encryption key"):
        await encrypt_payloads(refused, [NewPayload("a@se", "text/plain", _chunks(b"x"))], source=far, now=NOW)
    anyway = EncryptionRequest(HOLDER, WithoutKey.HOP_BY_HOP)
    (payload,) = await encrypt_payloads(anyway, [NewPayload("a@se", "text/plain", _chunks(b"x"))], source=far, now=NOW)
    assert payload.properties["ContentEncryption"] == "hop-by-hop"
    assert "no encryption key" in payload.properties["HolderKeyMissing"]
    assert await _read(payload) == b"x"


async def test_the_current_key_comes_from_far(far: HolderKeySource, holder: KeyPair) -> None:
    """With the holder's key registered in FaR, the letter is encrypted to exactly that key."""
    pem = holder.certificate.public_bytes(serialization.Encoding.PEM).decode()
    async with aiohttp.ClientSession() as session:
        put = await session.put(
            f"{far.far}/api/v1/holder-keys/{HOLDER}",
            json={"certificate": pem},
            headers={"Authorization": f"Bearer {FAR_TOKEN}"},
        )
        assert put.status == 201
    (payload,) = await encrypt_payloads(
        EncryptionRequest(HOLDER), [NewPayload("a@se", "text/plain", _chunks(b"secret"))], source=far, now=NOW
    )
    assert cms.decrypt(await _read(payload), [cms.DecryptionKey.from_key_pair(holder)]) == b"secret"


@pytest.mark.parametrize("answer", ["oversized", "redirect"])
async def test_far_answer_too_large_or_redirected_is_refused(aiohttp_server: Any, answer: str) -> None:
    """A key lookup reads at most MAX_KEY_ANSWER of FaR's answer and follows no redirect."""
    followed: list[str] = []

    async def keys(request: web.Request) -> web.StreamResponse:
        if answer == "redirect":
            raise web.HTTPFound("/elsewhere")
        return web.Response(body=b'{"results": [' + b" " * (MAX_KEY_ANSWER + 1) + b"]}")

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({"results": [{"encryption_key": None}]})

    app = web.Application()
    app.router.add_post("/api/v1/holder-keys/current", keys)
    app.router.add_post("/elsewhere", elsewhere)
    app.router.add_get("/elsewhere", elsewhere)
    server = await aiohttp_server(app)
    source = HolderKeySource(str(server.make_url("")).rstrip("/"), FAR_TOKEN)
    with pytest.raises(HolderKeyUnavailable, match="could not be asked"):
        await current_certificate(source, HOLDER)
    assert followed == []


async def test_expired_holder_certificate_is_refused(ca: KeyPair) -> None:
    """A holder certificate past its notAfter is refused at submission, naming the rule."""
    old = holder_key(ca, HOLDER, "rsa", not_after=datetime(2025, 1, 1, tzinfo=UTC))
    request = EncryptionRequest(HOLDER, certificate=old.certificate)
    with pytest.raises(ValueError, match=r"\(expired\)"):
        await encrypt_payloads(request, [NewPayload("a@se", "text/plain", _chunks(b"x"))], source=None, now=NOW)


def test_request_defaults_to_the_final_recipient() -> None:
    """encrypt_to_holder: true encrypts to the finalRecipient and refuses without a key by default."""
    request = parse_request({"encrypt_to_holder": True, "properties": {"finalRecipient": HOLDER}})
    assert request == EncryptionRequest(HOLDER, WithoutKey.REFUSE)
    with pytest.raises(ValueError, match="without_key"):
        parse_request({"encrypt_to_holder": {"holder": HOLDER, "without_key": "maybe"}})


def _decrypt_cli(*args: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "mailbox", "decrypt", *args],
        cwd=REPO, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


def test_mailbox_decrypt_cli(holder: KeyPair, ca: KeyPair, tmp_path: Path) -> None:
    """`accesspoint mailbox decrypt` opens the mailbox API's letter with the holder's key, and refuses another key."""
    encrypted = encrypt_sbd(_letter(), cms.Recipient.from_certificate(holder.certificate))
    served = {"id": 1, "content_type": "application/xml", "body": base64.b64encode(encrypted).decode()}
    (tmp_path / "letter.json").write_text(json.dumps(served))
    key, cert = write_key_pair(holder, tmp_path, "holder")
    code, answer = _decrypt_cli(str(tmp_path / "letter.json"), "--key", str(key), "--cert", str(cert),
                                "--out", str(tmp_path / "letter.xml"))  # fmt: skip
    assert code == 0, answer
    plain = (tmp_path / "letter.xml").read_bytes()
    assert b"Ditt beslut" in plain and answer["sha256"] == hashlib.sha256(plain).hexdigest()
    assert answer["key_id"] == cms.key_id(holder.certificate)
    other_key, other_cert = write_key_pair(holder_key(ca, HOLDER, "x25519"), tmp_path, "other")
    code, answer = _decrypt_cli(str(tmp_path / "letter.json"), "--key", str(other_key), "--cert", str(other_cert))
    assert code == 1 and answer["error"]["code"] == "not-for-these-keys"  # type: ignore[index]


def test_mina_meddelanden_bodies_encrypted_before_the_sender_signs(holder: KeyPair, ca: KeyPair) -> None:
    """Each SecureMessage body and attachment is ciphertext in a SignedDelivery that still validates against the
    contract and verifies; the header (sender, recipient, subject, receipt request) is untouched; the holder opens
    the body and the attachment to what was written."""
    schema = load_minameddelanden_schema(interop_path("minameddelanden/contracts"))
    encrypted = encrypt_secure_delivery(MM_DELIVERY, cms.Recipient.from_certificate(holder.certificate))
    sender = issue(ca, "Skatteverket")
    signed = build_signed_delivery(encrypted, sender, schema=schema)
    assert b"Ditt beslut" not in signed and b"%PDF" not in signed
    verified = verify_signed_delivery(signed, sender=sender.certificate, schema=schema).delivery
    assert (verified.sender, verified.recipient) == (MM_DELIVERY.sender, MM_DELIVERY.recipient)
    (message,) = verified.messages
    assert (message.subject, message.receipt_request) == ("Beslut", ReceiptRequest.SIGNED)
    keys = [cms.DecryptionKey.from_key_pair(holder)]
    wrapped, body = decrypt_content(message.body, keys)
    assert (wrapped.content_type, body) == ("text/plain", "Ditt beslut är bifogat.".encode())
    wrapped, attachment = decrypt_content(message.attachments[0].body, keys)
    assert (wrapped.content_type, attachment) == ("application/pdf", b"%PDF-1.7 beslut")
