"""A mailbox moved by file between two operators (``operator export`` / ``import``): every letter arrives exactly
as it left, each verified again (signature of the archive, every digest, every seal and signed answer), a second
import stores nothing twice, and an archive that does not verify is refused whole."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from accesspoint.security.keys import KeyPair
from accesspoint.testing import pki
from accesspoint.testing.mailboxes import deliver_letter, random_file, sbd_letter
from operators.letters import file_digest
from operators.moves import export_mailbox, import_mailbox
from operators.portability import TransferRefused
from operators.service import Operator
from operators.settings import AccessPointLink, OperatorSettings, Peer
from tests.test_far_support import NOW
from tests.test_operators_support import INTERMEDIARY, OPERATOR, SENDERS_CA, sealed, secure_delivery

HOLDER = "197001011234"
A_ID, B_ID = "165568402266", "165590123456"
B_KEYS = pki.issue(pki.make_ca("Operators B CA"), "Brevlådan Två AB")


@dataclass
class Pair:
    """Two offline operators that know each other."""

    a: Operator
    b: Operator


def _operator(folder: Path, operator_id: str, keys: KeyPair, peer: Peer) -> Operator:
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
    )
    return Operator(settings, clock=lambda: NOW)


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
