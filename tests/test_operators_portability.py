"""A mailbox moved by file between two operators (``operator export`` / ``import``): every letter arrives exactly
as it left, each verified again (signature of the archive, every digest, every seal and signed answer), a second
import stores nothing twice, and an archive that does not verify is refused whole."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from lxml import etree
from sqlalchemy import insert, select, update

from accesspoint.envelopes._common import serialize
from accesspoint.envelopes.letter import CaseEvent, LetterTerms, ReplyTerms, with_terms
from accesspoint.envelopes.minameddelanden import ReceiptRequest, ReplyOption
from accesspoint.envelopes.signature import sign_enveloped
from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.tokens import BearerToken, Scope
from accesspoint.testing import pki, services
from accesspoint.testing.mailboxes import deliver_letter, random_file, sbd_letter
from operators.letters import file_digest
from operators.mailbox import batches, mailboxes, moves
from operators.moves import Mover, MoveWaits, _delete_letters, export_mailbox, import_mailbox
from operators.portability import (
    MANIFEST,
    NS,
    Kind,
    Manifest,
    TransferRefused,
    build_manifest,
    read_manifest,
    read_notice,
    read_receipt,
)
from operators.service import AccessPointClient, Operator
from operators.settings import AccessPointLink, OperatorSettings, Peer
from operators.twoway_store import MailboxMoving, outbox
from tests.test_envelopes_payment import BANKGIRO
from tests.test_far_support import NOW
from tests.test_operators_support import INTERMEDIARY, OPERATOR, SENDERS_CA, sealed, secure_delivery

HOLDER = "197001011234"
HOLDER_TOKEN = "holder-mailbox-token-0123456789"
A_ID, B_ID = "165568402266", "165590123456"
B_KEYS = pki.issue(pki.make_ca("Operators B CA"), "Brevlådan Två AB")


@dataclass
class Pair:
    """Two offline operators that know each other."""

    a: Operator
    b: Operator


def _operator(
    folder: Path,
    operator_id: str,
    keys: KeyPair,
    peer: Peer,
    clock: Callable[[], datetime] = lambda: NOW,
    port: int = 8480,
) -> Operator:
    settings = OperatorSettings(
        id=operator_id,
        name=operator_id,
        keys=keys,
        access_point=AccessPointLink(
            "http://127.0.0.1:9", "access-point-token-0123", "webhook-secret-0123456", poll_interval=timedelta(0)
        ),
        database=f"sqlite+aiosqlite:///{folder / 'mailbox.db'}",
        storage=folder / "mail",
        mailboxes=(HOLDER,),
        intermediaries=(INTERMEDIARY.certificate,),
        sender_anchors=(SENDERS_CA.certificate,),
        peers=(peer,),
        port=port,
        tokens=(BearerToken("holder", HOLDER_TOKEN, frozenset({Scope("read", "recipient", HOLDER)})),),
    )
    return Operator(settings, clock=clock)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    """Operator A with three letters (a sealed Mina meddelanden delivery with its signed answer, an SBD, an SBD
    with a 3 MB attachment outside the envelope), operator B empty."""
    a = _operator(tmp_path / "a", A_ID, OPERATOR, Peer(B_ID, "a-to-b", B_KEYS.certificate))
    b = _operator(tmp_path / "b", B_ID, B_KEYS, Peer(A_ID, "b-to-a", OPERATOR.certificate))
    for operator in (a, b):
        await operator.store.create(operator.settings.mailboxes, now=NOW)
    await deliver_letter(a, "mm-1@router", [("delivery@x", "application/xml", sealed(secure_delivery(HOLDER)))])
    await deliver_letter(a, "sbd-1@router", [("letter@x", "application/xml", sbd_letter(HOLDER, "Hej"))])
    big = tmp_path / "big.bin"
    random_file(big, 3 * 1024 * 1024)
    letter = ("letter@x", "application/xml", sbd_letter(HOLDER, "Bilaga"))
    await deliver_letter(a, "sbd-2@router", [letter, ("attachment@x", "application/pdf", big)], answer=False)
    yield Pair(a, b)
    for operator in (a, b):
        await operator.store.engine.dispose()


async def _digests(operator: Operator) -> dict[str, list[tuple[str, str, int]]]:
    return {
        letter.origin: sorted((p.name, p.sha256, p.size) for p in letter.parts)
        for letter in await operator.store.letters_of(HOLDER)
    }


async def test_export_import_keeps_every_letter_exactly_and_once(pair: Pair, tmp_path: Path) -> None:
    """Every letter and file arrives with equal digests, the mail is readable at B, a second import adds nothing."""
    archive = tmp_path / "move.tar"
    exported = await export_mailbox(pair.a, HOLDER, B_ID, archive)
    assert exported["letters"] == 3
    result = await import_mailbox(pair.b, archive)
    assert (result["imported"], result["present"]) == (3, 0)
    assert await _digests(pair.b) == await _digests(pair.a)
    for letter in await pair.b.store.letters_of(HOLDER):
        for part in letter.parts:
            assert file_digest(pair.b.files.path(letter.uid, part.name)) == (part.size, part.sha256)
    assert len(await pair.b.store.list(HOLDER)) == len(await pair.a.store.list(HOLDER)) == 3
    again = await import_mailbox(pair.b, archive)
    assert (again["imported"], again["present"]) == (0, 3)
    assert len(await pair.b.store.list(HOLDER)) == 3


def _tamper(archive: Path, member_suffix: str) -> Path:
    """A copy of the archive with one byte of the first member ending in ``member_suffix`` changed."""
    out = archive.with_name("tampered.tar")
    done = False
    with tarfile.open(archive) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            handle = source.extractfile(member)
            assert handle is not None
            data = handle.read()
            if not done and member.name.endswith(member_suffix) and member.name != "manifest.xml":
                data = data[:100] + bytes([data[100] ^ 1]) + data[101:]
                done = True
            sink.addfile(member, io.BytesIO(data))
    assert done
    return out


async def test_an_archive_whose_digests_do_not_match_is_refused_whole(pair: Pair, tmp_path: Path) -> None:
    """One changed byte in one file: refused naming the file, and B keeps no letter, mail or file of it."""
    archive = tmp_path / "move.tar"
    await export_mailbox(pair.a, HOLDER, B_ID, archive)
    bad = _tamper(archive, "part-1")
    with pytest.raises(TransferRefused, match="digest does not match"):
        await import_mailbox(pair.b, bad)
    assert await pair.b.store.letters_of(HOLDER) == []
    assert await pair.b.store.list(HOLDER) == []
    assert list(pair.b.files.letters.iterdir()) == [] and list(pair.b.files.incoming.iterdir()) == []


async def test_an_archive_signed_by_someone_else_is_refused(pair: Pair, tmp_path: Path) -> None:
    """The manifest must verify with the exporting operator's certificate (here: another one given as trust)."""
    archive = tmp_path / "move.tar"
    await export_mailbox(pair.a, HOLDER, B_ID, archive)
    stranger = pki.issue(pki.make_ca("Stranger"), "Stranger")
    with pytest.raises(TransferRefused, match="signature"):
        await import_mailbox(pair.b, archive, stranger.certificate)
    assert await pair.b.store.letters_of(HOLDER) == []


async def test_export_of_an_unknown_mailbox_is_refused(pair: Pair, tmp_path: Path) -> None:
    """Exporting a holder without a mailbox says so and writes nothing."""
    target = tmp_path / "none.tar"
    with pytest.raises(TransferRefused, match="no mailbox"):
        await export_mailbox(pair.a, "198001011234", B_ID, target)
    assert not target.exists()


async def test_a_letter_that_no_longer_verifies_refuses_the_batch(pair: Pair, tmp_path: Path) -> None:
    """B re-checks each seal with its own trust: without the intermediary among B's, the sealed letter is refused."""
    archive = tmp_path / "move.tar"
    await export_mailbox(pair.a, HOLDER, B_ID, archive)
    b: Any = pair.b
    b.trust = type(b.trust)(intermediaries=(), sender_anchors=b.trust.sender_anchors)
    with pytest.raises(TransferRefused, match="does not verify"):
        await import_mailbox(pair.b, archive)
    assert await pair.b.store.letters_of(HOLDER) == []


# ------------------------------------------------------------------------------------- two-way terms


def _two_way_letter(terms: LetterTerms, *, body: bytes | None = None) -> bytes:
    """A sealed Mina meddelanden letter to HOLDER with ``terms`` (``body``: a text body, b"" for a bare event)."""
    delivery = secure_delivery(HOLDER, receipt=False)
    message = dataclasses.replace(with_terms(delivery.messages[0], terms), attachments=())
    if body is not None:
        message = dataclasses.replace(message, body=body, content_type="text/plain")
    return sealed(dataclasses.replace(delivery, messages=(message,), reference=terms.case_reference))


@dataclass
class TwoWayMove:
    """Operator A with two-way letters (some acted on), operator B on a clock the test moves, and the archive."""

    a: Operator
    b: Operator
    archive: Path
    clock: list[datetime]
    mail_ids: dict[str, int]  # at A, by origin


TERMS = {
    "reply@router": LetterTerms(reply=ReplyTerms(ReplyOption.REQUESTED, NOW + timedelta(days=3)), case_reference="D1"),
    "silent@router": LetterTerms(reply=ReplyTerms(ReplyOption.NOT_ALLOWED), receipt=ReceiptRequest.SIMPLE),
    "paid@router": LetterTerms(invoice=True, payment=dataclasses.replace(BANKGIRO, due_date=NOW.date())),
    "unpaid@router": LetterTerms(invoice=True, payment=dataclasses.replace(BANKGIRO, due_date=NOW.date())),
    "served@router": LetterTerms(delgivning_deadline=NOW + timedelta(days=7)),
    "event@router": LetterTerms(case_event=CaseEvent("2026/7", "ansökan mottagen", NOW)),
}


@pytest.fixture
async def two_way_move(tmp_path: Path) -> AsyncIterator[TwoWayMove]:
    """At A: a letter answered once and opened, one that takes no answer, an invoice paid and one not, a served
    letter acknowledged, a bare case event; exported for B."""
    clock = [NOW]
    a = _operator(tmp_path / "a", A_ID, OPERATOR, Peer(B_ID, "a-to-b", B_KEYS.certificate))
    b = _operator(tmp_path / "b", B_ID, B_KEYS, Peer(A_ID, "b-to-a", OPERATOR.certificate), lambda: clock[0],
                  services.free_port())  # fmt: skip
    for operator in (a, b):
        await operator.store.create(operator.settings.mailboxes, now=NOW)
    for origin, terms in TERMS.items():
        body = b"" if origin == "event@router" else None
        await deliver_letter(a, origin, [("delivery@x", "application/xml", _two_way_letter(terms, body=body))])
    ids = {m.as4_message_id: m.id for m in await a.store.list(HOLDER)}
    store = a.twoway.store
    reply = {"reply_id": "reply-at-a", "mail_id": ids["reply@router"], "recipient": HOLDER,
             "message_id": "two-way-reply@a", "actor": "holder", "created_at": NOW}  # fmt: skip
    await store.reply(reply, {"message_id": "two-way-reply@a"}, at=NOW)
    assert await store.mark_opened(ids["reply@router"], NOW)
    claim = {"mail_id": ids["paid@router"], "payment_id": "paid-at-a", "recipient": HOLDER, "payer": "holder",
             "amount": "100.00", "currency": "SEK"}  # fmt: skip
    assert await store.reserve_payment(claim)
    paid = {"provider": "reference", "provider_reference": "ref-1", "paid_at": NOW, "message_id": "pay@a"}
    await store.paid(ids["paid@router"], paid, "pay@a", {"message_id": "pay@a"})
    assert await store.serve(ids["served@router"], NOW, "kvitto@a", {"message_id": "kvitto@a"})
    archive = tmp_path / "move.tar"
    await export_mailbox(a, HOLDER, B_ID, archive)
    yield TwoWayMove(a, b, archive, clock, ids)
    for operator in (a, b):
        await operator.store.engine.dispose()


def _with_manifest(archive: Path, manifest: bytes) -> Path:
    """A copy of the archive with ``manifest`` in place of its manifest."""
    out = archive.with_name("changed.tar")
    with tarfile.open(archive) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            handle = source.extractfile(member)
            assert handle is not None
            data = handle.read()
            if member.name == MANIFEST:
                data, member.size = manifest, len(manifest)
            sink.addfile(member, io.BytesIO(data))
    return out


def _manifest(archive: Path) -> bytes:
    with tarfile.open(archive) as source:
        handle = source.extractfile(MANIFEST)
        assert handle is not None
        return handle.read()


async def test_two_way_terms_and_what_the_holder_did_move_with_the_mailbox(two_way_move: TwoWayMove) -> None:
    """At B the holder still answers the letter that takes answers (until its deadline) and not the one that takes
    none, the answer and opening made at A are there, the invoice paid at A is not paid again and the unpaid one is
    paid once, the served letter stays served, and the case event is on the timeline."""
    move = two_way_move
    result = await import_mailbox(move.b, move.archive)
    assert result["imported"] == len(TERMS)
    url = f"http://127.0.0.1:{move.b.settings.port}/api/v1/mailboxes/{HOLDER}"
    server = TestServer(move.b.application(), host="127.0.0.1", port=move.b.settings.port)
    await server.start_server()
    headers = {"Authorization": f"Bearer {HOLDER_TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:

            async def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
                async with http.request(method, url + path, json=body) as response:
                    return response.status, await response.json()

            _, listed = await call("GET", "/messages")
            ids = {m["as4_message_id"]: m["id"] for m in listed["messages"]}
            assert set(ids) == set(TERMS) - {"event@router"}
            status, state = await call("GET", f"/messages/{ids['reply@router']}/two-way")
            assert status == 200 and state["opened_at"] == NOW.isoformat(), state
            assert [r["reply_id"] for r in state["replies"]] == ["reply-at-a"]
            answer = {"text": "Jag svarar från min nya brevlåda."}
            status, sent = await call("POST", f"/messages/{ids['reply@router']}/replies", answer)
            assert status == 202 and sent["case_reference"] == "D1", sent
            status, refused = await call("POST", f"/messages/{ids['silent@router']}/replies", answer)
            assert status == 409 and refused["code"] == "reply-not-allowed", refused
            status, refused = await call("POST", f"/messages/{ids['paid@router']}/payment", {})
            assert status == 409 and refused["code"] == "already-paid", refused
            status, paid = await call("POST", f"/messages/{ids['unpaid@router']}/payment", {})
            assert status == 201, paid
            status, refused = await call("POST", f"/messages/{ids['unpaid@router']}/payment", {})
            assert status == 409 and refused["code"] == "already-paid", refused
            status, state = await call("GET", f"/messages/{ids['served@router']}/two-way")
            assert state["delgivning"]["state"] == "served", state
            status, timeline = await call("GET", "/cases")
            assert [e["status"] for c in timeline["cases"] for e in c["events"]] == ["ansökan mottagen"]
            move.clock[0] = NOW + timedelta(days=4)
            status, refused = await call("POST", f"/messages/{ids['reply@router']}/replies", answer)
            assert status == 409 and refused["code"] == "reply-too-late", refused
    finally:
        await server.close()


async def test_an_archive_of_format_1_imports_without_two_way_records(two_way_move: TwoWayMove) -> None:
    """An older exporter's manifest (no Format, no TwoWay) still imports every letter, and B offers no terms it
    cannot know the state of."""
    move = two_way_move
    old = dataclasses.replace(read_manifest(_manifest(move.archive), OPERATOR.certificate), format=1)
    written = build_manifest(old, OPERATOR)
    assert b"Format" not in written and b"TwoWay" not in written
    result = await import_mailbox(move.b, _with_manifest(move.archive, written))
    assert result["imported"] == len(TERMS)
    assert len(await move.b.store.list(HOLDER)) == len(TERMS) - 1
    for mail in await move.b.store.list(HOLDER):
        assert await move.b.twoway.store.letter(HOLDER, mail.id) is None
    assert await move.b.twoway.store.timeline(HOLDER) == []


async def test_a_two_way_state_changed_after_signing_is_refused(two_way_move: TwoWayMove) -> None:
    """A served letter turned back to pending in the signed manifest: the signature no longer verifies, nothing is
    imported."""
    move = two_way_move
    manifest = _manifest(move.archive)
    assert manifest.count(b'"delgivning_state": "served"') == 1
    changed = manifest.replace(b'"delgivning_state": "served"', b'"delgivning_state": "pending"')
    with pytest.raises(TransferRefused, match="signature does not verify"):
        await import_mailbox(move.b, _with_manifest(move.archive, changed))
    assert await move.b.store.letters_of(HOLDER) == []


async def test_two_way_terms_other_than_the_sender_signed_are_refused(two_way_move: TwoWayMove) -> None:
    """An exporter that signs a longer answer deadline, or a case event the sender never sent, than the letter's
    signed envelope says: the batch is refused with the reason and nothing is imported."""
    move = two_way_move
    found = read_manifest(_manifest(move.archive), OPERATOR.certificate)
    by_origin = {letter.origin: letter.uid for letter in found.letters}
    later = (NOW + timedelta(days=30)).isoformat()
    records = json.loads(json.dumps(found.two_way))
    records[by_origin["reply@router"]]["letters"][0]["terms"]["reply"]["deadline"] = later
    forged = build_manifest(dataclasses.replace(found, two_way=records), OPERATOR)
    with pytest.raises(TransferRefused, match="terms of part 0 differ from those its sender signed"):
        await import_mailbox(move.b, _with_manifest(move.archive, forged))
    records = json.loads(json.dumps(found.two_way))
    records[by_origin["event@router"]]["case_events"][0]["status"] = "beslut fattat"
    forged = build_manifest(dataclasses.replace(found, two_way=records), OPERATOR)
    with pytest.raises(TransferRefused, match="case events of the two-way record differ"):
        await import_mailbox(move.b, _with_manifest(move.archive, forged))
    assert await move.b.store.letters_of(HOLDER) == []
    assert await move.b.store.list(HOLDER) == []


async def test_the_old_operator_deletes_moved_letters_with_their_two_way_records(two_way_move: TwoWayMove) -> None:
    """Once the new operator confirmed them, the old one deletes the letters with their terms, answers, payment and
    case events (their rows name the mail rows, so these go first)."""
    move = two_way_move
    moved = {letter.uid: letter.origin for letter in await move.a.store.letters_of(HOLDER)}
    async with move.a.store.engine.begin() as conn:
        await _delete_letters(conn, HOLDER, moved)
    assert await move.a.store.letters_of(HOLDER) == [] and await move.a.store.list(HOLDER) == []
    assert await move.a.twoway.store.timeline(HOLDER) == []
    for mail_id in move.mail_ids.values():
        assert await move.a.twoway.store.letter(HOLDER, mail_id) is None
        assert await move.a.twoway.store.replies_of(mail_id) == []
        assert await move.a.twoway.store.payment_of(mail_id) is None


def test_manifest_formats() -> None:
    """A manifest of format 2 carries the two-way records under the signature; one of a format this operator does
    not know, or with a two-way record in format 1, is refused even when signed."""
    record: dict[str, Any] = {"conversation_id": None, "letters": [], "case_events": []}
    manifest = Manifest("s", 1, A_ID, B_ID, HOLDER, NOW, (), two_way={"u": record})
    assert read_manifest(build_manifest(manifest, OPERATOR), OPERATOR.certificate).format == 2
    with pytest.raises(TransferRefused, match="format '3' is not one this operator reads"):
        read_manifest(build_manifest(dataclasses.replace(manifest, format=3), OPERATOR), OPERATOR.certificate)
    root = etree.fromstring(build_manifest(manifest, OPERATOR))
    for name in ("{http://www.w3.org/2000/09/xmldsig#}Signature", f"{{{NS}}}Format"):
        found = root.find(name)
        assert found is not None
        root.remove(found)
    root.append(etree.fromstring(f'<p:Letter xmlns:p="{NS}" Uid="u"><p:TwoWay>{{}}</p:TwoWay></p:Letter>'))
    sign_enveloped(root, OPERATOR)
    with pytest.raises(TransferRefused, match="two-way record in a manifest of format 1"):
        read_manifest(serialize(root), OPERATOR.certificate)


# ------------------------------------------------------- what the holder did at the old operator, during a move


async def _freeze(operator: Operator) -> None:
    """The old operator completed the switch (``Mover._complete``): the mailbox is moving out."""
    async with operator.store.engine.begin() as conn:
        await conn.execute(update(mailboxes).where(mailboxes.c.recipient == HOLDER).values(state="moving-out"))


async def _outbox(operator: Operator) -> list[tuple[str, bool]]:
    async with operator.store.engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.message_id, outbox.c.sent_at).order_by(outbox.c.message_id))
        return [(row.message_id, row.sent_at is not None) for row in rows]


async def test_a_mailbox_moving_out_records_nothing_more_the_holder_does(two_way_move: TwoWayMove) -> None:
    """Once the old operator's mailbox is moving out, an answer, a payment, an opening, an acknowledgement or a
    not-served notice there is refused (the API with 409 mailbox-moving) and stores and queues nothing."""
    move, store = two_way_move, two_way_move.a.twoway.store
    ids = move.mail_ids
    await _freeze(move.a)
    queued = await _outbox(move.a)
    reply = {"reply_id": "late-at-a", "mail_id": ids["reply@router"], "recipient": HOLDER,
             "message_id": "late-reply@a", "actor": "holder", "created_at": NOW}  # fmt: skip
    claim = {"mail_id": ids["unpaid@router"], "payment_id": "late-at-a", "recipient": HOLDER, "payer": "holder",
             "amount": "100.00", "currency": "SEK"}  # fmt: skip
    attempts = [
        store.reply(reply, {"message_id": "late-reply@a"}, at=NOW),
        store.reserve_payment(claim),
        store.mark_opened(ids["silent@router"], NOW, "opened@a", {"message_id": "opened@a"}),
        store.serve(ids["served@router"], NOW, "kvitto-2@a", {"message_id": "kvitto-2@a"}),
        store.not_served(ids["served@router"], NOW, "not-served@a", {"message_id": "not-served@a"}),
    ]
    for attempt in attempts:
        with pytest.raises(MailboxMoving, match="moving-out"):
            await attempt
    assert await _outbox(move.a) == queued
    assert [r["reply_id"] for r in await store.replies_of(ids["reply@router"])] == ["reply-at-a"]
    assert await store.payment_of(ids["unpaid@router"]) is None
    silent = await store.letter(HOLDER, ids["silent@router"])
    assert silent is not None and silent.opened_at is None
    server = TestServer(move.a.application(), host="127.0.0.1", port=services.free_port())
    await server.start_server()
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {HOLDER_TOKEN}"}) as http:
            base = f"http://127.0.0.1:{server.port}/api/v1/mailboxes/{HOLDER}/messages"
            calls = ((f"{ids['reply@router']}/replies", {"text": "Hej"}), (f"{ids['unpaid@router']}/payment", {}))
            for path, body in calls:
                async with http.post(f"{base}/{path}", json=body) as response:
                    problem = await response.json()
                    assert response.status == 409 and problem["code"] == "mailbox-moving", problem
    finally:
        await server.close()
    assert await _outbox(move.a) == queued and await store.payment_of(ids["unpaid@router"]) is None


async def test_a_letter_leaves_the_old_operator_only_when_what_the_holder_did_there_is_finished(
    two_way_move: TwoWayMove,
) -> None:
    """A letter whose answer, kvitto or payment confirmation still waits in the old operator's outbox, or whose
    payment is still at the provider, is not exported; once the payment completed and the access point took every
    message it goes, its record says paid, and the new operator does not let the holder pay it again."""
    move, store = two_way_move, two_way_move.a.twoway.store
    ids = move.mail_ids
    claim = {"mail_id": ids["unpaid@router"], "payment_id": "pending-at-a", "recipient": HOLDER,
             "payer": "holder", "amount": "100.00", "currency": "SEK"}  # fmt: skip
    assert await store.reserve_payment(claim)  # the provider is being asked when the switch completes
    await _freeze(move.a)
    mover = Mover(move.a)
    left, ready = await mover.exportable(HOLDER, 100)
    assert len(left) == len(TERMS)
    assert {x.origin for x in ready} == {"silent@router", "event@router"}  # the rest wait for outbox or payment
    done = {"provider": "reference", "provider_reference": "ref-2", "paid_at": NOW, "message_id": "pay-2@a"}
    await store.paid(ids["unpaid@router"], done, "pay-2@a", {"message_id": "pay-2@a"})
    _left, ready = await mover.exportable(HOLDER, 100)
    assert "unpaid@router" not in {x.origin for x in ready}  # its confirmation is not sent yet
    for message_id, _sent in await _outbox(move.a):
        await store.sent(message_id, NOW)
    _left, ready = await mover.exportable(HOLDER, 100)
    assert {x.origin for x in ready} == set(TERMS)
    assert [len(found) for found in await mover.exportable(HOLDER, 2)] == [2, 2]  # a batch's worth is read
    archive = move.archive.with_name("settled.tar")
    await export_mailbox(move.a, HOLDER, B_ID, archive)
    assert (await import_mailbox(move.b, archive))["imported"] == len(TERMS)
    at_b = {m.as4_message_id: m.id for m in await move.b.store.list(HOLDER)}
    paid = await move.b.twoway.store.payment_of(at_b["unpaid@router"])
    assert paid is not None and (paid["state"], paid["payment_id"]) == ("paid", "pending-at-a")
    again = {**claim, "mail_id": at_b["unpaid@router"], "payment_id": "again-at-b"}
    assert not await move.b.twoway.store.reserve_payment(again)


class Relay:
    """Stands in for an operator's access point's submission API (no AS4 here): keeps what is submitted, the
    files' bytes included, and takes everything (202)."""

    def __init__(self) -> None:
        self.documents: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}

    async def submit(self, document: dict[str, Any]) -> tuple[int, Any]:
        self.documents.append(document)
        return 202, {}

    async def submit_files(self, document: dict[str, Any], files: list[tuple[str, str, Path]]) -> tuple[int, Any]:
        self.documents.append(document)
        for _content_id, _mime_type, path in files:
            self.files[document["message_id"]] = path.read_bytes()
        return 202, {}


async def test_a_batch_whose_digests_do_not_match_is_refused_by_a_signed_receipt_and_nothing_moves(
    pair: Pair, tmp_path: Path
) -> None:
    """The old operator freezes the mailbox before it exports (even a switch it learnt of from FaR); a batch sent
    over AS4 with a file changed after its manifest was signed: the new operator stores nothing and
    answers with a signed refusal naming the file, and the old operator marks the move failed with that reason and
    keeps every letter."""
    relay_a, relay_b = Relay(), Relay()
    pair.a.client, pair.b.client = cast(AccessPointClient, relay_a), cast(AccessPointClient, relay_b)
    async with pair.a.store.engine.begin() as conn:
        await conn.execute(insert(moves).values(switch_id="s-1", recipient=HOLDER, role="from", peer=B_ID,
                                                state="switched", created_at=NOW, updated_at=NOW))  # fmt: skip
    async with pair.b.store.engine.begin() as conn:
        await conn.execute(insert(moves).values(switch_id="s-1", recipient=HOLDER, role="to", peer=A_ID,
                                                state="requested", created_at=NOW, updated_at=NOW))  # fmt: skip
    await Mover(pair.a).step()
    assert await pair.a.store.state(HOLDER) == "moving-out"  # switched (as FaR said), frozen before the export
    (sent,) = relay_a.files.values()
    archive = tmp_path / "batch.tar"
    archive.write_bytes(sent)
    staged = tmp_path / "staged"
    staged.mkdir()
    await Mover(pair.b)._import(_tamper(archive, "/part-1"), staged)
    assert await pair.b.store.letters_of(HOLDER) == []
    (answer,) = relay_b.documents
    data = base64.b64decode(answer["payloads"][0]["data"])
    receipt = read_receipt(data, B_KEYS.certificate)
    assert not receipt.accepted and receipt.reason is not None and "digest does not match" in receipt.reason
    await Mover(pair.a)._receipt(data)
    described = await Mover(pair.a).describe(HOLDER)
    assert described is not None and described["state"] == "failed", described
    assert "digest does not match" in described["detail"]["reason"]
    assert len(await pair.a.store.letters_of(HOLDER)) == 3


class Away(Relay):
    """An access point that cannot be reached for the first ``refusals`` submissions, then takes everything."""

    def __init__(self, refusals: int) -> None:
        super().__init__()
        self.refusals = refusals

    async def submit(self, document: dict[str, Any]) -> tuple[int, Any]:
        if self.refusals > 0:
            self.refusals -= 1
            raise aiohttp.ClientConnectionError("connection refused")
        return await super().submit(document)


async def test_a_switch_request_the_access_point_could_not_take_is_sent_by_the_worker_once(pair: Pair) -> None:
    """The new operator's SwitchRequest while its access point is away: the move is recorded and the holder's
    opening goes on; the worker sends the request when the access point is back, and only once."""
    relay = Away(refusals=1)
    pair.b.client = cast(AccessPointClient, relay)
    switch = {"id": "s-2", "from_operator": A_ID[2:], "to_operator": B_ID[2:], "recipient": HOLDER}
    mover = Mover(pair.b)
    await mover.start_incoming(switch)
    assert relay.documents == []
    await mover.step()
    await mover.step()
    (request,) = relay.documents
    notice = read_notice(base64.b64decode(request["payloads"][0]["data"]), Kind.SWITCH_REQUEST, B_KEYS.certificate)
    assert (notice.switch_id, notice.holder, notice.from_operator, notice.to_operator) == ("s-2", HOLDER, A_ID, B_ID)


async def test_a_receipt_for_a_batch_sent_again_after_a_crash_waits_for_it_and_then_confirms(
    pair: Pair, tmp_path: Path
) -> None:
    """The old operator crashed after its access point took a batch but before recording it sent: the new operator's
    receipt, arriving while the batch is sent again, waits (nothing deleted, the message handled again) and then
    confirms it, and the letters are deleted once."""
    relay_a, relay_b = Relay(), Relay()
    pair.a.client, pair.b.client = cast(AccessPointClient, relay_a), cast(AccessPointClient, relay_b)
    for operator, role, peer, state in ((pair.a, "from", B_ID, "switched"), (pair.b, "to", A_ID, "requested")):
        async with operator.store.engine.begin() as conn:
            await conn.execute(insert(moves).values(switch_id="s-3", recipient=HOLDER, role=role, peer=peer,
                                                    state=state, created_at=NOW, updated_at=NOW))  # fmt: skip
    await Mover(pair.a).step()
    (sent,) = relay_a.files.values()
    async with pair.a.store.engine.begin() as conn:  # as if killed before the batch was recorded as sent
        await conn.execute(update(batches).values(state="prepared", manifest_sha256=None))
    archive, staged = tmp_path / "batch.tar", tmp_path / "staged"
    archive.write_bytes(sent)
    staged.mkdir()
    await Mover(pair.b)._import(archive, staged)
    (answer,) = relay_b.documents
    receipt = base64.b64decode(answer["payloads"][0]["data"])
    with pytest.raises(MoveWaits, match="is being sent"):
        await Mover(pair.a)._receipt(receipt)
    assert len(await pair.a.store.letters_of(HOLDER)) == 3
    await Mover(pair.a).step()  # sent again: the same manifest
    assert list(relay_a.files.values()) == [sent]
    await Mover(pair.a)._receipt(receipt)
    assert await pair.a.store.letters_of(HOLDER) == []
    assert len(await pair.b.store.letters_of(HOLDER)) == 3
