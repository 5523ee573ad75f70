"""The reference mailbox operator, running: the backend of an access point, and a small mailbox API.

It learns of deliveries from the access point's ``message-received`` webhook (HMAC-SHA256 checked) and by
searching its backend API every ``poll_interval`` (so nothing is lost while it was down or a webhook dropped).
For each received message it downloads the payloads, checks the delivery (``deliveries.check_delivery``),
stores it in the recipient's mailbox or records the refusal, submits the signed end-to-end answer
(``receipts.build_answer``) on the two-way P-Mode's reply leg with ``ref_to_message_id`` = the delivery, and
then acknowledges the delivery at the access point. The reply's MessageId is derived from the delivery's, so a
delivery handled again after a crash stores nothing twice and sends no second answer (the access point refuses
the duplicate with 409).

HTTP (bearer tokens, RFC 9457 problem bodies):

- ``POST /hooks/accesspoint``: the access point's webhook (``X-Accesspoint-Signature: sha256=<hex>``);
- ``GET /api/v1/mailboxes/{recipient}/messages``: the mailbox, newest first (no bodies);
- ``GET /api/v1/mailboxes/{recipient}/messages/{id}``: one message, body and attachments in base64;
- ``GET /api/v1/deliveries/{as4_message_id}``: what became of a delivery (outcome, reason, the reply's id);
- ``POST /soap/v3/service``: Service v3 ``deliverSecure`` (SOAP 1.1) into the same mailboxes, for routers still
  on the SOAP contract (``soap.deliver_secure_handler``; its answer is ``Delivered``, no AS4 reply);
- ``GET /health``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from sqlalchemy import Connection, select

from accesspoint.envelopes.schemas import load_minameddelanden_schema, load_xhe_schema
from accesspoint.servicekit import server
from accesspoint.servicekit.metrics import Metrics, http_metrics_middleware
from accesspoint.servicekit.observability import admin_context
from accesspoint.servicekit.problems import Problem, problem_middleware
from accesspoint.servicekit.tls import server_context
from accesspoint.servicekit.tokens import BearerAuth
from accesspoint.servicekit.tracing import configure_tracing, trace_middleware, tracer_for
from accesspoint.servicekit.webhooks import SIGNATURE_HEADER, signature_matches
from operators.deliveries import (
    CheckedDelivery,
    DeliveryTrust,
    Network,
    Refusal,
    payload_sha256,
    unknown_recipient,
    verdict,
)
from operators.holders import HolderDesk
from operators.letters import CHUNK, FileStore, Letter, LetterPart, Sink, as4_metadata, new_uid
from operators.mailbox import MailboxStore, StoredMail, create_engine, letters
from operators.moves import Mover, MoveWaits
from operators.notifications import Notifier, channels
from operators.receipts import AnswerPart, build_answer, stable_id
from operators.retention import Retention
from operators.settings import OperatorSettings
from operators.soap import SoapBodyLimit, deliver_secure_handler
from operators.status import operator_status
from operators.twoway import TwoWay, broadcast_document

log = logging.getLogger("operators.service")

MAX_ATTEMPTS = 5
SERVICE_V3_PATH = "/soap/v3/service"
# Payloads larger than this are attachments, never the business envelope (which is parsed in memory).
MAX_ENVELOPE = 32 * 1024 * 1024
WEBHOOK_MAX_SIZE = 1024 * 1024


def _file_answer(folder: Path, parts: Sequence[AnswerPart]) -> tuple[LetterPart, ...]:
    """Write the answer's parts into a letter's folder (``answer-<index>``): the letter's parts that list them."""
    written = []
    for index, part in enumerate(parts):
        name = f"answer-{index}"
        (folder / name).write_bytes(part.data)
        written.append(
            LetterPart(name, part.content_id, part.mime_type, "answer", len(part.data), payload_sha256(part.data))
        )
    return tuple(written)


class AccessPointError(RuntimeError):
    """The access point answered something unusable (or could not be reached)."""


@dataclass
class AccessPointClient:
    """The access point's backend API, as the operator uses it."""

    url: str
    token: str
    session: aiohttp.ClientSession

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body, headers=self._headers()) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else None

    async def received(self) -> list[str]:
        """Received messages not yet acknowledged (received, or downloaded but not acknowledged)."""
        found: list[str] = []
        for state in ("received", "delivered_to_backend"):
            status, document = await self._json("GET", f"/api/v1/messages?direction=in&state={state}&limit=1000")
            if status != 200:
                raise AccessPointError(f"search: HTTP {status}")
            found += [m["message_id"] for m in document["messages"]]
        return found

    async def message(self, message_id: str) -> dict[str, Any] | None:
        """A received message's record (None when the access point does not know it)."""
        status, document = await self._json("GET", f"/api/v1/messages/{quote(message_id, safe='')}?direction=in")
        if status == 404:
            return None
        if status != 200:
            raise AccessPointError(f"get {message_id}: HTTP {status}")
        return dict(document)

    async def download(self, message_id: str, content_id: str) -> bytes:
        """A payload's bytes."""
        path = f"/api/v1/messages/{quote(message_id, safe='')}/payloads/{quote(content_id, safe='')}?direction=in"
        async with self.session.get(self.url + path, headers=self._headers()) as response:
            if response.status != 200:
                raise AccessPointError(f"download {message_id}/{content_id}: HTTP {response.status}")
            return await response.read()

    async def download_to(self, message_id: str, payload: dict[str, Any], folder: Path, index: int) -> LetterPart:
        """A payload streamed into ``folder/part-<index>`` (written and hashed off the event loop)."""
        content_id = str(payload["content_id"])
        path = f"/api/v1/messages/{quote(message_id, safe='')}/payloads/{quote(content_id, safe='')}?direction=in"
        sink = Sink(folder / f"part-{index}")
        # A large letter's content takes as long as it takes: only a stall ends the download.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        async with self.session.get(self.url + path, headers=self._headers(), timeout=timeout) as response:
            if response.status != 200:
                raise AccessPointError(f"download {message_id}/{content_id}: HTTP {response.status}")
            async for chunk in response.content.iter_chunked(CHUNK):
                await sink.write(chunk)
        size, digest = await sink.close()
        mime = str(payload.get("mime_type") or "application/octet-stream")
        return LetterPart(sink.path.name, content_id, mime, "payload", size, digest)

    async def ack(self, message_id: str) -> None:
        """Tell the access point the operator has the message."""
        status, document = await self._json("POST", f"/api/v1/messages/{quote(message_id, safe='')}/ack")
        if status != 200:
            raise AccessPointError(f"ack {message_id}: HTTP {status} {document}")

    async def submit(self, document: dict[str, Any]) -> tuple[int, Any]:
        """Submit a message (202 queued, 409 already submitted)."""
        return await self._json("POST", "/api/v1/messages", document)

    async def submit_files(self, document: dict[str, Any], files: list[tuple[str, str, Path]]) -> tuple[int, Any]:
        """Submit a message whose payloads are files (content id, MIME type, path), streamed as multipart/form-data
        (202 queued, 409 already submitted)."""
        described = [{"part": cid, "content_id": cid, "mime_type": mime} for cid, mime, _path in files]
        form = aiohttp.FormData()
        form.add_field("metadata", json.dumps({**document, "payloads": described}), content_type="application/json")
        handles = [path.open("rb") for _cid, _mime, path in files]
        try:
            for (cid, mime, path), handle in zip(files, handles, strict=True):
                form.add_field(cid, handle, filename=path.name, content_type=mime)
            timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
            async with self.session.post(
                self.url + "/api/v1/messages", data=form, headers=self._headers(), timeout=timeout
            ) as response:
                raw = await response.read()
                return response.status, json.loads(raw) if raw else None
        finally:
            for handle in handles:
                handle.close()


class Operator:
    """One operator: its settings, mailbox database, access point client, and the queue of work."""

    def __init__(self, settings: OperatorSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.metrics = OperatorMetrics()
        self.store = MailboxStore(create_engine(settings.database))
        contracts, xhe = settings.minameddelanden_contracts, settings.xhe_schema
        self.trust = DeliveryTrust(
            intermediaries=settings.intermediaries,
            sender_anchors=settings.sender_anchors,
            minameddelanden_schema=None if contracts is None else load_minameddelanden_schema(contracts),
            xhe_schema=None if xhe is None else load_xhe_schema(xhe),
        )
        self.auth = BearerAuth(settings.tokens, realm="operator")
        self.queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
        self.pending: set[str] = set()
        self.client: AccessPointClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.files = FileStore(settings.storage)
        self.moves: Mover | None = Mover(self) if settings.peers else None
        self.desk = HolderDesk(self)
        configured = channels(self)
        self.notifier: Notifier | None = Notifier(self, configured) if configured else None
        self.retention = Retention(self)
        self.twoway = TwoWay(self)  # replies, receipts, delgivning, invoices, case events (operators/twoway.py)

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Create the tables and mailboxes, then start the workers and the poller."""
        await self.store.create(self.settings.mailboxes, now=self.clock())
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        link = self.settings.access_point
        self.client = AccessPointClient(link.url, link.token, session)
        async with self.store.engine.connect() as conn:
            known = set((await conn.execute(select(letters.c.uid))).scalars())
        swept = await asyncio.to_thread(self.files.sweep, known)
        if swept:
            log.info("removed %d letter folder(s) no letter names (left by a stop mid-delivery)", swept)
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(link.workers)]
        if link.poll_interval.total_seconds() > 0:
            self._tasks.append(asyncio.create_task(self._poller()))
        if self.moves is not None:
            self._tasks.append(asyncio.create_task(self.moves.run()))
        self._tasks.append(asyncio.create_task(self.retention.run()))
        await self.twoway.start()

    async def stop(self) -> None:
        """Stop the tasks, close the HTTP client and the database."""
        await self.twoway.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.session.close()
        await self.store.dispose()

    def enqueue(self, message_id: str, attempt: int = 0) -> None:
        """Handle that received message (once, however often it is announced)."""
        if message_id not in self.pending:
            self.pending.add(message_id)
            self.queue.put_nowait((message_id, attempt))

    async def _poller(self) -> None:
        assert self.client is not None
        while True:
            # The search is the safety net for a lost webhook: while the workers have work waiting it finds nothing
            # new and costs both sides a thousand-row answer, so it waits until they catch up.
            if self.queue.qsize() < self.settings.access_point.workers:
                try:
                    for message_id in await self.client.received():
                        self.enqueue(message_id)
                except (aiohttp.ClientError, TimeoutError, AccessPointError, MoveWaits) as exc:
                    log.warning("polling the access point failed: %s", exc)
            await asyncio.sleep(self.settings.access_point.poll_interval.total_seconds())

    async def _worker(self) -> None:
        while True:
            message_id, attempt = await self.queue.get()
            try:
                await self.handle(message_id)
            except (aiohttp.ClientError, TimeoutError, AccessPointError, MoveWaits) as exc:
                log.warning("delivery %s: attempt %d failed: %s", message_id, attempt + 1, exc)
                self.pending.discard(message_id)
                if attempt + 1 < MAX_ATTEMPTS:
                    asyncio.get_running_loop().call_later(2**attempt * 0.5, self.enqueue, message_id, attempt + 1)
                continue
            except Exception:
                log.exception("delivery %s: unexpected failure", message_id)
            self.pending.discard(message_id)

    # ---------------------------------------------------------------------------------------- the delivery

    def check(self, payloads: list[tuple[str, bytes]]) -> CheckedDelivery | Refusal:
        """The verdict on a message's payloads: the first payload in a known format is the delivery."""
        return verdict(payloads, self.trust, at=self.clock())[1]

    def _check_files(self, folder: Path, parts: list[LetterPart]) -> tuple[int, CheckedDelivery | Refusal]:
        """The verdict on downloaded payloads: only those small enough to be an envelope are read."""
        small = [(str(i), (folder / p.name).read_bytes()) for i, p in enumerate(parts) if p.size <= MAX_ENVELOPE]
        chosen, outcome = verdict(small, self.trust, at=self.clock())
        return (int(chosen) if chosen is not None else -1), outcome

    def _examine(self, folder: Path, parts: list[LetterPart]) -> bytes | tuple[int, CheckedDelivery | Refusal]:
        """A broadcast's document; else the verdict on downloaded payloads, then the two-way screen of a delivery
        (blocking: one worker thread for all three)."""
        found = broadcast_document(folder, parts)
        if found is not None:
            return found
        chosen, outcome = self._check_files(folder, parts)
        if isinstance(outcome, CheckedDelivery):
            outcome = self.twoway.screen(outcome, folder, parts)
        return chosen, outcome

    async def handle(self, message_id: str) -> None:
        """Check, store, answer and acknowledge one received message (safe to repeat)."""
        client = self.client
        assert client is not None
        done = await self.store.handled(message_id)
        if done is not None and done.reply_message_id is not None:
            await client.ack(message_id)
            return
        record = await client.message(message_id)
        if record is None:
            return
        if record["state"] == "acknowledged":
            return
        if self.moves is not None and self.moves.handles(record):
            await self.moves.received(record)
            await client.ack(message_id)
            return
        staged = self.files.staging(message_id)
        try:
            received = [await client.download_to(message_id, p, staged, i) for i, p in enumerate(record["payloads"])]
            now = self.clock()
            examined = await asyncio.to_thread(self._examine, staged, received)
            if isinstance(examined, bytes):  # a broadcast from the infrastructure owner
                await self.twoway.broadcast(message_id, record, examined)
                return
            chosen, outcome = examined
            if isinstance(outcome, CheckedDelivery) and not await self.store.has_mailbox(outcome.recipient):
                outcome = unknown_recipient(outcome)
            letter = fresh = None
            signed: tuple[AnswerPart, ...] = ()
            if isinstance(outcome, CheckedDelivery):
                parts_ = tuple(replace(p, role="envelope") if i == chosen else p for i, p in enumerate(received))
                if done is None:
                    # A first delivery: its answer is signed now and filed with the letter, in the transaction that
                    # stores it, so the letter carries exactly the answer that is sent (handled again after a stop,
                    # the delivery is answered with what its letter kept).
                    signed, filed = await asyncio.to_thread(
                        self._sign_and_file, outcome, message_id, received, now, staged
                    )
                    parts_ += filed
                fresh = Letter(
                    new_uid(),
                    outcome.recipient,
                    message_id,
                    str(outcome.network),
                    outcome.business_id,
                    outcome.sender,
                    now,
                    parts_,
                    metadata=as4_metadata(record),
                    answered_by=self.settings.id if signed else None,
                )
                checked = outcome

                def two_way(conn: Connection, ids: list[int]) -> None:
                    self.twoway.delivered(conn, message_id, record, checked, ids, now)

                stored = await self.store.deliver(
                    message_id,
                    self.twoway.for_mailbox(outcome),
                    now=now,
                    letter=fresh,
                    files=self.files,
                    staged=staged,
                    also=two_way,
                )
                letter = fresh if stored.new else await self.store.letter(outcome.recipient, message_id)
                log.info("delivery %s: in the mailbox of %s", message_id, outcome.recipient)
                self.metrics.deliveries.labels(network=outcome.network.value, result="delivered").inc()
            else:
                await self.store.reject(message_id, str(outcome), now=now)
                log.info("delivery %s: rejected (%s)", message_id, outcome)
                self.metrics.deliveries.labels(network=outcome.network.value, result=outcome.code).inc()
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        # The answer filed with the letter this call stored, else the one a letter kept (or a refusal's, built now).
        parts = signed if signed and letter is fresh else await self._answer(outcome, message_id, received, letter, now)
        reply_id = f"{stable_id('reply', message_id)}@{self.settings.id}"
        answer = [{"content_id": p.content_id, "mime_type": p.mime_type} for p in parts]
        reply_pmode = self.settings.access_point.reply_pmode
        status, document = await client.submit(
            {
                **({"pmode": reply_pmode} if reply_pmode else {}),
                "message_id": reply_id,
                "ref_to_message_id": message_id,
                "properties": {"deliveryStatus": "delivered" if isinstance(outcome, CheckedDelivery) else "rejected"},
                "payloads": [
                    {**a, "data": base64.b64encode(p.data).decode()} for a, p in zip(answer, parts, strict=True)
                ],
            }
        )
        if status not in (202, 409):
            raise AccessPointError(f"reply to {message_id}: HTTP {status} {document}")
        await self.store.replied(message_id, reply_id, answer)
        await client.ack(message_id)
        if letter is not None and self.notifier is not None:
            await self.notifier.mail_arrived(letter)

    async def _answer(
        self,
        outcome: CheckedDelivery | Refusal,
        message_id: str,
        received: list[LetterPart],
        letter: Letter | None,
        now: datetime,
    ) -> tuple[AnswerPart, ...]:
        """The signed answer: the one kept with the letter (after a restart), else built and kept with it first, so
        the letter carries exactly the answer that was sent."""
        kept = () if letter is None else tuple(p for p in letter.parts if p.role == "answer")
        if kept:
            assert letter is not None
            again = []
            for p in kept:
                data = await asyncio.to_thread(self.files.path(letter.uid, p.name).read_bytes)
                again.append(AnswerPart(p.content_id, p.mime_type, data))
            return tuple(again)
        parts = await self._sign(outcome, message_id, received, now)
        if letter is not None:  # a letter stored before its answer was filed with it (by an earlier version)
            written = await asyncio.to_thread(_file_answer, self.files.folder(letter.uid), parts)
            await self.store.add_answer(letter.uid, written, self.settings.id)
        return parts

    async def _sign(
        self, outcome: CheckedDelivery | Refusal, message_id: str, received: list[LetterPart], now: datetime
    ) -> tuple[AnswerPart, ...]:
        """The signed answer to a delivery (built off the event loop: signing and schema checks)."""
        return await asyncio.to_thread(self._signed, outcome, message_id, received, now)

    def _sign_and_file(
        self,
        outcome: CheckedDelivery | Refusal,
        message_id: str,
        received: list[LetterPart],
        now: datetime,
        folder: Path,
    ) -> tuple[tuple[AnswerPart, ...], tuple[LetterPart, ...]]:
        """The signed answer, written into the letter's ``folder``: its parts and the letter's parts that list them
        (blocking: one worker thread for both)."""
        signed = self._signed(outcome, message_id, received, now)
        return signed, _file_answer(folder, signed)

    def _signed(
        self, outcome: CheckedDelivery | Refusal, message_id: str, received: list[LetterPart], now: datetime
    ) -> tuple[AnswerPart, ...]:
        return build_answer(
            outcome,
            message_id=message_id,
            payloads=(),
            digests=[(p.content_id, p.sha256) for p in received],
            operator=self.settings.id,
            keys=self.settings.keys,
            at=now,
            minameddelanden_schema=self.trust.minameddelanden_schema,
            xhe_schema=self.trust.xhe_schema,
        )

    async def deliver_soap(self, delivery: CheckedDelivery, document: bytes) -> bool:
        """A delivery that came over Service v3: into the mailbox (once per business id) when there is one, the
        deliverSecure element kept as the letter's envelope."""
        if not await self.store.has_mailbox(delivery.recipient):
            return False
        origin = f"soap:{delivery.business_id}"
        staged = self.files.staging(origin)
        try:
            sink = Sink(staged / "part-0")
            await sink.write(document)
            size, digest = await sink.close()
            now = self.clock()
            part = LetterPart("part-0", "deliverSecure", "application/xml", "envelope", size, digest)
            letter = Letter(
                new_uid(),
                delivery.recipient,
                origin,
                str(delivery.network),
                delivery.business_id,
                delivery.sender,
                now,
                (part,),
                metadata={"channel": "service-v3"},
            )
            await self.store.deliver(origin, delivery, now=now, letter=letter, files=self.files, staged=staged)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        stored = await self.store.letter(delivery.recipient, origin)
        if stored is not None and self.notifier is not None:
            await self.notifier.mail_arrived(stored)
        return True

    # ------------------------------------------------------------------------------------------------ HTTP

    async def _reader(self, request: web.Request, what: Any) -> str:
        """The mailbox a request reads, when its caller may read it: a configured token (``read:recipient=<id>``
        or ``read``) or a holder's session (its own, or a company's it may view now: audited with the person)."""
        recipient = request.match_info["recipient"]
        reader = await self.desk.reader(request, recipient)
        if reader.person is not None and reader.person != recipient:
            await self.store.audit(
                reader.actor, "read", recipient, {"what": what, "grant": reader.grant}, now=self.clock()
            )
        return recipient

    async def webhook(self, request: web.Request) -> web.Response:
        """POST /hooks/accesspoint: a signed event from the access point."""
        body = await request.read()
        secret = self.settings.access_point.webhook_secret
        if not signature_matches(secret, body, request.headers.get(SIGNATURE_HEADER)):
            raise Problem(401, "the webhook signature does not verify", kind="bad-signature")
        try:
            event = json.loads(body)
            data = event["data"]
        except (ValueError, KeyError, TypeError):
            raise Problem(400, "not a webhook event", kind="invalid-event") from None
        if event.get("event") == "message-received" and data.get("direction") == "in":
            self.enqueue(str(data["message_id"]))
        return web.Response(status=204)

    async def api_list(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailboxes/{recipient}/messages."""
        recipient = await self._reader(request, "list")
        if await self.store.state(recipient) is None:
            raise Problem(404, f"{recipient} has no mailbox here", kind="no-mailbox")
        return web.json_response({"messages": [_mail_json(m) for m in await self.store.list(recipient)]})

    async def api_read(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailboxes/{recipient}/messages/{id}."""
        recipient = await self._reader(request, {"mail": request.match_info["id"]})
        text = request.match_info["id"]
        # Mail ids are positive 64-bit integers: anything else names no message (and must not reach the database).
        mail_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
        if not 0 < mail_id < 2**63:
            raise Problem(404, "no such message", kind="not-found")
        found = await self.store.read(recipient, mail_id)
        if found is None:
            raise Problem(404, f"no message {mail_id} in the mailbox of {recipient}", kind="not-found")
        await self.twoway.opened(request, recipient, mail_id)
        return web.json_response(
            {
                **_mail_json(found),
                "body": base64.b64encode(found.body).decode(),
                "attachments": [
                    {
                        "filename": a.filename,
                        "content_type": a.content_type,
                        "data": base64.b64encode(a.body).decode(),
                    }
                    for a in found.attachments
                ],
            }
        )

    async def api_part(self, request: web.Request) -> web.StreamResponse:
        """GET /api/v1/mailboxes/{recipient}/messages/{id}/parts/{content_id}: a part of the letter as it came (an
        attachment bound by digest to its envelope, of any size), streamed from its file, with its SHA-256."""
        content_id = request.match_info["content_id"]
        recipient = await self._reader(request, {"mail": request.match_info["id"], "part": content_id})
        text = request.match_info["id"]
        mail_id = int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else 0
        letter = await self.store.letter_of_mail(recipient, mail_id) if 0 < mail_id < 2**63 else None
        if letter is None:
            raise Problem(404, f"no message {text} in the mailbox of {recipient}", kind="not-found")
        # Only what the sender sent: the envelope and the operator's answer are read through their own routes.
        part = next((p for p in letter.parts if p.content_id == content_id and p.role == "payload"), None)
        if part is None:
            raise Problem(404, f"message {mail_id} has no part {content_id[:64]}", kind="not-found")
        await self.twoway.opened(request, recipient, mail_id)  # a part fetched by the holder is the letter read
        digest = base64.b64encode(bytes.fromhex(part.sha256)).decode()
        return web.FileResponse(
            self.files.path(letter.uid, part.name),
            headers={"Content-Type": part.mime_type, "Repr-Digest": f"sha-256=:{digest}:", "ETag": f'"{part.sha256}"'},
        )

    async def api_letters(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailboxes/{recipient}/letters: the letters as kept (every file with its size and SHA-256,
        where each first arrived, from which operator it was moved here)."""
        recipient = await self._reader(request, "letters")
        if await self.store.state(recipient) is None:
            raise Problem(404, f"{recipient} has no mailbox here", kind="no-mailbox")
        found = await self.store.letters_of(recipient)
        return web.json_response(
            {
                "letters": [
                    {
                        "uid": x.uid,
                        "origin": x.origin,
                        "network": x.network,
                        "business_id": x.business_id,
                        "sender": x.sender,
                        "received_at": x.received_at.isoformat(),
                        "imported_from": x.imported_from,
                        "answered_by": x.answered_by,
                        "parts": [p.to_json() for p in x.parts],
                    }
                    for x in found
                ]
            }
        )

    async def api_delivery(self, request: web.Request) -> web.Response:
        """GET /api/v1/deliveries/{id}: what became of an AS4 message (tokens that see every mailbox only)."""
        self.auth.authorize(request, "read")
        done = await self.store.handled(request.match_info["id"])
        if done is None:
            raise Problem(404, "no such delivery (yet)", kind="not-found")
        return web.json_response(
            {
                "message_id": done.as4_message_id,
                "outcome": done.outcome,
                "detail": done.detail,
                "reply_message_id": done.reply_message_id,
            }
        )

    async def status(self) -> dict[str, Any]:
        """``GET /status`` on the admin listener (``operators.status``)."""
        return await operator_status(self)

    def application(self) -> web.Application:
        """The aiohttp application; starting it starts the operator."""
        # What this service reads whole is the webhook's small JSON event, unauthenticated until its HMAC is checked;
        # the SOAP endpoint reads its body itself, within the operator's soap_max_size.
        middlewares = [
            http_metrics_middleware(self.metrics),
            trace_middleware(tracer_for("operator")),
            problem_middleware(),
        ]
        app = web.Application(middlewares=middlewares, client_max_size=WEBHOOK_MAX_SIZE)
        app.router.add_post("/hooks/accesspoint", self.webhook)
        app.router.add_get("/api/v1/mailboxes/{recipient}/messages", self.api_list)
        app.router.add_get("/api/v1/mailboxes/{recipient}/messages/{id}", self.api_read)
        app.router.add_get("/api/v1/mailboxes/{recipient}/messages/{id}/parts/{content_id}", self.api_part)
        app.router.add_get("/api/v1/mailboxes/{recipient}/letters", self.api_letters)
        app.router.add_get("/api/v1/deliveries/{id}", self.api_delivery)
        # Service v3 for routers that still call deliverSecure: the same checks, the same mailboxes.
        schema = self.trust.minameddelanden_schema
        limit = SoapBodyLimit(max_size=self.settings.soap_max_size)
        handler = deliver_secure_handler(self.deliver_soap, self.trust, schema=schema, limit=limit)
        app.router.add_post(SERVICE_V3_PATH, handler)
        app.router.add_get("/health", _health)
        self.desk.add_routes(app.router)
        app.router.add_delete("/api/v1/holders/{id}/mail", self.retention.erase_on_request)
        self.twoway.add_routes(app.router)

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            yield
            await self.desk.close()
            await self.stop()

        app.cleanup_ctx.append(lifecycle)
        app.cleanup_ctx.append(admin_context(self.metrics, self.settings.observability.admin, self.status))
        return app


def _mail_json(found: StoredMail) -> dict[str, Any]:
    return {
        "id": found.id,
        "recipient": found.recipient,
        "as4_message_id": found.as4_message_id,
        "network": found.network,
        "reference": found.reference,
        "sender": found.sender,
        "sender_name": found.sender_name,
        "subject": found.subject,
        "content_type": found.content_type,
        "sha256": found.sha256,
        "signed_by": found.signed_by,
        "received_at": found.received_at.isoformat(),
    }


async def _health(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def run(settings: OperatorSettings) -> None:
    """Serve until SIGTERM or SIGINT (``accesspoint operator serve``); OSError when the address is taken."""
    settings.observability.configure_logging()
    configure_tracing("operator")
    tls = None if settings.tls is None else server_context(settings.tls)
    server.run([server.Listener(Operator(settings).application(), settings.host, settings.port, tls)])


class OperatorMetrics(Metrics):
    """The operator's series: deliveries by network and result (delivered, or the refusal's code)."""

    def __init__(self) -> None:
        super().__init__("operator")
        self.deliveries = self.counter(
            "operator_deliveries_total", "Deliveries handled, by network and result", ("network", "result")
        )


__all__ = ["AccessPointClient", "AccessPointError", "Network", "Operator", "run"]
