"""Submissions: what a backend (through the API) or the router asks this access point to send.

A JSON document (or a multipart upload's metadata and files) becomes a typed ``Submission``, checked field by
field (ValueError naming the field: the API answers 422). ``Submissions.accept`` matches its P-Mode leg,
builds the header, stores it as ``submitted`` with the header as evidence and queues it (on a pull leg it
waits for the partner's PullRequest instead).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from accesspoint.core.envelope import envelope_bytes
from accesspoint.core.ids import new_message_id
from accesspoint.core.model import CollaborationInfo, PartyInfo, Property, UserMessage
from accesspoint.core.model import MessageInfo as HeaderInfo
from accesspoint.core.namespaces import PartProperty
from accesspoint.msh import holder_encryption
from accesspoint.msh.context import Context
from accesspoint.msh.receiving import valid_character_set
from accesspoint.msh.send_pipeline import SendPipeline
from accesspoint.msh.views import message_info
from accesspoint.msh.webhooks import message_key
from accesspoint.msh.wire import once
from accesspoint.routing.outbound import submission_receiver
from accesspoint.store import Direction, EvidenceKind, MessageStore, NewEvidence, NewPayload, StoredMessage
from accesspoint.store.hooks import TransactionHook
from accesspoint.store.queue import QueueUnavailable
from pmode import Binding, MatchStatus, PModeSet
from pmode.profiles import all_profiles

log = logging.getLogger("accesspoint.msh")

# Asked with a submission's P-Mode id and sender party before it is stored; raises to refuse it.
Allowed = Callable[[str, str], None]


class FieldRefused(ValueError):
    """A submission refused for one field, which the API's problem names in its ``field`` member."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


@dataclass(frozen=True, slots=True)
class Submission:
    """A checked request to send one message; unset fields are matched or generated when it is accepted."""

    message_id: str
    payloads: tuple[NewPayload, ...]
    pmode: str | None = None
    service: str | None = None
    action: str | None = None
    to: str | None = None
    conversation_id: str | None = None
    ref_to_message_id: str | None = None
    properties: tuple[Property, ...] = ()

    @classmethod
    def from_document(cls, document: Mapping[str, Any], files: Sequence[NewPayload] | None = None) -> Submission:
        """A submission from the API's JSON (base64 ``payloads``) or from metadata plus streamed ``files``."""
        message_id = str(document.get("message_id") or new_message_id())
        properties = document.get("properties") or {}
        if not isinstance(properties, dict):
            raise ValueError("properties: a JSON object of name to value or to {value, type}")
        payloads = tuple(files) if files is not None else _decoded(document.get("payloads"), message_id)
        if not payloads:
            raise ValueError("payloads: at least one payload is required")

        def text(name: str) -> str | None:
            value = document.get(name)
            return None if value is None else str(value)

        return cls(
            message_id=message_id,
            payloads=payloads,
            pmode=text("pmode"),
            service=text("service"),
            action=text("action"),
            to=text("to"),
            conversation_id=text("conversation_id") or None,
            ref_to_message_id=text("ref_to_message_id"),
            properties=tuple(_property(str(k), v) for k, v in properties.items()),
        )

    def properties_json(self) -> dict[str, Any]:
        """The properties as the submission gave them (what the router and discovery read)."""
        return {p.name: {"value": p.value, "type": p.type} if p.type else p.value for p in self.properties}


def _decoded(payloads: object, message_id: str) -> tuple[NewPayload, ...]:
    if not isinstance(payloads, list) or not payloads:
        raise ValueError("payloads: at least one payload is required")
    found = []
    for index, item in enumerate(payloads):
        if not isinstance(item, dict) or "data" not in item:
            raise ValueError(f"payloads[{index}]: expected {{content_id, mime_type, data (base64)}}")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (ValueError, TypeError):
            raise ValueError(f"payloads[{index}].data: not base64") from None
        content_id = str(item.get("content_id") or f"part{index + 1}@{message_id.split('@')[-1]}")
        mime = str(item.get("mime_type") or "application/octet-stream")
        properties = part_properties(item.get("properties"), f"payloads[{index}].properties")
        found.append(NewPayload(content_id, mime, once(data), properties))
    return tuple(found)


def part_properties(given: object, where: str) -> dict[str, str]:
    """A submitted payload's PartProperties (a JSON object of name to string); ValueError naming ``where``."""
    if given is None:
        return {}
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        raise ValueError(f"{where}: a JSON object of name to string value")
    charset = given.get(PartProperty.CHARACTER_SET.value)
    if charset is not None and not valid_character_set(charset):
        raise ValueError(f"{where}.CharacterSet: {charset!r} is not an encoding name (XML 1.0, 4.3.3)")
    return {str(k): v for k, v in given.items()}


def _property(name: str, given: object) -> Property:
    """A submitted message property: a plain value, or {value, type} where the network wants the type (Peppol
    AS4 2.0: originalSender and finalRecipient carry their identifier scheme, e.g. iso6523-actorid-upis)."""
    if not isinstance(given, dict):
        return Property(name, str(given))
    value, kind = given.get("value"), given.get("type")
    if not isinstance(value, str) or not (kind is None or isinstance(kind, str)) or set(given) - {"value", "type"}:
        raise ValueError(f"properties.{name}: expected a string or {{value: string, type: string}}")
    return Property(name, value, kind or None)


class Submissions:
    """Stores and queues submissions; the router forwards through it too (``submit``)."""

    def __init__(self, ctx: Context, pipeline: SendPipeline) -> None:
        self.ctx = ctx
        self.pipeline = pipeline

    @property
    def pmodes(self) -> PModeSet:
        """The P-Modes submissions are matched against now."""
        return self.ctx.agreements.current

    @property
    def store(self) -> MessageStore:
        """Where submissions are stored."""
        return self.ctx.store

    async def submit(
        self,
        document: dict[str, Any],
        files: Sequence[NewPayload] | None = None,
        *,
        hooks: Sequence[TransactionHook] = (),
        allowed: Allowed | None = None,
    ) -> StoredMessage:
        """Store a submission document and queue it; ValueError for a bad one, DuplicateMessage for a taken id.

        With ``"route": true`` the router picks the P-Mode (FaR for digital post, else discovery) and refuses
        with its reason (ValueError) before anything is stored; the target it chose is stored with the message.
        ``hooks`` write in the transaction that stores it (an idempotency key, a route target); ``allowed`` is
        asked about the P-Mode and sender party before anything is stored (a scoped token's check; it raises).
        """
        routed = await self.ctx.routing.route_submission(self.pmodes, document)
        writes = list(hooks)
        if routed.target is not None:
            writes.append(self.ctx.routing.records.hook(routed.target, now=self.ctx.clock.now()))
        submission = Submission.from_document(routed.document, files)
        wanted = holder_encryption.parse_request(routed.document)
        if wanted is not None:  # end-to-end to the mailbox holder, before anything is stored
            payloads = await holder_encryption.encrypt_payloads(
                wanted, submission.payloads, source=self.ctx.settings.holder_keys, now=self.ctx.clock.now()
            )
            submission = replace(submission, payloads=payloads)
        return await self.accept(submission, hooks=writes, allowed=allowed)

    async def accept(
        self, submission: Submission, *, hooks: Sequence[TransactionHook] = (), allowed: Allowed | None = None
    ) -> StoredMessage:
        """Match the leg, build and store the header as ``submitted``, queue it; ValueError if no leg fits.

        A reply names the received request in ``ref_to_message_id``: it takes the request's conversation and,
        unless the submission names one, its two-way P-Mode. Stored means committed: a queue that cannot be
        reached now only delays the send (the recovery sweep and workers find it in the database).
        """
        ctx = self.ctx
        ref = submission.ref_to_message_id
        request = None
        if ref is not None:
            request = await ctx.store.get(Direction.IN, ref)
            if request is None:
                raise ValueError(f"ref_to_message_id: no received message {ref!r}")
        pmode_id = submission.pmode
        if pmode_id is None and request is not None:
            two_way = self.pmodes.get(request.pmode_id or "")
            if two_way is not None and two_way.binding is Binding.PUSH_AND_PUSH:
                pmode_id = two_way.id
        match = self.pmodes.match_submission(
            pmode_id=pmode_id, service=submission.service, action=submission.action, to_party=submission.to
        )
        if match.status is not MatchStatus.MATCHED or match.route is None:
            raise ValueError(f"no single outgoing P-Mode leg fits ({match.status}): {match.reason}")
        route = match.route
        if route.pmode.binding is Binding.PUSH_AND_PUSH and route.leg.index == 1 and request is None:
            raise ValueError("ref_to_message_id: a reply on a two-way P-Mode names the request it answers")
        profile = all_profiles().get(route.pmode.network)
        untyped = [] if profile is None else profile.untyped_properties(submission.properties)
        if untyped:
            detail = "; ".join(f"{field}: {why}" for field, why in untyped)
            raise FieldRefused(untyped[0][0], f"{detail} (P-Mode {route.pmode.id})")
        now = ctx.clock.now()
        message_id = submission.message_id
        conversation = submission.conversation_id or (request and request.conversation_id) or message_id
        receiver = submission_receiver(route, submission.to, submission.properties_json())
        header = UserMessage(
            message_info=HeaderInfo(message_id=message_id, timestamp=now, ref_to_message_id=ref),
            party_info=PartyInfo(sender=route.from_party, receiver=receiver),
            collaboration_info=CollaborationInfo(
                service=route.leg.service,
                action=route.leg.action,
                conversation_id=str(conversation),
                agreement_ref=route.agreement_ref,
            ),
            message_properties=submission.properties,
            mpc=route.leg.mpc,
        )
        info = message_info(header, route)
        if allowed is not None:
            allowed(route.pmode.id, info.from_party or "")
        # The header as submitted, kept with the message: what the sender rebuilds it from on every attempt.
        header_bytes = envelope_bytes(header)
        kept = NewEvidence(EvidenceKind.RAW_MESSAGE, once(header_bytes), ctx.agreements.evidence_retention(route))
        stored = await ctx.store.submit(info, list(submission.payloads), now=now, evidence=[kept], hooks=hooks)
        self.pipeline.remember(header, submission.payloads)
        ctx.handoffs.keep(message_key(Direction.OUT.value, message_id))  # its send continues the submitter's trace
        if route.pmode.binding is not Binding.PULL:  # on pull it waits for the partner's PullRequest
            try:
                await ctx.queue.put(message_id)
            except QueueUnavailable as exc:
                log.warning("%s stored; the send queue is unavailable (%s): the database hands it out", message_id, exc)
        return stored
