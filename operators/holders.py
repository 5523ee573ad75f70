"""The reference operator's holder API: open a mailbox, close it, set sender preferences, log in — each signed
with the holder's e-ID and each written to FaR — and who may read a mailbox.

Every change carries ``agreement_text`` and ``signatures`` (``{signature, certificate, nonce, encoding}``,
:mod:`accesspoint.envelopes.identity`). The operator checks them against its e-ID anchors first, so a malformed,
expired or foreign assertion is refused here with its reason (422 and ``code``) before FaR hears of it; FaR
checks them again and decides (the minors policy, a company's signatory rule): its refusals are passed on as it
gave them. Opening a mailbox for a holder FaR has at another operator is a move (``operators/moves.py``).

=======  ==========================================  ========================================================
POST     /api/v1/sessions                            log in: ``{agreement_text: login text, signatures}`` →
                                                     ``{token, person, expires_at}`` (a bearer for reads)
POST     /api/v1/holders                             open: ``{holder, agreement_text, signatures,
                                                     account_type?, switch_at?}`` → 201 active, 202 waiting or
                                                     moving in (``switch_at``: not before, for a move)
GET      /api/v1/holders/{id}                        the mailbox's state (and its move)
DELETE   /api/v1/holders/{id}                        close (signed); a mailbox moving in: the move cancelled
PUT      /api/v1/holders/{id}/preferences            ``{accepted, refused, agreement_text, signatures}``
PUT      /api/v1/holders/{id}/contacts               ``{email?, sms?, push?}``: where to notify (session); each
                                                     an address, ``{address, enabled}``, or null to forget it
DELETE   /api/v1/holders/{id}/mail                   erase every letter (signed; audited)
GET      /api/v1/holders/{id}/audit                  the mailbox's audit trail
=======  ==========================================  ========================================================

**Who reads a mailbox.** A session's person reads their own mailbox, and a company's (``16`` + orgnr) when FaR
says they may *now* (``View``: a signatory, or a role given in the representation register) — asked at every
read, so a change of signatory counts at once; every read of a company mailbox is audited with the person. The
operator's configured tokens (``read:recipient=…``) read as before.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from accesspoint.envelopes.identity import AssertionRefused, SignatureData, VerifiedAssertion, verify_assertion
from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import bearer_credentials
from operators.far_link import FarLink, FarRefused, FarUnreachable
from operators.mailbox import contacts, mailboxes, sessions, used_nonces, write_audit

if TYPE_CHECKING:
    from operators.service import Operator

CHANNELS = ("email", "sms", "push")
log = logging.getLogger("operators.holders")


def login_text(operator_id: str, operator_name: str) -> str:
    """What a holder signs to log in here (it names this operator, so the assertion counts nowhere else)."""
    return f"Inloggning hos {operator_name} ({operator_id})"


def is_company(recipient: str) -> bool:
    """Whether a mailbox key is a company's (16 + organisationsnummer)."""
    return len(recipient) == 12 and recipient.isdigit() and recipient.startswith("16")


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads a mailbox: a person (by session) or a configured token, and under what grant."""

    actor: str
    person: str | None = None
    grant: str | None = None


class HolderDesk:
    """The holder API of one operator (see the module docstring)."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.settings = operator.settings
        self.store = operator.store
        self.far: FarLink | None = None
        if self.settings.far is not None:
            self.far = FarLink(self.settings.far.url, self.settings.far.token)

    async def close(self) -> None:
        """Close FaR's session."""
        if self.far is not None:
            await self.far.close()

    # ------------------------------------------------------------------------------------------ checks

    def verify(
        self, text: str, signatures: list[SignatureData], *, subject: str | None = None
    ) -> list[VerifiedAssertion]:
        """Every signature checked against the e-ID anchors (422 with the first refusal's code and reason)."""
        if not signatures:
            raise Problem(422, "at least one signature is required", kind="refused", code="malformed")
        found = []
        for index, data in enumerate(signatures):
            try:
                found.append(
                    verify_assertion(
                        text,
                        data,
                        self.settings.eid_anchors,
                        at=self.operator.clock(),
                        max_age=self.settings.eid_max_age,
                    )
                )
            except AssertionRefused as exc:
                raise Problem(422, f"signature {index}: {exc.reason}", kind="refused", code=exc.code.value) from None
        if subject is not None and subject not in {a.subject for a in found}:
            raise Problem(422, f"the holder {subject[:64]} has not signed", kind="refused", code="identity")
        return found

    def _far(self) -> FarLink:
        if self.far is None:
            raise Problem(503, "this operator is not connected to FaR (operator.far)", kind="far-unavailable")
        return self.far

    async def _at_far(self, call: Awaitable[Any]) -> Any:
        """FaR's answer, its refusal passed on as it gave it, its absence as 503."""
        try:
            return await call
        except FarRefused as exc:
            kind = {403: "forbidden", 404: "not-found", 409: "conflict", 422: "refused"}.get(exc.status, "far-refused")
            raise Problem(exc.status, f"FaR: {exc.detail}", kind=kind, code=exc.code) from None
        except FarUnreachable as exc:
            raise Problem(
                503, f"FaR cannot be reached: {exc}", kind="far-unavailable", headers={"Retry-After": "5"}
            ) from None

    async def _signed_body(
        self, request: web.Request, known: set[str]
    ) -> tuple[dict[str, Any], str, list[SignatureData]]:
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "the body is not JSON", kind="invalid-request") from None
        if not isinstance(body, dict):
            raise Problem(400, "the body must be a JSON object", kind="invalid-request")
        unknown = sorted(set(body) - known - {"agreement_text", "signatures"})
        if unknown:
            raise Problem(400, f"unknown field {unknown[0]}", kind="invalid-request", field=unknown[0])
        text = body.get("agreement_text")
        items = body.get("signatures")
        if not isinstance(text, str) or not text.strip() or not isinstance(items, list):
            raise Problem(400, "agreement_text (a string) and signatures (a list) are required", kind="invalid-request")
        try:
            return body, text, [SignatureData.from_json(item) for item in items]
        except AssertionRefused as exc:
            raise Problem(422, exc.reason, kind="refused", code=exc.code.value) from None

    # ----------------------------------------------------------------------------------------- sessions

    async def login(self, request: web.Request) -> web.Response:
        """POST /api/v1/sessions."""
        _body, text, signatures = await self._signed_body(request, set())
        if text != login_text(self.settings.id, self.settings.name):
            raise Problem(
                422,
                "sign the login text of this operator",
                kind="refused",
                code="identity",
                expected=login_text(self.settings.id, self.settings.name),
            )
        (assertion, *_rest) = self.verify(text, signatures[:1])
        now = self.operator.clock()
        token = secrets.token_urlsafe(32)
        try:
            async with self.store.engine.begin() as conn:
                await conn.execute(insert(used_nonces).values(nonce=assertion.nonce[:200], used_at=now))
                await conn.execute(
                    insert(sessions).values(
                        token_sha256=_sha256(token),
                        person=assertion.subject,
                        name=assertion.name,
                        created_at=now,
                        expires_at=now + self.settings.session_lifetime,
                    )
                )
                await write_audit(
                    conn,
                    f"person:{assertion.subject}",
                    "login",
                    assertion.subject,
                    {"certificate_sha256": assertion.certificate_sha256},
                    now=now,
                )
        except IntegrityError:
            raise Problem(422, "this assertion was used before", kind="refused", code="replayed") from None
        await self.report_activity([assertion.subject])
        expires = now + self.settings.session_lifetime
        return web.json_response(
            {"token": token, "person": assertion.subject, "name": assertion.name, "expires_at": expires.isoformat()},
            status=201,
        )

    async def report_activity(self, recipients: list[str]) -> None:
        """Tell FaR these holders used their mailbox (those held here; best effort: a failure is logged)."""
        if self.far is None:
            return
        held = [r for r in recipients if await self.store.state(r) in ("active", "moving-out")]
        if not held:
            return
        try:
            await self.far.activity(held)
        except (FarRefused, FarUnreachable) as exc:
            log.warning("activity report to FaR failed: %s", exc)

    async def session(self, request: web.Request) -> tuple[str, str] | None:
        """The (person, name) of the request's session token, if it presents a live one."""
        presented = bearer_credentials(request.headers.get("Authorization"))
        if presented is None:
            return None
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.token_sha256 == _sha256(presented)))).first()
        if row is None or _aware(row.expires_at) <= self.operator.clock():
            return None
        return row.person, row.name

    async def reader(self, request: web.Request, recipient: str, *, activity: str = "View") -> Reader:
        """Who may read (or, with ``activity``, change) ``recipient``'s mailbox; 401/403 otherwise. A person's
        read of a company mailbox is audited by the caller through ``Reader.person``."""
        found = await self.session(request)
        if found is None:
            return Reader(self.operator.auth.authorize(request, "read", recipient=recipient).name)
        person, _name = found
        if person == recipient:
            return Reader(f"person:{person}", person, "holder")
        if is_company(recipient) and self.far is not None:
            rights = await self._at_far(self.far.access_rights(recipient, person))
            if activity in rights.get("activities", []):
                return Reader(f"person:{person}", person, str(rights.get("grant_type")))
        raise Problem(
            403,
            f"{person} may not {'read' if activity == 'View' else 'change'} the mailbox of {recipient}",
            kind="forbidden",
        )

    # ------------------------------------------------------------------------------------------- holders

    async def open(self, request: web.Request) -> web.Response:
        """POST /api/v1/holders."""
        body, text, signatures = await self._signed_body(request, {"holder", "account_type", "switch_at"})
        holder = body.get("holder")
        if not isinstance(holder, str) or not holder:
            raise Problem(400, "holder is required", kind="invalid-request", field="holder")
        far = self._far()
        # FaR first reads the identifier (a wrong check digit is its 400), then the assertions are checked here.
        held = await self._at_far(far.recipient(holder))
        signed = self.verify(text, signatures, subject=None if is_company(holder) else holder)
        account_type = str(body.get("account_type", "secure"))
        now = self.operator.clock()
        payload = [s.to_json() for s in signatures]
        if (
            held is not None
            and held.get("status") != "none"
            and held.get("operator") not in (None, self.settings.orgnr)
        ):
            when = body.get("switch_at") if isinstance(body.get("switch_at"), str) else None
            switch = await self._at_far(far.request_switch(holder, text, payload, when))
            await self._mailbox(holder, "moving-in", signed, now)
            if self.operator.moves is not None:
                await self.operator.moves.start_incoming(switch)
            await self.store.audit(_actor(signed), "open", holder, {"state": "moving-in", "switch": switch}, now=now)
            return web.json_response({"holder": holder, "state": "moving-in", "switch": switch}, status=202)
        result = await self._at_far(far.register(holder, text, payload, account_type))
        state = "active" if result.get("status") == "Complete" else "pending"
        await self._mailbox(holder, state, signed, now)
        await self.store.audit(_actor(signed), "open", holder, {"state": state, "far": result}, now=now)
        return web.json_response(
            {"holder": holder, "state": state, "authorization": result}, status=201 if state == "active" else 202
        )

    async def _mailbox(self, holder: str, state: str, signed: list[VerifiedAssertion], now: datetime) -> None:
        name = next((a.name for a in signed if a.subject == holder), None)
        async with self.store.engine.begin() as conn:
            exists = await conn.scalar(select(mailboxes.c.recipient).where(mailboxes.c.recipient == holder))
            if exists is None:
                await conn.execute(
                    insert(mailboxes).values(recipient=holder, created_at=now, state=state, holder_name=name)
                )
            else:
                await conn.execute(
                    update(mailboxes)
                    .where(mailboxes.c.recipient == holder)
                    .values(state=state, closed_at=None, **({"holder_name": name} if name else {}))
                )

    async def show(self, request: web.Request) -> web.Response:
        """GET /api/v1/holders/{id}."""
        holder = request.match_info["id"]
        await self.reader(request, holder)
        async with self.store.engine.connect() as conn:
            row = (await conn.execute(select(mailboxes).where(mailboxes.c.recipient == holder))).first()
        if row is None:
            raise Problem(404, f"{holder} has no mailbox here", kind="no-mailbox")
        move = None if self.operator.moves is None else await self.operator.moves.describe(holder)
        return web.json_response(
            {
                "holder": holder,
                "state": row.state,
                "holder_name": row.holder_name,
                "closed_at": None if row.closed_at is None else _aware(row.closed_at).isoformat(),
                "move": move,
            }
        )

    async def close_mailbox(self, request: web.Request) -> web.Response:
        """DELETE /api/v1/holders/{id}."""
        holder = request.match_info["id"]
        _body, text, signatures = await self._signed_body(request, set())
        signed = self.verify(text, signatures, subject=None if is_company(holder) else holder)
        state = await self.store.state(holder)
        if state is None:
            raise Problem(404, f"{holder} has no mailbox here", kind="no-mailbox")
        now = self.operator.clock()
        if state == "moving-in":
            switch = await self._at_far(self._far().cancel_switch(holder))
            if self.operator.moves is not None:
                await self.operator.moves.cancelled_here(switch)
            await self._set_state(holder, "closed", now)
            await self.store.audit(_actor(signed), "cancel-move", holder, {"switch": switch}, now=now)
            return web.json_response({"holder": holder, "state": "closed", "switch": switch})
        result = await self._at_far(self._far().deregister(holder, text, [s.to_json() for s in signatures]))
        await self._set_state(holder, "closed", now)
        await self.store.audit(_actor(signed), "close", holder, {"far": result}, now=now)
        return web.json_response({"holder": holder, "state": "closed", "authorization": result})

    async def _set_state(self, holder: str, state: str, now: datetime) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(mailboxes)
                .where(mailboxes.c.recipient == holder)
                .values(state=state, closed_at=now if state == "closed" else None)
            )

    async def preferences(self, request: web.Request) -> web.Response:
        """PUT /api/v1/holders/{id}/preferences."""
        holder = request.match_info["id"]
        body, text, signatures = await self._signed_body(request, {"accepted", "refused"})
        signed = self.verify(text, signatures, subject=None if is_company(holder) else holder)
        if await self.store.state(holder) is None:
            raise Problem(404, f"{holder} has no mailbox here", kind="no-mailbox")
        forward = {
            "accepted": body.get("accepted", []),
            "refused": body.get("refused", []),
            "agreement_text": text,
            "signatures": [s.to_json() for s in signatures],
        }
        result = await self._at_far(self._far().store_preferences(holder, forward))
        await self.store.audit(
            _actor(signed),
            "preferences",
            holder,
            {"accepted": forward["accepted"], "refused": forward["refused"]},
            now=self.operator.clock(),
        )
        return web.json_response(result)

    async def set_contacts(self, request: web.Request) -> web.Response:
        """PUT /api/v1/holders/{id}/contacts: where the session's person is notified about this mailbox."""
        holder = request.match_info["id"]
        found = await self.session(request)
        if found is None:
            raise Problem(401, "log in first (POST /api/v1/sessions)", kind="unauthorised")
        reader = await self.reader(request, holder, activity="View" if found[0] == holder else "EditSettingsContact")
        try:
            body = await request.json()
        except ValueError:
            raise Problem(400, "the body is not JSON", kind="invalid-request") from None
        if not isinstance(body, dict) or set(body) - set(CHANNELS):
            raise Problem(400, f"contacts are {', '.join(CHANNELS)}", kind="invalid-request")
        person = "" if reader.grant == "holder" else str(reader.person)
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            for channel in CHANNELS:
                if channel not in body:
                    continue
                await conn.execute(
                    delete(contacts).where(
                        contacts.c.mailbox == holder, contacts.c.person == person, contacts.c.channel == channel
                    )
                )
                given = body[channel]
                address, enabled = (
                    (given.get("address"), given.get("enabled", True)) if isinstance(given, dict) else (given, True)
                )
                if isinstance(address, str) and address:
                    await conn.execute(
                        insert(contacts).values(
                            mailbox=holder,
                            person=person,
                            channel=channel,
                            address=address[:512],
                            enabled=bool(enabled),
                        )
                    )
            await write_audit(conn, reader.actor, "contacts", holder, {k: body[k] for k in body}, now=now)
        return web.json_response({"holder": holder, "person": person or holder, "contacts": body})

    async def audit_trail(self, request: web.Request) -> web.Response:
        """GET /api/v1/holders/{id}/audit."""
        holder = request.match_info["id"]
        await self.reader(request, holder)
        return web.json_response({"holder": holder, "audit": await self.store.audit_trail(holder)})

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The routes of the module docstring (erasure is operators/retention.py's)."""
        router.add_post("/api/v1/sessions", self.login)
        router.add_post("/api/v1/holders", self.open)
        router.add_get("/api/v1/holders/{id}", self.show)
        router.add_delete("/api/v1/holders/{id}", self.close_mailbox)
        router.add_put("/api/v1/holders/{id}/preferences", self.preferences)
        router.add_put("/api/v1/holders/{id}/contacts", self.set_contacts)
        router.add_get("/api/v1/holders/{id}/audit", self.audit_trail)


def _actor(signed: list[VerifiedAssertion]) -> str:
    return "person:" + ",".join(sorted({a.subject for a in signed}))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
