"""Operator broadcasts at the router (*operatörsmeddelanden*): one message for every holder, or a group, sent once
to each operator FaR knows, which fans it out to its mailboxes.

``POST /api/v1/broadcasts`` (the infrastructure owner, through this router's backend API)::

    {"id": "optional-own-id", "issuer": "0007:2021005448", "subject": "…",
     "body": "the text" | "content": {"mime_type": "text/html", "data": "<base64>"},
     "audience": {"group": "all" | "persons" | "organisations", "born_on_or_after": "1960-01-01",
                  "born_on_or_before": "…"}}

The router signs a ``Broadcast`` document (``envelopes/broadcast.py``) with its key, takes the operators from FaR
and submits one AS4 message to each, on the P-Mode whose receiver names that operator (as a routed letter goes:
the same ``routing.forward_pmode``, its route recorded with the message, so FaR's endpoint is used) under a
MessageId derived from the broadcast and the operator, all in the broadcast's conversation: asking twice sends
nothing twice. The answer (202) lists each operator and its message, or why none could be sent to it.

``GET /api/v1/broadcasts/{id}`` gives the counts per operator: the message's state, and the number of mailboxes
its operator put the broadcast in, from the operator's signed ``broadcast`` event (verified with the operator's
certificate from the agreements) on the reply leg; and the totals. This is the mailing machinery's shape for the
case where the rows are operators, not recipients: FaR is asked once, every send is idempotent, and progress is
read from the message store rather than kept beside it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import uuid
from datetime import date
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.broadcast import Audience, Broadcast, Group, build_broadcast
from accesspoint.msh import end_to_end
from accesspoint.msh.context import Context
from accesspoint.msh.submissions import Submissions
from accesspoint.routing.decision import RouteKind, RoutingDecision, forward_route
from accesspoint.routing.outbound import RouteTarget
from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.problems import Problem
from accesspoint.store import Direction, DuplicateMessage, NewPayload
from far.client import FarUnavailable
from operators.evidence import EventKind, verify_event

log = logging.getLogger("accesspoint.msh.broadcasts")

_NAMESPACE = uuid.UUID("2f6a0c1e-5d3b-4c4e-9b7a-1e2d3c4b5a69")
BODY_LIMIT = 2 * 1024 * 1024


def _problem(status: int, detail: str, kind: str = "invalid-broadcast") -> Problem:
    return Problem(status, detail, kind=kind)


def _date(value: object, name: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise _problem(422, f"audience.{name}: not a date (YYYY-MM-DD)") from None


def read_broadcast(body: dict[str, Any], *, issued: Any, default_id: str) -> Broadcast:
    """The broadcast a request asks for; a 422 Problem naming the field at fault."""
    issuer, subject = body.get("issuer"), body.get("subject")
    if not isinstance(issuer, str) or not issuer.strip():
        raise _problem(422, "issuer: the infrastructure owner's party id is required")
    if not isinstance(subject, str) or not subject.strip():
        raise _problem(422, "subject: required")
    content = body.get("content")
    if isinstance(content, dict):
        try:
            data = base64.b64decode(str(content.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            raise _problem(422, "content.data: not base64") from None
        mime = str(content.get("mime_type") or "text/plain")
    elif isinstance(body.get("body"), str):
        data, mime = str(body["body"]).encode(), "text/plain; charset=utf-8"
    else:
        raise _problem(422, "body (text) or content {mime_type, data} is required")
    audience = body.get("audience") or {}
    if not isinstance(audience, dict):
        raise _problem(422, "audience: an object {group, born_on_or_after, born_on_or_before}")
    try:
        group = Group(str(audience.get("group", "all")))
    except ValueError:
        raise _problem(422, "audience.group: all, persons or organisations") from None
    given = body.get("id")
    return Broadcast(
        id=str(given) if isinstance(given, str) and given.strip() else default_id,
        issuer=issuer.strip(),
        issued=issued,
        subject=subject.strip(),
        content_type=mime,
        body=data,
        audience=Audience(
            group,
            _date(audience.get("born_on_or_after"), "born_on_or_after"),
            _date(audience.get("born_on_or_before"), "born_on_or_before"),
        ),
    )


def _document_key(ctx: Context) -> KeyPair:
    """The router's key that signs documents (RSA or EC: an XML-DSig key)."""
    for pair in ctx.settings.keys.signing:
        if isinstance(pair.private_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            return pair
    raise _problem(409, "this access point has no RSA or EC key to sign a broadcast with", "no-key")


class Broadcasts:
    """The router's broadcasts (see the module docstring)."""

    def __init__(self, ctx: Context, submissions: Submissions) -> None:
        self.ctx = ctx
        self.submissions = submissions

    def message_id(self, broadcast_id: str, operator_id: str) -> str:
        """The MessageId of a broadcast's message to one operator (the same every time it is asked for)."""
        return f"{uuid.uuid5(_NAMESPACE, broadcast_id + chr(31) + operator_id)}@{self.ctx.settings.instance}"

    async def submit(self, request: web.Request) -> web.Response:
        """POST /api/v1/broadcasts."""
        ctx = self.ctx
        routing = ctx.routing
        if routing.far is None or routing.settings is None:
            raise _problem(409, "this access point is no router: it has no FaR to take the operators from", "no-far")
        raw = await request.content.read(BODY_LIMIT + 1)
        if len(raw) > BODY_LIMIT:
            raise _problem(413, f"a broadcast request is at most {BODY_LIMIT} bytes", "too-large")
        try:
            body = json.loads(raw)
        except ValueError:
            raise _problem(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _problem(400, "the body is a JSON object")
        now = ctx.clock.now()
        broadcast = read_broadcast(body, issued=now, default_id=str(uuid.uuid4()))
        try:
            document = build_broadcast(broadcast, _document_key(ctx))
        except EnvelopeError as exc:
            raise _problem(422, str(exc)) from None
        try:
            operators = await routing.far.operators()
        except (FarUnavailable, TimeoutError, OSError) as exc:
            raise _problem(503, f"FaR cannot answer: {exc}", "far-unavailable") from None
        pmodes = ctx.agreements.current
        sent: list[dict[str, Any]] = []
        for operator in operators:
            decision = RoutingDecision(RouteKind.OPERATOR, broadcast.id, operator=operator, endpoint=operator.endpoint)
            route = forward_route(decision, pmodes, action="", pmode_id=routing.settings.forward_pmode)
            if route is None or operator.endpoint is None:
                sent.append(
                    {
                        "operator": operator.id,
                        "name": operator.name,
                        "refused": f"no agreement to send to {operator.name} ({operator.party_id})",
                    }
                )
                continue
            message_id = self.message_id(broadcast.id, operator.id)
            target = RouteTarget(
                message_id, message_id, operator.id, operator.name, operator.party_id, operator.endpoint
            )
            payload = NewPayload(f"broadcast@{ctx.settings.instance}", "application/xml", _once(document), {})
            submission = {"pmode": route.pmode.id, "message_id": message_id, "conversation_id": broadcast.id}
            # Asked for before: that message is on its way already.
            with contextlib.suppress(DuplicateMessage):
                await self.submissions.submit(submission, [payload], hooks=[routing.records.hook(target, now=now)])
            sent.append({"operator": operator.id, "name": operator.name, "message_id": message_id})
        log.info("broadcast %s (%s) to %d operators", broadcast.id, broadcast.audience.describe(), len(sent))
        return web.json_response(
            {"id": broadcast.id, "audience": broadcast.audience.describe(), "operators": sent}, status=202
        )

    async def read(self, request: web.Request) -> web.Response:
        """GET /api/v1/broadcasts/{id}: per operator, the message's state and the mailboxes it reached."""
        ctx = self.ctx
        broadcast_id = request.match_info["id"]
        store = ctx.store
        messages = await store.search(direction=Direction.OUT, conversation_id=broadcast_id, limit=1000)
        if not messages:
            raise _problem(404, f"no broadcast {broadcast_id!r}", "not-found")
        certificates = end_to_end.operator_certificates(ctx.agreements.current, ctx.settings.operator_certificates)
        operators = []
        for message in messages:
            target = await ctx.routing.records.get(message.message_id)
            entry: dict[str, Any] = {
                "operator": None if target is None else target.operator_id,
                "name": None if target is None else target.operator_name,
                "message_id": message.message_id,
                "state": str(message.state),
                "delivered": None,
            }
            for answer in await store.search(direction=Direction.IN, ref_to_message_id=message.message_id, limit=10):
                for payload in await store.payloads(answer):
                    data = b"".join([chunk async for chunk in store.read(payload)])
                    event = _verified(data, certificates)
                    if event is not None and event.kind is EventKind.BROADCAST:
                        entry["delivered"] = int(event.detail("delivered") or 0)
                        entry["answered_at"] = event.at.isoformat()
                        entry["audience"] = event.detail("audience")
                        entry["refused"] = event.detail("refused")
            operators.append(entry)
        delivered = [o["delivered"] for o in operators if o["delivered"] is not None]
        return web.json_response(
            {
                "id": broadcast_id,
                "operators": operators,
                "totals": {"operators": len(operators), "answered": len(delivered), "delivered": sum(delivered)},
            }
        )


def _verified(data: bytes, certificates: Any) -> Any:
    for certificate in certificates:
        try:
            return verify_event(data, certificate)
        except EnvelopeError:
            continue
    return None


async def _once(data: bytes) -> Any:
    yield data


def add_routes(api: web.Application) -> None:
    """``POST /broadcasts`` (a token that may submit on every P-Mode) and ``GET /broadcasts/{id}`` (read) on the
    ``/api/v1`` sub-application."""
    from accesspoint.msh.api import API

    def of(request: web.Request) -> Broadcasts:
        api = request.config_dict[API]
        return Broadcasts(api.ctx, api.submissions)

    async def submit(request: web.Request) -> web.Response:
        auth = request.config_dict[API].auth
        if not auth.authenticate(request).grant("submit").unrestricted:
            raise auth.insufficient("submit")
        return await of(request).submit(request)

    async def read(request: web.Request) -> web.Response:
        return await of(request).read(request)

    api.router.add_post("/broadcasts", submit, name="broadcast")
    api.router.add_get("/broadcasts/{id}", read)
