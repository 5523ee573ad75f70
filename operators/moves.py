"""A holder's mailbox moving from one operator to another: the two operators' sides, over AS4 and FaR.

1. The holder opens a mailbox at the **new** operator while FaR has them at the **old** one (holders.py): the new
   operator asks FaR for the switch (pending), opens the mailbox ``moving-in`` and sends the old operator a signed
   ``SwitchRequest`` (portability.py) on its P-Mode to that operator.
2. The **old** operator verifies the request with the new operator's certificate and finds the same switch
   pending at FaR, from itself to the sender. When it is due it completes the switch at FaR: from that moment FaR
   names the new operator, so the router sends new letters there. Its mailbox becomes ``moving-out``.
3. The old operator exports the holder's letters in batches (at most ``portability.batch_letters`` letters and
   ``batch_size`` bytes each; a larger letter goes alone; the first batch goes even when empty, telling the new
   operator the switch happened): a tar with the signed manifest and every file, streamed to its access point
   and sent over AS4 to the new operator's. One batch is in flight at a time; each is recorded before it is sent
   and sent again (same MessageId: the access point refuses the duplicate) after a crash.
4. The **new** operator streams the tar to disk, verifies the manifest's signature with the old operator's
   certificate, every file's size and SHA-256, every letter's seal and sender signature (as at delivery, at the
   time the letter arrived) and the old operator's signed answer; then stores all of the batch in one transaction
   (a letter it has already — same origin — is not stored twice) and answers with a signed ``ImportReceipt``.
   Anything that does not hold refuses the whole batch (nothing stored) with the reason, in a refusing receipt.
5. Only on a receipt that verifies with the new operator's certificate does the old operator delete the letters
   it lists. Whatever still reaches the old operator's mailbox (``moved``: letters the router sent before the
   switch time, arriving late) goes on in a further batch, so every letter ends at the new operator exactly once.

A switch can be cancelled (the holder closes the mailbox while it is moving in) until the old operator completes
it; the new operator tells the old one with ``SwitchCancelled``. Every state lives in the database (``moves``,
``batches``); a restart picks up where it stopped, and an unacknowledged AS4 message is handled again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from cryptography import x509
from sqlalchemy import Connection, Row, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from operators.deliveries import CheckedDelivery, Refusal, check_delivery, mailbox_key
from operators.far_link import FarRefused, FarUnreachable
from operators.letters import Letter
from operators.mailbox import attachments, batches, insert_mail, letters, mail, mailboxes, moves, write_audit
from operators.portability import (
    ARCHIVE_TYPE,
    SERVICE,
    ImportReceipt,
    Kind,
    Manifest,
    Notice,
    Staged,
    TransferRefused,
    build_manifest,
    build_notice,
    build_receipt,
    claimed_sender,
    kind_of,
    read_archive,
    read_notice,
    read_receipt,
    write_archive,
)
from operators.portability import batches as cut
from operators.receipts import verify_notification
from operators.twoway import TwoWay
from operators.twoway_store import forget as forget_two_way
from operators.twoway_transfer import export_records, restore, unsettled

if TYPE_CHECKING:
    from operators.service import Operator

log = logging.getLogger("operators.moves")


class MoveWaits(RuntimeError):
    """A step that cannot be taken now (FaR or the access point unavailable): the message is handled again."""


SMALL = 4 * 1024 * 1024  # a notice or receipt; anything larger can only be an archive


class Mover:
    """Both sides of mailbox moves for one operator (see the module docstring)."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.settings = operator.settings
        self.store = operator.store
        self.files = operator.files
        self.wake = asyncio.Event()

    @property
    def me(self) -> str:
        """This operator's id (16 + orgnr)."""
        return self.settings.id

    def _peer_certificate(self, operator: str) -> x509.Certificate:
        peer = self.settings.peer(operator)
        if peer is None:
            raise TransferRefused(f"{operator[:64]} is not an operator this one knows (operator.peers)")
        return peer.certificate

    def _full(self, orgnr: str) -> str:
        return orgnr if len(orgnr) == 12 and orgnr.startswith("16") else f"16{orgnr}"

    # ----------------------------------------------------------------------------------------- receiving

    def handles(self, record: dict[str, Any]) -> bool:
        """Whether the received AS4 message is a portability message."""
        service = record.get("service")
        value = service.get("value") if isinstance(service, dict) else service
        return value == SERVICE

    async def received(self, record: dict[str, Any]) -> None:
        """Act on a portability message (safe to repeat: every step is idempotent)."""
        client = self.operator.client
        assert client is not None
        message_id = str(record["message_id"])
        payloads = record.get("payloads") or []
        if len(payloads) != 1:
            log.warning("portability message %s: %d payloads, expected one; ignored", message_id, len(payloads))
            return
        staged = self.files.staging(f"move:{message_id}")
        try:
            part = await client.download_to(message_id, payloads[0], staged, 0)
            path = staged / part.name
            if part.size <= SMALL:
                data = await asyncio.to_thread(path.read_bytes)
                kind = kind_of(data)
                if kind is Kind.SWITCH_REQUEST:
                    await self._switch_requested(data)
                elif kind is Kind.SWITCH_CANCELLED:
                    await self._switch_cancelled(data)
                elif kind is Kind.RECEIPT:
                    await self._receipt(data)
                else:
                    await self._import(path, staged)
            else:
                await self._import(path, staged)
        except TransferRefused as exc:
            log.warning("portability message %s refused: %s", message_id, exc.reason)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        self.wake.set()

    # ------------------------------------------------------------------------------------ new operator

    async def start_incoming(self, switch: dict[str, Any]) -> None:
        """The holder is moving here: record it and ask the old operator (over AS4) to hand the mailbox over; when
        the access point cannot take the request now, the worker sends it (``_ask_again``)."""
        now = self.operator.clock()
        peer = self._full(str(switch["from_operator"]))
        async with self.store.engine.begin() as conn:
            await _upsert_move(conn, str(switch["id"]), str(switch["recipient"]), "to", peer, "requested", now)
        try:
            await self._send_notice(Kind.SWITCH_REQUEST, switch, peer)
        except (MoveWaits, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("switch %s: the request to %s waits for the access point: %s", switch["id"], peer, exc)
            return
        await self._set_move(str(switch["id"]), "requested", {"request": "sent"})

    async def _ask_again(self, move: Any) -> None:
        """A move here whose SwitchRequest the access point never took: send it (the same MessageId, so one that
        was taken after all counts as sent)."""
        switch = {"id": move.switch_id, "from_operator": move.peer, "to_operator": self.me, "recipient": move.recipient}
        await self._send_notice(Kind.SWITCH_REQUEST, switch, move.peer)
        await self._set_move(move.switch_id, "requested", {"request": "sent"})

    async def cancelled_here(self, switch: dict[str, Any]) -> None:
        """The holder cancelled the move before the switch time: record it and tell the old operator."""
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(moves).where(moves.c.switch_id == str(switch["id"])).values(state="cancelled", updated_at=now)
            )
        await self._send_notice(Kind.SWITCH_CANCELLED, switch, self._full(str(switch["from_operator"])))

    async def _send_notice(self, kind: Kind, switch: dict[str, Any], peer: str) -> None:
        notice = Notice(
            kind,
            str(switch["id"]),
            self.me,
            self._full(str(switch["from_operator"])),
            self._full(str(switch["to_operator"])),
            str(switch["recipient"]),
            self.operator.clock(),
        )
        data = build_notice(notice, self.settings.keys)
        await self._send(peer, f"{kind.value.lower()}-{notice.switch_id}@{self.me}", kind, [("notice", data)])

    def _receipt_for(
        self,
        manifest: Manifest,
        accepted: bool,
        *,
        letters: tuple[tuple[str, str, str], ...] = (),
        reason: str | None = None,
    ) -> ImportReceipt:
        """This operator's answer to ``manifest``'s batch, made now: imported (with each letter's outcome) or
        refused (with the reason)."""
        return ImportReceipt(
            manifest.switch_id,
            manifest.seq,
            self.me,
            manifest.from_operator,
            manifest.holder,
            manifest.sha256,
            accepted,
            self.operator.clock(),
            letters,
            reason,
        )

    async def _import(self, path: Path, staged: Path) -> None:
        """A MailboxExport: verified, stored in one transaction, answered with a signed receipt."""
        folder = staged / "letters"
        found: Staged | None = None
        unreadable: TransferRefused | None = None
        try:
            found = await asyncio.to_thread(_read_with, path, folder, self._peer_certificate)
            manifest = found.manifest
        except TransferRefused as exc:
            log.warning("a transfer archive was refused: %s", exc.reason)
            if exc.manifest is None:
                return  # not even its sender is known to be genuine: nothing to answer
            manifest, unreadable = exc.manifest, exc  # signed, but a file or member is wrong: its sender is told
        async with self.store.engine.connect() as conn:
            move = (await conn.execute(select(moves).where(moves.c.switch_id == manifest.switch_id))).first()
            done = (
                await conn.execute(select(batches).where(_batch_key(manifest.switch_id, manifest.seq, "import")))
            ).first()
        if done is not None:
            await self._answer(manifest, base64.b64decode(json.loads(done.detail)["receipt"]))
            return
        try:
            if (
                move is None
                or move.role != "to"
                or move.peer != manifest.from_operator
                or move.recipient != manifest.holder
            ):
                raise TransferRefused(
                    f"no move of {manifest.holder} from {manifest.from_operator} here (switch {manifest.switch_id})"
                )
            if manifest.to_operator != self.me:
                raise TransferRefused(f"the transfer is addressed to {manifest.to_operator}, not to {self.me}")
            if unreadable is not None or found is None:
                raise unreadable or TransferRefused("the archive could not be read")
            checked = await asyncio.to_thread(self._verify_letters, found)
            outcomes = await self.import_letters(found, checked, imported_from=manifest.from_operator)
            receipt = self._receipt_for(manifest, True, letters=tuple(outcomes))
        except TransferRefused as exc:
            log.warning("transfer %s/%d refused: %s", manifest.switch_id, manifest.seq, exc.reason)
            receipt = self._receipt_for(manifest, False, reason=exc.reason)
        data = build_receipt(receipt, self.settings.keys)
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            detail = {
                "receipt": base64.b64encode(data).decode(),
                "accepted": receipt.accepted,
                "reason": receipt.reason,
                "letters": len(receipt.letters),
            }
            with contextlib.suppress(IntegrityError):
                async with conn.begin_nested():
                    await conn.execute(
                        insert(batches).values(
                            switch_id=manifest.switch_id,
                            seq=manifest.seq,
                            side="import",
                            letters=json.dumps([u for u, _o, _s in receipt.letters]),
                            message_id="",
                            state="imported" if receipt.accepted else "refused",
                            manifest_sha256=manifest.sha256,
                            detail=json.dumps(detail),
                            updated_at=now,
                        )
                    )
            await write_audit(
                conn,
                f"operator:{manifest.from_operator}",
                "moved-in" if receipt.accepted else "refused",
                manifest.holder,
                {
                    "switch": manifest.switch_id,
                    "batch": manifest.seq,
                    "letters": len(receipt.letters),
                    "reason": receipt.reason,
                },
                now=now,
            )
            if receipt.accepted:
                await conn.execute(
                    update(moves)
                    .where(moves.c.switch_id == manifest.switch_id)
                    .values(state="switched", updated_at=now)
                )
                await conn.execute(
                    update(mailboxes)
                    .where(mailboxes.c.recipient == manifest.holder, mailboxes.c.state == "moving-in")
                    .values(state="active")
                )
        await self._answer(manifest, data)

    async def _answer(self, manifest: Manifest, receipt: bytes) -> None:
        await self._send(
            manifest.from_operator,
            f"receipt-{manifest.switch_id}-{manifest.seq}@{self.me}",
            Kind.RECEIPT,
            [("receipt", receipt)],
        )

    def _verify_letters(self, found: Staged) -> list[CheckedDelivery | None]:
        """Every letter's envelope checked as at its delivery (seal, sender's signature, trust at its arrival) and
        its signed answer with the answering operator's certificate; TransferRefused naming the first that fails."""
        manifest = found.manifest
        checked: list[CheckedDelivery | None] = []
        for letter in manifest.letters:
            folder = found.letter_folder(letter.uid)
            envelope = letter.part("envelope")
            if envelope is None:
                raise TransferRefused(f"letter {letter.uid} has no envelope")
            try:
                delivery = check_delivery(
                    (folder / envelope.name).read_bytes(), self.operator.trust, at=letter.received_at
                )
            except Refusal as refusal:
                raise TransferRefused(f"letter {letter.uid} ({letter.origin}) does not verify: {refusal}") from None
            if mailbox_key(delivery.recipient) != manifest.holder:
                raise TransferRefused(
                    f"letter {letter.uid} is addressed to {delivery.recipient}, not {manifest.holder}"
                )
            for answer in (p for p in letter.parts if p.role == "answer" and p.content_id.startswith("notification@")):
                self._verify_answer(letter, folder / answer.name)
            checked.append(delivery)
        return checked

    def _verify_answer(self, letter: Letter, path: Path) -> None:
        signer = letter.answered_by or ""
        certificate = self.settings.keys.certificate if signer == self.me else self._peer_certificate(signer)
        try:
            notification = verify_notification(path.read_bytes(), certificate)
        except (ValueError, OSError) as exc:
            raise TransferRefused(f"letter {letter.uid}: the answer of {signer} does not verify: {exc}") from None
        sent = sorted((p.content_id, p.sha256) for p in letter.parts if p.role != "answer")
        if notification.message_id != letter.origin or sorted(notification.payloads) != sent:
            raise TransferRefused(f"letter {letter.uid}: the signed answer is not about this letter's payloads")

    async def import_letters(
        self, found: Staged, checked: list[CheckedDelivery | None], *, imported_from: str
    ) -> list[tuple[str, str, str]]:
        """Store a verified batch in one transaction (files moved into place first, removed if it fails); each
        letter's outcome: ``imported`` or ``present`` (this mailbox has it already)."""
        manifest = found.manifest
        now = self.operator.clock()
        outcomes: list[tuple[str, str, str]] = []
        placed: list[str] = []
        try:
            async with self.store.engine.begin() as conn:
                exists = await conn.scalar(
                    select(mailboxes.c.recipient).where(mailboxes.c.recipient == manifest.holder)
                )
                if exists is None:
                    await conn.execute(
                        insert(mailboxes).values(recipient=manifest.holder, created_at=now, state="active")
                    )
                for letter, delivery in zip(manifest.letters, checked, strict=True):
                    present = await conn.scalar(
                        select(letters.c.uid).where(
                            letters.c.recipient == manifest.holder, letters.c.origin == letter.origin
                        )
                    )
                    if present is not None:
                        outcomes.append((letter.uid, letter.origin, "present"))
                        continue
                    await asyncio.to_thread(self.files.place, found.letter_folder(letter.uid), letter.uid)
                    placed.append(letter.uid)
                    row = Letter(
                        letter.uid,
                        manifest.holder,
                        letter.origin,
                        letter.network,
                        letter.business_id,
                        letter.sender,
                        letter.received_at,
                        letter.parts,
                        letter.metadata,
                        letter.answered_by,
                        imported_from,
                    ).row()
                    await conn.execute(insert(letters).values(**row, imported_at=now))
                    record = manifest.two_way.get(letter.uid)
                    if delivery is not None:
                        # bare case events go to the timeline only, as at delivery
                        ids = await conn.run_sync(
                            insert_mail, letter.origin, TwoWay.for_mailbox(delivery), received_at=letter.received_at
                        )
                        if record is not None:
                            await restore(conn, letter, record, delivery, ids)
                    elif record is not None:
                        raise TransferRefused(f"letter {letter.uid}: a two-way record without a checked envelope")
                    outcomes.append((letter.uid, letter.origin, "imported"))
        except BaseException:
            self.files.remove(placed)
            raise
        return outcomes

    # ------------------------------------------------------------------------------------ old operator

    async def _switch_requested(self, data: bytes) -> None:
        """The new operator asks for a holder: verified, checked against FaR, recorded; the worker completes it."""
        notice = read_notice(data, Kind.SWITCH_REQUEST, self._peer_certificate(claimed_sender(data)))
        if notice.from_operator != self.me or notice.to_operator != notice.sender:
            raise TransferRefused(f"switch {notice.switch_id} is not from this operator to its sender")
        far = self.operator.desk.far
        if far is None:
            raise TransferRefused("this operator is not connected to FaR")
        try:
            switch = await far.switch(notice.holder, notice.switch_id)
        except FarUnreachable as exc:
            raise MoveWaits(f"FaR cannot be reached; the request waits: {exc}") from None
        if (
            switch is None
            or self._full(str(switch["from_operator"])) != self.me
            or self._full(str(switch["to_operator"])) != notice.sender
        ):
            raise TransferRefused(
                f"FaR has no switch {notice.switch_id} of {notice.holder} from here to {notice.sender}"
            )
        now = self.operator.clock()
        state = {"pending": "requested", "switched": "switched", "cancelled": "cancelled"}[str(switch["state"])]
        async with self.store.engine.begin() as conn:
            await _upsert_move(conn, notice.switch_id, notice.holder, "from", notice.sender, state, now)
            await write_audit(
                conn,
                f"operator:{notice.sender}",
                "switch-requested",
                notice.holder,
                {"switch": notice.switch_id, "far_state": switch["state"]},
                now=now,
            )

    async def _switch_cancelled(self, data: bytes) -> None:
        notice = read_notice(data, Kind.SWITCH_CANCELLED, self._peer_certificate(claimed_sender(data)))
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(moves)
                .where(moves.c.switch_id == notice.switch_id, moves.c.state == "requested")
                .values(state="cancelled", updated_at=now)
            )
            await write_audit(
                conn,
                f"operator:{notice.sender}",
                "switch-cancelled",
                notice.holder,
                {"switch": notice.switch_id},
                now=now,
            )

    async def _receipt(self, data: bytes) -> None:
        """The new operator's receipt for a batch: the letters it lists are deleted here (only now)."""
        receipt = read_receipt(data, self._peer_certificate(claimed_sender(data)))
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            batch = (
                await conn.execute(select(batches).where(_batch_key(receipt.switch_id, receipt.seq, "export")))
            ).first()
            move = (await conn.execute(select(moves).where(moves.c.switch_id == receipt.switch_id))).first()
            if batch is None or move is None or move.peer != receipt.sender:
                raise TransferRefused(
                    f"no batch {receipt.seq} of switch {receipt.switch_id} was sent to {receipt.sender}"
                )
            if batch.state in ("confirmed", "refused"):
                return
            if batch.state == "prepared":
                # Sent, but not yet recorded as sent (a crash between the two, and the batch is being sent again):
                # its manifest's digest is not known here yet, so the receipt waits (not acknowledged, handled again).
                raise MoveWaits(f"batch {receipt.seq} of switch {receipt.switch_id} is being sent; its receipt waits")
            if batch.manifest_sha256 != receipt.manifest_sha256:
                raise TransferRefused(f"the receipt for batch {receipt.seq} names another manifest")
            if not receipt.accepted:
                await conn.execute(
                    update(batches)
                    .where(_batch(batch))
                    .values(state="refused", detail=json.dumps({"reason": receipt.reason}), updated_at=now)
                )
                await conn.execute(
                    update(moves)
                    .where(moves.c.switch_id == receipt.switch_id)
                    .values(state="failed", detail=json.dumps({"reason": receipt.reason}), updated_at=now)
                )
                await write_audit(
                    conn,
                    f"operator:{receipt.sender}",
                    "move-refused",
                    move.recipient,
                    {"batch": receipt.seq, "reason": receipt.reason},
                    now=now,
                )
                return
            sent = set(json.loads(batch.letters))
            confirmed = {uid: origin for uid, origin, _outcome in receipt.letters if uid in sent}
            await _delete_letters(conn, move.recipient, confirmed)
            await conn.execute(update(batches).where(_batch(batch)).values(state="confirmed", updated_at=now))
            await write_audit(
                conn,
                f"operator:{receipt.sender}",
                "moved-out",
                move.recipient,
                {"switch": receipt.switch_id, "batch": receipt.seq, "letters": len(confirmed)},
                now=now,
            )
        self.files.remove(confirmed)

    # ---------------------------------------------------------------------------------------- the worker

    async def run(self) -> None:
        """Every ``portability.retry`` (or when woken): complete due switches, send the next batch."""
        while True:
            try:
                await self.step()
            except (FarUnreachable, TransferRefused, MoveWaits, OSError) as exc:
                log.warning("moves: %s", exc)
            except Exception:
                log.exception("moves: unexpected failure; trying again later")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.portability.retry.total_seconds())

    async def step(self) -> None:
        """One round over the moves from here."""

        def unfinished(conn: Connection) -> tuple[Sequence[Row[Any]], Sequence[Row[Any]]]:
            # One thread hop for both (it runs every ``retry``, mostly finding nothing).
            mine = moves.c.role == "from", moves.c.state.in_(("requested", "switched", "done"))
            theirs = moves.c.role == "to", moves.c.state == "requested", moves.c.detail.is_(None)
            return conn.execute(select(moves).where(*mine)).all(), conn.execute(select(moves).where(*theirs)).all()

        rows, unasked = await self.store.database.run(unfinished)
        for move in unasked:
            await self._ask_again(move)
        for move in rows:
            if move.state == "requested":
                await self._complete(move)
            else:
                await self._export(move)

    async def _complete(self, move: Any) -> None:
        far = self.operator.desk.far
        assert far is not None
        try:
            await far.complete_switch(move.recipient)
        except FarRefused as exc:
            found = await far.switch(move.recipient, move.switch_id)
            state = None if found is None else found.get("state")
            if state == "cancelled":
                await self._set_move(move.switch_id, "cancelled", {"reason": exc.detail})
                return
            if state != "switched":
                log.info("switch %s of %s not completed yet: %s", move.switch_id, move.recipient, exc.detail)
                return
        now = self.operator.clock()
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(moves).where(moves.c.switch_id == move.switch_id).values(state="switched", updated_at=now)
            )
            await conn.execute(
                update(mailboxes).where(mailboxes.c.recipient == move.recipient).values(state="moving-out")
            )
            await write_audit(
                conn, "system", "switched", move.recipient, {"switch": move.switch_id, "to": move.peer}, now=now
            )
        self.wake.set()

    async def _set_move(self, switch_id: str, state: str, detail: dict[str, Any]) -> None:
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(moves)
                .where(moves.c.switch_id == switch_id)
                .values(state=state, detail=json.dumps(detail), updated_at=self.operator.clock())
            )

    async def _export(self, move: Any) -> None:
        """Send the batch in flight again if it was never sent, or the next one; mark the move done when none
        is left (it stays watched: a late letter goes on)."""
        async with self.store.engine.connect() as conn:
            sent = (
                await conn.execute(
                    select(batches)
                    .where(batches.c.switch_id == move.switch_id, batches.c.side == "export")
                    .order_by(batches.c.seq)
                )
            ).all()
        open_ = [b for b in sent if b.state in ("prepared", "sent")]
        if any(b.state == "refused" for b in sent):
            return
        if open_:
            batch = open_[0]
            if batch.state == "prepared":
                await self._submit(move, batch.seq, json.loads(batch.letters), batch.updated_at)
            return
        async with self.store.engine.begin() as conn:  # frozen before anything leaves, however the switch was learnt
            await conn.execute(
                update(mailboxes)
                .where(mailboxes.c.recipient == move.recipient, mailboxes.c.state.in_(("active", "pending")))
                .values(state="moving-out")
            )
        await self.operator.twoway.flush()  # what the holder did here goes out first (see exportable)
        left, ready = await self.exportable(move.recipient, self.settings.portability.batch_letters)
        if sent and left and not ready:
            log.info("move %s: its letters left wait for a payment or the outbox", move.switch_id)
            return
        if not left and sent:
            if move.state != "done":
                await self._set_move(move.switch_id, "done", {"batches": len(sent)})
                async with self.store.engine.begin() as conn:
                    await conn.execute(
                        update(mailboxes).where(mailboxes.c.recipient == move.recipient).values(state="moved")
                    )
            return
        chosen = next(
            cut(
                ready,
                max_letters=self.settings.portability.batch_letters,
                max_bytes=self.settings.portability.batch_size,
            ),
            [],
        )
        seq = 1 + max((b.seq for b in sent), default=0)
        now = self.operator.clock()
        message_id = f"move-{move.switch_id}-{seq}@{self.me}"
        async with self.store.engine.begin() as conn:
            await conn.execute(
                insert(batches).values(
                    switch_id=move.switch_id,
                    seq=seq,
                    side="export",
                    letters=json.dumps([x.uid for x in chosen]),
                    message_id=message_id,
                    state="prepared",
                    updated_at=now,
                )
            )
            if move.state == "done":
                await conn.execute(update(moves).where(moves.c.switch_id == move.switch_id).values(state="switched"))
        await self._submit(move, seq, [x.uid for x in chosen], now)

    async def exportable(self, holder: str, count: int) -> tuple[list[Letter], list[Letter]]:
        """``holder``'s oldest letters here (empty: none is left), and the first ``count`` of them that may go now:
        settled, their two-way record final (no payment pending, nothing waiting in the outbox;
        ``twoway_transfer.unsettled``). The rest wait here until the payment completes and the access point took
        what the holder did. Only a batch's worth is read, whatever the mailbox's size (memory per batch)."""
        async with self.store.engine.connect() as conn:
            waiting = await unsettled(conn, holder)
        left = await self.store.letters_of(holder, limit=count + len(waiting))
        return left, [letter for letter in left if letter.origin not in waiting][:count]

    async def _submit(self, move: Any, seq: int, uids: list[str], created: datetime) -> None:
        """Build the batch's archive (signed manifest + files) and send it; a duplicate (sent before a crash)
        counts as sent."""
        chosen = await self.store.letters_of(move.recipient, uids=uids)
        if len(chosen) != len(uids):
            log.warning(
                "batch %d of %s: %d of its letters are gone; sending the rest",
                seq,
                move.switch_id,
                len(uids) - len(chosen),
            )
        async with self.store.engine.connect() as conn:
            records = await export_records(conn, move.recipient, chosen)
        manifest = Manifest(
            move.switch_id, seq, self.me, move.peer, move.recipient, created, tuple(chosen), two_way=records
        )
        data = build_manifest(manifest, self.settings.keys)
        path = self.files.transfers / f"{move.switch_id}-{seq}.tar"

        def write() -> None:
            with path.open("wb") as out:
                write_archive(out, data, manifest, self.files.folder)

        await asyncio.to_thread(write)
        try:
            status = await self._send(
                move.peer,
                f"move-{move.switch_id}-{seq}@{self.me}",
                Kind.TRANSFER,
                files=[(f"mailbox-{seq}@{self.me}", ARCHIVE_TYPE, path)],
            )
        finally:
            path.unlink(missing_ok=True)
        async with self.store.engine.begin() as conn:
            await conn.execute(
                update(batches)
                .where(_batch_key(move.switch_id, seq, "export"))
                .values(
                    state="sent",
                    manifest_sha256=hashlib.sha256(data).hexdigest(),
                    detail=json.dumps({"status": status, "letters": len(chosen)}),
                    updated_at=self.operator.clock(),
                )
            )

    async def _send(
        self,
        peer: str,
        message_id: str,
        kind: Kind,
        payloads: list[tuple[str, bytes]] | None = None,
        *,
        files: list[tuple[str, str, Path]] | None = None,
    ) -> int:
        """One portability message to ``peer`` on its P-Mode; the access point's status (202, or 409: sent)."""
        client = self.operator.client
        assert client is not None
        found = self.settings.peer(peer)
        if found is None:
            raise TransferRefused(f"{peer} is not in operator.peers: no P-Mode to reach it")
        document = {"pmode": found.pmode, "message_id": message_id, "properties": {"portabilityMessage": kind.value}}
        if files:
            status, answer = await client.submit_files(document, files)
        else:
            status, answer = await client.submit(
                {
                    **document,
                    "payloads": [
                        {
                            "content_id": f"{name}@{self.me}",
                            "mime_type": "application/xml",
                            "data": base64.b64encode(data).decode(),
                        }
                        for name, data in payloads or []
                    ],
                }
            )
        if status not in (202, 409):
            raise MoveWaits(f"{kind.value} {message_id}: the access point answered HTTP {status} {answer}")
        return status

    # ------------------------------------------------------------------------------------------- status

    async def describe(self, holder: str) -> dict[str, Any] | None:
        """The latest move of a holder's mailbox with its batches (None: none)."""
        async with self.store.engine.connect() as conn:
            move = (
                await conn.execute(
                    select(moves).where(moves.c.recipient == holder).order_by(moves.c.created_at.desc()).limit(1)
                )
            ).first()
            if move is None:
                return None
            rows = (
                await conn.execute(
                    select(batches).where(batches.c.switch_id == move.switch_id).order_by(batches.c.side, batches.c.seq)
                )
            ).all()
        return {
            "switch": move.switch_id,
            "role": move.role,
            "peer": move.peer,
            "state": move.state,
            "detail": None if move.detail is None else json.loads(move.detail),
            "batches": [
                {"seq": b.seq, "side": b.side, "state": b.state, "letters": len(json.loads(b.letters))} for b in rows
            ],
        }


def _read_with(path: Path, folder: Path, certificate_of: Any) -> Staged:
    """read_archive, with the signer's certificate chosen by the manifest's (as yet unverified) From."""
    with path.open("rb") as source:
        return read_archive(source, folder, certificate_of)


def _batch_key(switch_id: str, seq: int, side: str) -> Any:
    """The condition that picks one batch: its switch, number and side (``export`` or ``import``)."""
    return and_(batches.c.switch_id == switch_id, batches.c.seq == seq, batches.c.side == side)


def _batch(row: Any) -> Any:
    return _batch_key(row.switch_id, row.seq, row.side)


async def _upsert_move(
    conn: Any, switch_id: str, recipient: str, role: str, peer: str, state: str, now: datetime
) -> None:
    found = await conn.scalar(select(moves.c.state).where(moves.c.switch_id == switch_id))
    if found is None:
        await conn.execute(
            insert(moves).values(
                switch_id=switch_id,
                recipient=recipient,
                role=role,
                peer=peer,
                state=state,
                created_at=now,
                updated_at=now,
            )
        )
    elif found == "requested" and state != "requested":
        await conn.execute(update(moves).where(moves.c.switch_id == switch_id).values(state=state, updated_at=now))


async def _delete_letters(conn: Any, recipient: str, confirmed: dict[str, str]) -> None:
    """Delete the letters (their mail rows, attachments and two-way records) another operator has confirmed it
    holds; what the two-way outbox still has to send about them is left to be sent."""
    if not confirmed:
        return
    origins = list(confirmed.values())
    ids = select(mail.c.id).where(mail.c.recipient == recipient, mail.c.as4_message_id.in_(origins))
    await forget_two_way(conn, recipient, origins)
    await conn.execute(delete(attachments).where(attachments.c.mail_id.in_(ids)))
    await conn.execute(delete(mail).where(mail.c.recipient == recipient, mail.c.as4_message_id.in_(origins)))
    await conn.execute(delete(letters).where(letters.c.uid.in_(list(confirmed))))


# ------------------------------------------------------------------------------- operators' own migrations


async def export_mailbox(operator: Operator, holder: str, to: str, out: Path) -> dict[str, Any]:
    """``accesspoint operator export``: every letter of ``holder`` in one signed archive for operator ``to``
    (nothing is deleted here: the operator's own migration decides when)."""
    found = await operator.store.letters_of(holder)
    if not found and await operator.store.state(holder) is None:
        raise TransferRefused(f"{holder} has no mailbox here")
    switch_id = f"export-{hashlib.sha256(f'{holder}{operator.clock().isoformat()}'.encode()).hexdigest()[:24]}"
    async with operator.store.engine.connect() as conn:
        records = await export_records(conn, holder, found)
    manifest = Manifest(switch_id, 1, operator.settings.id, to, holder, operator.clock(), tuple(found), two_way=records)
    data = build_manifest(manifest, operator.settings.keys)

    def write() -> None:
        with out.open("wb") as sink:
            write_archive(sink, data, manifest, operator.files.folder)

    await asyncio.to_thread(write)
    size = sum(x.size for x in found)
    return {
        "holder": holder,
        "letters": len(found),
        "bytes": size,
        "archive": str(out),
        "switch": switch_id,
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
    }


async def import_mailbox(operator: Operator, path: Path, certificate: x509.Certificate | None = None) -> dict[str, Any]:
    """``accesspoint operator import``: an archive verified (signature, every digest, every letter) and stored in
    one transaction, or refused whole (TransferRefused) with nothing stored."""
    mover = Mover(operator)

    def signer(claimed: str) -> x509.Certificate:
        return certificate if certificate is not None else mover._peer_certificate(claimed)

    staged = operator.files.staging(f"import:{path}")
    try:
        found = await asyncio.to_thread(_read_with, path, staged / "letters", signer)
        if found.manifest.to_operator not in (operator.settings.id, "any"):
            raise TransferRefused(f"the archive is for {found.manifest.to_operator}, not {operator.settings.id}")
        checked = await asyncio.to_thread(mover._verify_letters, found)
        outcomes = await mover.import_letters(found, checked, imported_from=found.manifest.from_operator)
        await operator.store.audit(
            f"import:{path.name}",
            "imported",
            found.manifest.holder,
            {"from": found.manifest.from_operator, "letters": len(outcomes)},
            now=operator.clock(),
        )
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    imported = sum(1 for _u, _o, outcome in outcomes if outcome == "imported")
    return {
        "holder": found.manifest.holder,
        "from": found.manifest.from_operator,
        "letters": len(outcomes),
        "imported": imported,
        "present": len(outcomes) - imported,
    }
