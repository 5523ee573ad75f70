"""Encrypt at the sender: a submission asks for its letter's content to be encrypted to the mailbox holder's key.

``"encrypt_to_holder": {"holder": "197802022389", "without_key": "refuse" | "hop-by-hop", "certificate": PEM}``
in a submission (``POST /api/v1/messages``; mailings call ``encrypt_payloads`` the same way). The holder's current
key comes from FaR (settings ``holder_keys: {far: URL, token: …}``) unless the submission gives the certificate;
``holder`` defaults to the ``finalRecipient`` property. This happens before anything else: the stored payloads,
the AS4 message and every copy downstream hold ciphertext only.

Each payload is encrypted in its network's form (accesspoint/envelopes/holder_content.py): an SBD keeps its header
and carries ``<EncryptedContent>``; anything else becomes a CMS message (``application/pkcs7-mime``), streamed
through a bounded spool and encrypted off the event loop. The payload's PartProperties say what was done —
``ContentEncryption`` ``end-to-end`` with ``HolderKeyId`` (and ``OriginalMimeType``), or ``hop-by-hop`` with
``HolderKeyMissing`` when the holder has no key and the sender chose to send anyway — so the message's status,
and the receiving side, state it. ``without_key: refuse`` (the default) refuses the submission (422) instead.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import IO, Any

import aiohttp
from cryptography import x509

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.holder_content import CMS_MIME_TYPE, encrypt_sbd
from accesspoint.security import cms
from accesspoint.security.holder_keys import HolderKeyRefused, check_holder_certificate
from accesspoint.servicekit.httpclient import fetch, new_session
from accesspoint.store import NewPayload

SPOOL_IN_MEMORY = 1024 * 1024  # a payload larger than this is spooled to a temporary file before encryption
BLOCK = 1024 * 1024
SBD_LIMIT = 64 * 1024 * 1024  # an SBD is parsed as a whole (its business document is one XML element)
MAX_KEY_ANSWER = 1024 * 1024  # FaR's answer about one holder's key: a certificate and a few fields
CONTENT_ENCRYPTION = "ContentEncryption"
HOLDER_KEY_ID = "HolderKeyId"
ORIGINAL_MIME_TYPE = "OriginalMimeType"
HOLDER_KEY_MISSING = "HolderKeyMissing"


class WithoutKey(StrEnum):
    """What the sender wants when the holder has no encryption key."""

    REFUSE = "refuse"
    HOP_BY_HOP = "hop-by-hop"


class HolderKeyUnavailable(Exception):
    """FaR could not be asked for the holder's key (the API answers 503: retry later)."""


@dataclass(frozen=True, slots=True)
class HolderKeySource:
    """``holder_keys`` in the settings: FaR's base URL and a read token."""

    far: str
    token: str
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class EncryptionRequest:
    """A submission's ``encrypt_to_holder``, checked."""

    holder: str
    without_key: WithoutKey = WithoutKey.REFUSE
    certificate: x509.Certificate | None = None


def parse_source(value: object, where: str) -> HolderKeySource | None:
    """``holder_keys: {far: URL, token: T}`` (None when absent); ValueError naming the field otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"far", "token", "timeout"}:
        raise ValueError(f"{where}: expected {{far: URL, token: TOKEN}}")
    far, token = value.get("far"), value.get("token")
    if not isinstance(far, str) or not far.startswith(("http://", "https://")):
        raise ValueError(f"{where}.far: FaR's base URL (http:// or https://)")
    if not isinstance(token, str) or len(token) < 16:
        raise ValueError(f"{where}.token: a FaR token with the read scope (16 characters or more)")
    return HolderKeySource(far.rstrip("/"), token, float(value.get("timeout", 10)))


def parse_request(document: Mapping[str, Any]) -> EncryptionRequest | None:
    """The submission's ``encrypt_to_holder`` (None when it asks for none); ValueError naming the field."""
    given = document.get("encrypt_to_holder")
    if given is None or given is False:
        return None
    if given is True:
        given = {}
    if not isinstance(given, dict) or set(given) - {"holder", "without_key", "certificate"}:
        raise ValueError("encrypt_to_holder: expected {holder, without_key: refuse | hop-by-hop, certificate}")
    holder = given.get("holder") or _final_recipient(document.get("properties"))
    if not isinstance(holder, str) or not holder:
        raise ValueError("encrypt_to_holder.holder: required (or a finalRecipient property)")
    try:
        without_key = WithoutKey(given.get("without_key", WithoutKey.REFUSE))
    except ValueError:
        raise ValueError("encrypt_to_holder.without_key: refuse or hop-by-hop") from None
    certificate = None
    if given.get("certificate") is not None:
        try:
            certificate = x509.load_pem_x509_certificate(str(given["certificate"]).encode())
        except ValueError:
            raise ValueError("encrypt_to_holder.certificate: not a PEM certificate") from None
    return EncryptionRequest(holder, without_key, certificate)


def _final_recipient(properties: object) -> str | None:
    if not isinstance(properties, dict):
        return None
    value = properties.get("finalRecipient")
    if isinstance(value, dict):
        value = value.get("value")
    return value if isinstance(value, str) else None


async def current_certificate(source: HolderKeySource, holder: str) -> x509.Certificate | None:
    """The holder's current encryption certificate according to FaR, None when it has none."""
    headers = {"Authorization": f"Bearer {source.token}"}
    url = f"{source.far}/api/v1/holder-keys/current"
    try:
        # Through the shared client: FaR's answer bounded, no redirect followed.
        async with new_session(timeout=source.timeout) as session:
            answer = await fetch(
                session, "POST", url, json={"recipients": [holder]}, headers=headers, max_bytes=MAX_KEY_ANSWER
            )
        if answer.status != 200:
            raise HolderKeyUnavailable(f"FaR answered HTTP {answer.status} for {holder}'s key")
        found = json.loads(answer.body)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise HolderKeyUnavailable(f"FaR could not be asked for {holder}'s key ({type(exc).__name__})") from None
    try:
        key = found["results"][0]["encryption_key"]
        return None if key is None else x509.load_pem_x509_certificate(key["certificate"].encode())
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise HolderKeyUnavailable(f"FaR's answer about {holder}'s key is unclear ({type(exc).__name__})") from None


async def encrypt_payloads(
    request: EncryptionRequest,
    payloads: Sequence[NewPayload],
    *,
    source: HolderKeySource | None,
    now: datetime,
) -> tuple[NewPayload, ...]:
    """The payloads as they are to be stored and sent: encrypted to the holder, or marked hop-by-hop; ValueError
    (the API's 422) for a refusal, HolderKeyUnavailable when FaR cannot be asked."""
    certificate = request.certificate
    if certificate is None:
        if source is None:
            raise ValueError("encrypt_to_holder: no certificate given and no holder_keys.far configured to ask")
        certificate = await current_certificate(source, request.holder)
    if certificate is None:
        if request.without_key is WithoutKey.REFUSE:
            raise ValueError(f"encrypt_to_holder: {request.holder} has no encryption key (without_key: refuse)")
        missing = {CONTENT_ENCRYPTION: "hop-by-hop", HOLDER_KEY_MISSING: "the holder has no encryption key"}
        return tuple(replace(p, properties={**p.properties, **missing}) for p in payloads)
    try:
        check_holder_certificate(certificate, now=now)
    except HolderKeyRefused as exc:
        raise ValueError(f"encrypt_to_holder: the holder's certificate is refused: {exc} ({exc.rule})") from None
    recipient = cms.Recipient.from_certificate(certificate)
    return tuple([await _encrypted(payload, recipient) for payload in payloads])


async def _encrypted(payload: NewPayload, recipient: cms.Recipient) -> NewPayload:
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 (closed by the stream)
    size = 0
    async for chunk in payload.chunks:
        size += len(chunk)
        await asyncio.to_thread(spool.write, chunk)
    marked = {**payload.properties, CONTENT_ENCRYPTION: "end-to-end", HOLDER_KEY_ID: recipient.key_id}
    if size <= SBD_LIMIT and "xml" in payload.mime_type:
        spool.seek(0)
        document = await asyncio.to_thread(spool.read)
        try:
            encrypted = await asyncio.to_thread(encrypt_sbd, document, recipient)
        except EnvelopeError:
            pass  # not an SBD: the whole payload is encrypted below
        else:
            spool.close()
            return replace(payload, chunks=_once(encrypted), properties=marked)
    spool.seek(0)
    return NewPayload(
        payload.content_id,
        CMS_MIME_TYPE,
        _off_loop(cms.encrypt_stream(_blocks(spool), size, [recipient]), spool),
        {**marked, ORIGINAL_MIME_TYPE: payload.mime_type},
    )


def _blocks(spool: IO[bytes]) -> Iterator[bytes]:
    while block := spool.read(BLOCK):
        yield block


async def _off_loop(chunks: Iterator[bytes], spool: IO[bytes]) -> AsyncIterator[bytes]:
    """Each step (a block read and encrypted) in a worker thread; the spool closed when done or abandoned."""
    try:
        while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
            yield chunk
    finally:
        spool.close()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data

