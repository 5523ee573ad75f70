"""Mass mailings (*massutskick*): one letter to very many recipients, streamed in, checked in FaR, sent at a rate.

``POST /api/v1/mailings`` takes one mailing, either as JSON lines (``application/x-ndjson``: the first line the
mailing, each further line a recipient) or as ``multipart/form-data`` (a ``metadata`` JSON part, ``content`` file
parts, then a ``recipients`` part of JSON lines or one identifier a line). The mailing::

    {"id": "optional-own-id", "sender": "0007:2021005448", "action": "…", "service": "…", "pmode": "…",
     "properties": {…}, "envelope": "sbdh" | "none", "rate": 50, "reference": "…",
     "payloads": [{"content_id", "mime_type", "data" (base64)}]}         # the content, once

and a recipient line is ``"197802022389"`` or ``{"recipient": "…", "payloads": [...], "properties": {...}}`` (its own
payloads instead of the content). Recipients are never all in memory: rows are validated and stored as they
arrive, a thousand at a time; a broken row is kept as ``invalid`` with its line and reason and the good ones go.
The answer (202) names the mailing and reports the rows read and every bad one.

Then, under the supervisor, the mailing is worked on (``accesspoint/store/mailings.py`` has the row states):

1. FaR is asked about the recipients in batches of 1,000 (four at a time); each is ``reachable`` (its operator
   noted) or ``refused`` with FaR's reason, so the sender can print that letter on paper;
2. the reachable ones are sent at the mailing's ``rate`` (letters per second): each letter is stored and queued
   under a MessageId derived from the mailing and the row, on the P-Mode that forwards to the recipient's
   operator, with the route recorded as the router records it; the send workers take it from there. With
   ``"envelope": "sbdh"`` (the default) each letter is the content in an SBDH from the sender to the recipient;
   a recipient's own payloads are checked (and a SignedDelivery sealed) as a letter received over AS4 is;
3. once every row is settled and every letter delivered or failed, the mailing is ``completed`` and the
   ``mailing-completed`` webhook event carries its counts.

A stop anywhere is made good at the next start: rows claimed for sending are looked up in the store (a stored
letter is queued; else it is sent), and nothing is sent twice. ``GET /api/v1/mailings/{id}`` answers the counts
(recipients by row state, letters by message state, the operators' end-to-end answers, FaR's checking rate);
``GET /api/v1/mailings/{id}/recipients?state=refused&after=&limit=`` the rows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from accesspoint.msh.config import WebhookEvent
from accesspoint.msh.context import Context
from accesspoint.msh.submissions import Submission, Submissions
from accesspoint.routing.decision import (
    FINAL_RECIPIENT,
    ORIGINAL_SENDER,
    FarFailure,
    MessageFacts,
    check_sender,
    decide,
    decide_routes,
    forward_route,
)
from accesspoint.routing.letters import LetterPart, LetterRefused, check_letter
from accesspoint.routing.outbound import RouteTarget
from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import CALLER
from accesspoint.store import Direction, DuplicateMessage, NewPayload
from accesspoint.store.mailings import (
    DuplicateMailing,
    MailingState,
    MailingStore,
    Outcome,
    Row,
    RowState,
    letter_id,
)
from far.identifiers import InvalidIdentifier, Policy, recipient_kind
from far.model import AccountStatus
from far.parties import parse_party_id
from far.service import Operator, Reachability

log = logging.getLogger("accesspoint.mailings")

BATCH = 1000
FAR_CONCURRENCY = 4
SEND_CONCURRENCY = 8
DEFAULT_RATE = 50.0
MAX_RATE = 10_000.0
MAX_LINE = 16 * 1024 * 1024  # a recipient line with its own payloads, base64
MAX_CONTENT = 64 * 1024 * 1024
MAX_REPORTED = 100
IDLE = 1.0  # seconds between looks for work when there is none
_ID = re.compile(r"[A-Za-z0-9_-]{1,40}")
# The intake checks the form only (the Recipient v3 pattern, or eIDAS); check digits are FaR's to judge.
_FORM = Policy(check_digits=False)
_JSONL = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines"})
ENVELOPES = frozenset({"sbdh", "none"})
FINAL_STATES = frozenset({"delivered", "failed"})


@dataclass(frozen=True, slots=True)
class Content:
    """A payload of the mailing's letter, stored once in the mailing's folder."""

    content_id: str
    mime_type: str
    path: str

    def to_json(self) -> dict[str, str]:
        return {"content_id": self.content_id, "mime_type": self.mime_type, "path": self.path}


@dataclass
class Intake:
    """What an upload read: rows and bad rows (the first MAX_REPORTED of them named)."""

    rows: int = 0
    invalid: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def bad(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_REPORTED:
            self.errors.append({"line": line, "reason": reason})


def _text(document: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = document.get(name)
    if value is None:
        if required:
            raise ValueError(f"{name}: required")
        return None
    if not isinstance(value, str) or not value or len(value) > 1024:
        raise ValueError(f"{name}: a string of 1 to 1024 characters")
    return value


def read_metadata(document: Any) -> dict[str, Any]:
    """The mailing's own fields, checked (ValueError naming the field); its content stays to be stored."""
    if not isinstance(document, dict):
        raise ValueError("the mailing is a JSON object")
    known = {"id", "sender", "action", "service", "pmode", "properties", "envelope", "rate", "reference", "payloads"}
    unknown = set(document) - known
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]}: unknown field")
    mailing_id = document.get("id") or uuid.uuid4().hex
    if not isinstance(mailing_id, str) or not _ID.fullmatch(mailing_id):
        raise ValueError("id: 1 to 40 letters, digits, '-' or '_'")
    try:
        sender = parse_party_id(_text(document, "sender", required=True))
    except InvalidIdentifier as exc:
        raise ValueError(f"sender: {exc.reason}") from None
    envelope = document.get("envelope", "sbdh")
    if envelope not in ENVELOPES:
        raise ValueError("envelope: sbdh or none")
    rate = document.get("rate", DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE:
        raise ValueError(f"rate: letters per second, more than 0 and at most {MAX_RATE:.0f}")
    properties = document.get("properties") or {}
    if not isinstance(properties, dict) or {FINAL_RECIPIENT, ORIGINAL_SENDER} & set(properties):
        raise ValueError("properties: an object of name to value, without finalRecipient and originalSender")
    return {
        "id": mailing_id,
        "sender": sender,
        "action": _text(document, "action"),
        "service": _text(document, "service"),
        "pmode": _text(document, "pmode"),
        "properties": properties,
        "envelope": envelope,
        "rate": float(rate),
        "reference": _text(document, "reference"),
    }


def _decoded(items: Any, where: str) -> list[tuple[str, str, bytes]]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where}: a list of {{content_id, mime_type, data (base64)}}")
    found = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("data"), str):
            raise ValueError(f"{where}[{index}]: {{content_id, mime_type, data (base64)}}")
        try:
            data = base64.b64decode(item["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{where}[{index}].data: not base64") from None
        content_id = str(item.get("content_id") or f"part{index + 1}@mailing")
        found.append((content_id, str(item.get("mime_type") or "application/octet-stream"), data))
    return found


def read_row(text: str) -> tuple[str, list[tuple[str, str, bytes]] | None, dict[str, Any] | None]:
    """A recipient line: the recipient, its own payloads and properties (ValueError says why it is not one)."""
    stripped = text.strip()
    if stripped.startswith(("{", '"')):
        try:
            item = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc.msg}") from None
    else:
        item = stripped.split(",", 1)[0].strip()
    payloads = properties = None
    if isinstance(item, dict):
        unknown = set(item) - {"recipient", "payloads", "properties"}
        if unknown:
            raise ValueError(f"{sorted(unknown)[0]}: unknown field")
        if "payloads" in item:
            payloads = _decoded(item["payloads"], "payloads")
        if "properties" in item:
            properties = item["properties"]
            if not isinstance(properties, dict) or {FINAL_RECIPIENT, ORIGINAL_SENDER} & set(properties):
                raise ValueError("properties: an object, without finalRecipient and originalSender")
        item = item.get("recipient")
    if not isinstance(item, str) or not item:
        raise ValueError("no recipient")
    try:
        recipient_kind(item, _FORM)
    except InvalidIdentifier as exc:
        raise ValueError(f"recipient {item[:64]!r}: {exc.reason}") from None
    return item, payloads, properties


async def lines_of(chunks: AsyncIterator[bytes], *, limit: int = MAX_LINE) -> AsyncIterator[str | None]:
    """The lines of a stream as they arrive; None for a line past ``limit`` (skipped up to its end)."""
    pending = bytearray()
    skipping = False
    async for chunk in chunks:
        pending += chunk
        while True:
            end = pending.find(b"\n")
            if end < 0:
                if len(pending) > limit:
                    pending.clear()
                    if not skipping:
                        skipping = True
                        yield None
                break
            line = bytes(pending[:end])
            del pending[: end + 1]
            if skipping:
                skipping = False
                continue
            yield line.decode("utf-8-sig", errors="replace")
    if pending and not skipping:
        yield bytes(pending).decode("utf-8-sig", errors="replace")


def problem(status: int, kind: str, detail: str) -> Problem:
    """The RFC 9457 problem the API answers with (``urn:accesspoint:problem:<kind>``)."""
    return Problem(status, detail, kind=kind)


class _Rate:
    """A token bucket: ``rate`` letters a second, a burst of at most a second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = min(rate, 1.0)
        self.at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


@dataclass
class FarStats:
    """How fast FaR answered for a mailing (this process's share)."""

    checked: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        rate = self.checked / self.seconds if self.seconds else None
        return {"checked": self.checked, "seconds": round(self.seconds, 3), "recipients_per_second": rate}


class Mailings:
    """Intake, work and progress of mass mailings on this access point (the router's backend)."""

    def __init__(self, ctx: Context, submissions: Submissions, store: MailingStore) -> None:
        self.ctx = ctx
        self.submissions = submissions
        self.store = store
        self.folder = ctx.settings.storage / "mailings"
        self.far_stats: dict[str, FarStats] = {}
        self.wake = asyncio.Event()

    # ------------------------------------------------------------------------------------------------ intake

    async def receive(self, request: web.Request) -> web.Response:
        """POST /api/v1/mailings."""
        routing = self.ctx.routing
        if routing.settings is None or routing.far is None:
            raise problem(422, "invalid-submission", "this access point has no routing settings: no mailings")
        if request.content_type == "multipart/form-data":
            reader = await request.multipart()
            part = await reader.next()
            if not isinstance(part, aiohttp.BodyPartReader) or part.name != "metadata":
                raise problem(400, "invalid-submission", "the first part must be 'metadata' (JSON)")
            metadata = _json(await part.read(), "metadata")
            body_lines: AsyncIterator[str | None] | None = None
        elif request.content_type in _JSONL:
            reader = None
            body_lines = lines_of(request.content.iter_chunked(64 * 1024))
            first = await anext(body_lines, "")
            metadata = _json((first or "").encode(), "the first line")
        else:
            raise problem(400, "invalid-submission", "a mailing is application/x-ndjson or multipart/form-data")
        try:
            spec = read_metadata(metadata)
        except ValueError as exc:
            raise problem(422, "invalid-submission", str(exc)) from None
        token = request[CALLER]
        if not token.allows("submit", party=spec["sender"]):  # a token narrowed to other senders may not mail
            raise problem(403, "forbidden", f"this token may not submit for {spec['sender']}")
        refusal = await self._sender_refusal(spec["sender"])
        if refusal is not None:
            raise problem(422, "invalid-submission", f"refused: {refusal}")
        mailing_id = spec["id"]
        if await self.store.get(mailing_id) is not None:
            raise problem(409, "duplicate", f"mailing {mailing_id} exists")
        folder = self.folder / mailing_id
        intake = Intake()
        try:
            content: list[Content] = []
            if "payloads" in metadata:
                for content_id, mime, data in _decoded(metadata["payloads"], "payloads"):
                    content.append(await self._keep(folder, f"content-{len(content)}", content_id, mime, data))
            if reader is not None:
                content, body_lines = await self._multipart(reader, folder, content)
            if not content:
                raise ValueError("payloads: the mailing's content is required")
            if spec["envelope"] == "sbdh":
                await asyncio.to_thread(_probe_sbd, spec["sender"], content)
            spec = {**spec, "content": [c.to_json() for c in content]}
            await self.store.create(mailing_id, spec["sender"], spec, now=self.ctx.clock.now())
        except DuplicateMailing:
            raise problem(409, "duplicate", f"mailing {mailing_id} exists") from None
        except ValueError as exc:
            raise problem(422, "invalid-submission", str(exc)) from None
        try:
            if body_lines is not None:
                await self._rows(mailing_id, folder, body_lines, intake, first_line=2 if reader is None else 1)
        except ValueError as exc:
            await self.store.discard(mailing_id)
            raise problem(422, "invalid-submission", str(exc)) from None
        except BaseException:
            await self.store.discard(mailing_id)  # a broken upload leaves nothing half-stored
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        await self.store.start(mailing_id, intake.rows, now=self.ctx.clock.now())
        self.wake.set()
        log.info("mailing %s: %d recipients, %d invalid", mailing_id, intake.rows - intake.invalid, intake.invalid)
        body = {
            "id": mailing_id,
            "state": MailingState.RUNNING.value,
            "rows": intake.rows,
            "accepted": intake.rows - intake.invalid,
            "invalid": intake.invalid,
            "errors": intake.errors,
        }
        return web.json_response(body, status=202, headers={"Location": f"/api/v1/mailings/{mailing_id}"})

    async def _sender_refusal(self, sender: str) -> str | None:
        routing = self.ctx.routing
        assert routing.settings is not None and routing.far is not None
        if not routing.settings.sender_binding:
            return None
        found = await routing.far.sender(sender)
        if isinstance(found, FarFailure):
            return "far-unavailable: the routing register (FaR) cannot answer now; try again later"
        facts = MessageFacts("mailing", None, original_sender=sender)
        decision = check_sender(
            facts, sender, found, certificate_sha256=routing.own_certificates, party_ids=None, network=None
        )
        return None if decision is None else decision.error().detail

    async def _keep(self, folder: Path, name: str, content_id: str, mime: str, data: bytes) -> Content:
        path = folder / name
        await asyncio.to_thread(_write, path, data)
        return Content(content_id, mime, str(path))

    async def _multipart(
        self, reader: aiohttp.MultipartReader, folder: Path, content: list[Content]
    ) -> tuple[list[Content], AsyncIterator[str | None] | None]:
        """The content parts, then the recipients part as a stream of lines (left unread for ``_rows``)."""
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise ValueError("nested multipart is not supported")
            if part.name == "recipients":
                return content, lines_of(_part_chunks(part))
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data += chunk
                if len(data) > MAX_CONTENT:
                    raise ValueError(f"content part {part.name!r} is larger than {MAX_CONTENT // 2**20} MiB")
            mime = part.headers.get("Content-Type") or "application/octet-stream"
            name = part.name or part.filename or f"part{len(content) + 1}@mailing"
            content.append(await self._keep(folder, f"content-{len(content)}", name, mime, bytes(data)))
        return content, None

    async def _rows(
        self, mailing_id: str, folder: Path, lines: AsyncIterator[str | None], intake: Intake, *, first_line: int
    ) -> None:
        batch: list[dict[str, Any]] = []
        number = first_line - 1
        async for line in lines:
            number += 1
            if line is not None and not line.strip():
                continue
            if number == 1 and line is not None and line.strip().lower() == "recipient":
                continue  # a CSV header
            seq = intake.rows
            intake.rows += 1
            # Every row has every column: the batch is one executemany.
            row: dict[str, Any] = {
                "seq": seq, "line": number, "state": RowState.PENDING.value, "recipient": "", "properties": None,
                "payloads": None, "reason": None, "detail": None,
            }  # fmt: skip
            try:
                if line is None:
                    raise ValueError(f"the line is longer than {MAX_LINE // 2**20} MiB")
                recipient, payloads, properties = read_row(line)
                row["recipient"] = recipient
                row["properties"] = properties
                if payloads is not None:
                    row["payloads"] = [
                        (await self._keep(folder, f"{seq}-{n}", cid, mime, data)).to_json()
                        for n, (cid, mime, data) in enumerate(payloads)
                    ]
            except ValueError as exc:
                intake.bad(number, str(exc))
                raw = "" if line is None else line.strip()
                row.update(recipient=raw[:256], state=RowState.INVALID.value, reason="invalid-row", detail=str(exc))
            batch.append(row)
            if len(batch) >= BATCH:
                await self.store.add_rows(mailing_id, batch)
                batch = []
        await self.store.add_rows(mailing_id, batch)

    # ------------------------------------------------------------------------------------------------ progress

    async def progress(self, mailing_id: str) -> dict[str, Any] | None:
        """The mailing's state and counts (None: no such mailing)."""
        mailing = await self.store.get(mailing_id)
        if mailing is None:
            return None
        counts = await self.store.counts(mailing_id)
        return {
            "id": mailing.id,
            "state": mailing.state.value,
            "sender": mailing.sender,
            "reference": mailing.document.get("reference"),
            "rate": mailing.document.get("rate"),
            "rows": mailing.rows,
            "created_at": mailing.created_at.isoformat(),
            "completed_at": None if mailing.completed_at is None else mailing.completed_at.isoformat(),
            **counts,
            "far": self.far_stats.get(mailing_id, FarStats()).to_json(),
        }

    async def read(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailings/{id}."""
        found = await self.progress(request.match_info["id"])
        if found is None:
            raise problem(404, "not-found", f"no mailing {request.match_info['id']!r}")
        return web.json_response(found)

    async def rows(self, request: web.Request) -> web.Response:
        """GET /api/v1/mailings/{id}/recipients?state=&after=&limit=."""
        mailing_id = request.match_info["id"]
        if await self.store.get(mailing_id) is None:
            raise problem(404, "not-found", f"no mailing {mailing_id!r}")
        query = request.query
        try:
            state = RowState(query["state"]) if "state" in query else None
            after = int(query.get("after", "-1"))
            limit = int(query.get("limit", "1000"))
        except ValueError as exc:
            raise problem(400, "invalid-query", str(exc)) from None
        if not 1 <= limit <= 10_000:
            raise problem(400, "invalid-query", "limit is 1 to 10000")
        found = await self.store.rows(mailing_id, state=state, after=after, limit=limit)
        return web.json_response({"recipients": [r.to_json() for r in found]})

    # ------------------------------------------------------------------------------------------------ work

    async def run(self) -> None:
        """Work on every running mailing, oldest first; wait for new ones when there is nothing to do."""
        while True:
            busy = False
            for mailing_id in await self.store.running():
                busy = await self.work(mailing_id) or busy
            if not busy:
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), IDLE)

    async def work(self, mailing_id: str) -> bool:
        """One round on a mailing: settle what a stop left, check in FaR, send, complete. True when it did work."""
        mailing = await self.store.get(mailing_id)
        if mailing is None or mailing.state is not MailingState.RUNNING:
            return False
        did = await self._settle_claimed(mailing_id)
        did = await self._check(mailing_id, mailing.sender) or did
        did = await self._send(mailing_id, mailing.sender, mailing.document) or did
        if not did:
            await self._complete_when_done(mailing_id)
        return did

    async def _settle_claimed(self, mailing_id: str) -> bool:
        """Rows a stop left ``sending``: queued when their letter is stored, else reachable again."""
        claimed = await self.store.rows(mailing_id, state=RowState.SENDING, limit=100_000)
        if not claimed:
            return False
        outcomes = []
        store = self.ctx.store
        for row in claimed:
            message_id = letter_id(mailing_id, row.seq)
            stored = await store.get(Direction.OUT, message_id)
            state = RowState.QUEUED if stored is not None else RowState.REACHABLE
            outcomes.append(Outcome(row.seq, state, message_id=message_id if stored is not None else None))
        await self.store.settle(mailing_id, outcomes, now=self.ctx.clock.now())
        log.info("mailing %s: %d rows a stop left in flight settled", mailing_id, len(outcomes))
        return True

    async def _check(self, mailing_id: str, sender: str) -> bool:
        """Ask FaR about every pending row, a batch of 1,000 at a time, FAR_CONCURRENCY batches at once."""
        did = False
        stats = self.far_stats.setdefault(mailing_id, FarStats())
        after = -1
        while True:
            batches = []
            for _ in range(FAR_CONCURRENCY):
                rows = await self.store.rows(mailing_id, state=RowState.PENDING, after=after, limit=BATCH)
                if not rows:
                    break
                after = rows[-1].seq
                batches.append(rows)
            if not batches:
                return did
            started = time.monotonic()
            answers = await asyncio.gather(*(self._ask(sender, rows) for rows in batches))
            stats.seconds += time.monotonic() - started
            answered: list[Outcome] = []  # the batches' answers in one transaction
            for outcomes in answers:
                if outcomes is None:
                    break
                answered += outcomes
            if answered:
                await self.store.settle(mailing_id, answered, now=self.ctx.clock.now())
                stats.checked += len(answered)
                did = True
            if len(answered) < sum(len(rows) for rows in batches):
                await asyncio.sleep(IDLE)  # FaR cannot answer now: the rest stay pending
                return did

    async def _ask(self, sender: str, rows: Sequence[Row]) -> list[Outcome] | None:
        far = self.ctx.routing.far
        assert far is not None
        recipients = [r.recipient for r in rows]
        routes = await far.routes(sender, recipients)
        if isinstance(routes, FarFailure):
            log.warning("mailing: FaR cannot answer (%s); trying again", routes.detail)
            return None
        # A few operators serve a whole batch: each target is written once and shared by its rows.
        targets = [{**operator.to_json(), "endpoint": endpoint} for operator, endpoint in routes.operators]
        reachable, refused = RowState.REACHABLE, RowState.REFUSED
        return [
            Outcome(row.seq, reachable, operator=targets[decision])
            if isinstance(decision, int)
            else Outcome(row.seq, refused, reason=decision.reason, detail=decision.detail)
            for row, decision in zip(rows, decide_routes(sender, recipients, routes), strict=True)
        ]

    async def _send(self, mailing_id: str, sender: str, document: dict[str, Any]) -> bool:
        """Send the reachable rows at the mailing's rate, a claim of a hundred at a time."""
        rate = _Rate(float(document.get("rate") or DEFAULT_RATE))
        limit = asyncio.Semaphore(SEND_CONCURRENCY)
        did = False
        content = [await asyncio.to_thread(_read, Path(c["path"])) for c in document.get("content") or ()]
        while rows := await self.store.claim(mailing_id, 100):
            did = True

            async def one(row: Row) -> Outcome:
                await rate.take()
                async with limit:
                    return await self._letter(mailing_id, sender, document, content, row)

            outcomes = await asyncio.gather(*(one(row) for row in rows))
            await self.store.settle(mailing_id, outcomes, now=self.ctx.clock.now())
        return did

    async def _letter(
        self, mailing_id: str, sender: str, document: dict[str, Any], content: list[bytes], row: Row
    ) -> Outcome:
        """Store and queue one letter; the row's outcome."""
        routing = self.ctx.routing
        message_id = letter_id(mailing_id, row.seq)
        operator = Operator.from_json(row.operator or {})
        endpoint = str((row.operator or {}).get("endpoint"))
        decision = decide(
            MessageFacts(message_id, row.recipient, original_sender=sender),
            _reachable(row.recipient, operator, endpoint),
        )
        pmode_id = document.get("pmode") or (None if routing.settings is None else routing.settings.forward_pmode)
        action = str(document.get("action") or "")
        forward = forward_route(decision, self.submissions.pmodes, action=action, pmode_id=pmode_id)
        if forward is None:
            detail = f"this access point has no agreement to forward to {operator.name}"
            return Outcome(row.seq, RowState.REFUSED, reason="no-agreement", detail=detail)
        try:
            files = await self._files(mailing_id, sender, document, content, row)
        except LetterRefused as refused:
            return Outcome(row.seq, RowState.REFUSED, refused.reason, refused.detail)
        except EnvelopeError as exc:  # this recipient's own payloads, or its SBDH, cannot be a letter
            return Outcome(row.seq, RowState.REFUSED, "invalid-content", str(exc)[:500])
        target = RouteTarget(message_id, message_id, operator.id, operator.name, operator.party_id, endpoint)
        properties = dict(document.get("properties") or {})
        properties.update(row.properties or {})
        properties[ORIGINAL_SENDER] = {"value": sender, "type": "iso6523-actorid-upis"} if ":" in sender else sender
        properties[FINAL_RECIPIENT] = row.recipient
        submission = Submission.from_document(
            {"pmode": forward.pmode.id, "message_id": message_id, "conversation_id": f"mailing-{mailing_id}",
             "properties": properties},
            files,
        )  # fmt: skip
        try:
            # The route target is stored with the letter, in its transaction.
            await self.submissions.accept(submission, hooks=[routing.records.hook(target, now=self.ctx.clock.now())])
        except DuplicateMessage:
            pass  # stored before a stop: it is queued, and never twice
        except ValueError as exc:
            return Outcome(row.seq, RowState.REFUSED, "no-agreement", str(exc))
        return Outcome(row.seq, RowState.QUEUED, message_id=message_id)

    async def _files(
        self, mailing_id: str, sender: str, document: dict[str, Any], content: list[bytes], row: Row
    ) -> list[NewPayload]:
        if row.payloads:
            parts = [
                LetterPart(p["content_id"], p["mime_type"], await asyncio.to_thread(_read, Path(p["path"])))
                for p in row.payloads
            ]
            routing = self.ctx.routing
            found = None if routing.far is None else await routing.far.sender(sender)
            registered = () if found is None or isinstance(found, FarFailure) else found.sender.signing_certificates
            checked = check_letter(
                parts, sender=sender, recipient=row.recipient, signing_certificates=registered, seal=routing.seal,
                today=datetime.now(UTC).date(),
            )  # fmt: skip
            return [
                NewPayload(p.content_id, p.mime_type, _once(checked.replaced.get(p.content_id, p.data))) for p in parts
            ]
        files = []
        for item, data in zip(document.get("content") or (), content, strict=True):
            body = data
            if document.get("envelope") == "sbdh":
                body = _sbd(sender, row.recipient, letter_id(mailing_id, row.seq), data)
            files.append(NewPayload(item["content_id"], item["mime_type"], _once(body)))
        return files

    async def _complete_when_done(self, mailing_id: str) -> None:
        counts = await self.store.counts(mailing_id)
        open_rows = {RowState.PENDING.value, RowState.REACHABLE.value, RowState.SENDING.value}
        if any(counts["recipients"].get(state) for state in open_rows):
            return
        if any(n for state, n in counts["letters"].items() if state not in FINAL_STATES):
            return
        progress = await self.progress(mailing_id)
        assert progress is not None
        # The event is in the outbox before the mailing is marked completed: a stop in between announces it again
        # (webhooks are at least once), never not at all.
        completed_at = self.ctx.clock.now()
        announced = {**progress, "state": MailingState.COMPLETED.value, "completed_at": completed_at.isoformat()}
        await self.ctx.webhooks.notify(WebhookEvent.MAILING_COMPLETED, announced)
        if await self.store.complete(mailing_id, now=completed_at):
            log.info("mailing %s completed: %s", mailing_id, progress["recipients"])


# --- helpers -----------------------------------------------------------------------------------------------


def _reachable(recipient: str, operator: Operator, endpoint: str) -> Reachability:
    """FaR's answer as the check phase recorded it."""
    return Reachability(recipient, True, None, operator, endpoint, True, AccountStatus.SECURE)


def _sbd(sender: str, recipient: str, instance: str, document: bytes) -> bytes:
    header = Sbdh(
        sender=(Partner(sender),),
        receiver=(Partner(recipient),),
        document=DocumentIdentification(
            standard="urn:accesspoint:mailing",
            type_version="1.0",
            instance_identifier=instance,
            type="Letter",
            created=datetime.now(UTC).replace(microsecond=0),
        ),
        scopes=(Scope(ScopeType.DOCUMENTID, "urn:accesspoint:mailing::Letter##1.0", "busdox-docid-qns"),),
    )
    return build_sbd(header, document)


def _probe_sbd(sender: str, content: Sequence[Content]) -> None:
    """ValueError when the content cannot be the business document of an SBDH (not XML, no namespace)."""
    for item in content:
        if "xml" not in item.mime_type:
            raise ValueError('envelope: sbdh wraps XML content; say "envelope": "none" for other content')
        try:
            _sbd(sender, "190001010001", "probe", Path(item.path).read_bytes())
        except EnvelopeError as exc:
            raise ValueError(f"envelope: the content cannot go in an SBDH: {exc}") from None


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _part_chunks(part: aiohttp.BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(64 * 1024):
        yield chunk


def _json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise problem(400, "invalid-json", f"{where} is not JSON") from None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _read(path: Path) -> bytes:
    return path.read_bytes()


MAILINGS = web.AppKey("mailings", Mailings)


def add_routes(app: web.Application) -> None:
    """The mailing routes of the ``/api/v1`` sub-application (its token check covers them)."""

    def of(request: web.Request) -> Mailings:
        found = request.config_dict.get(MAILINGS)
        if found is None:
            raise problem(422, "invalid-submission", "this access point has no routing settings: no mailings")
        return found

    async def receive(request: web.Request) -> web.Response:
        return await of(request).receive(request)

    async def read(request: web.Request) -> web.Response:
        return await of(request).read(request)

    async def rows(request: web.Request) -> web.Response:
        return await of(request).rows(request)

    app.router.add_post("/mailings", receive, name="submit-mailing")
    app.router.add_get("/mailings/{id}", read)
    app.router.add_get("/mailings/{id}/recipients", rows)
