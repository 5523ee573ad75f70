"""The receive pipeline: a received user message becomes a ``VerifiedMessage`` or an EbmsError.

It matches the P-Mode leg, decrypts, verifies the signature and the signer's trust, decompresses and hashes the
payloads, and builds the receipt, under the leg's policy. The rest of the shell takes only the
``VerifiedMessage`` it returns (route, header, signer, payloads), never a header that was not verified.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from accesspoint.core.compression import decompress_with
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import SignalMessage, UserMessage
from accesspoint.core.namespaces import GZIP, SoapVersion
from accesspoint.msh.context import Context
from accesspoint.msh.receiving import AcceptedMessage, accept_user_message
from accesspoint.msh.wire import read_spooled
from accesspoint.security.signing import VerifiedSignature
from accesspoint.security.trust import TrustResult
from accesspoint.store import NewPayload
from pmode import Route


@dataclass(slots=True)
class VerifiedMessage:
    """A user message that passed its leg's security: what was proven and the receipt that answers it."""

    route: Route
    user_message: UserMessage
    signature: VerifiedSignature | None  # None only on a leg whose policy does not sign
    trust: TrustResult | None
    receipt: SignalMessage  # unsigned; the inbound pipeline signs it once the message is stored
    envelope: bytes  # the SOAP envelope as received: the raw-message evidence
    soap_version: SoapVersion
    _accepted: AcceptedMessage

    def new_payloads(self) -> list[NewPayload]:
        """The plaintext (decrypted, decompressed) payloads as the store takes them."""
        return list(_new_payloads(self._accepted))

    def close(self) -> None:
        """Drop what the message holds on to (spooled parts)."""


class ReceivePipeline:
    """Verifies received user messages for the inbound pipeline and the puller."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def verify(self, received: ReceivedMessage, now: datetime) -> VerifiedMessage:
        """The verified message; EbmsError (with RefToMessageId) when it is refused."""
        ctx = self.ctx
        accepted = accept_user_message(
            received,
            ctx.agreements.current,
            keys=ctx.settings.keys.decryption_keys(),
            at=now,
            revocation=ctx.revocation,
            read_part=read_spooled,
        )
        opened = accepted.opened
        return VerifiedMessage(
            accepted.route,
            accepted.user_message,
            opened.signature,
            opened.trust,
            accepted.receipt,
            received.envelope_bytes,
            received.parsed.messaging.soap_version,
            accepted,
        )


async def _iterate(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        await asyncio.sleep(0)


def _new_payloads(accepted: AcceptedMessage) -> Iterator[NewPayload]:
    user = accepted.user_message
    for part in user.payload_info:
        content_id = part.content_id
        if content_id is None:
            continue
        source = accepted.opened.sources[content_id]
        chunks: Iterable[bytes] = source.open()
        if part.compression_type == GZIP:
            chunks = decompress_with(chunks, accepted.route.leg.payload.decompression)
        properties = {p.name: p.value for p in part.properties}
        yield NewPayload(content_id, part.mime_type or source.content_type, _iterate(chunks), properties)
