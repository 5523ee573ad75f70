"""Mailboxes full of letters for tests and benchmarks: letters put into a reference operator's store through the
same steps a delivery takes (check, keep the files, answer), without the AS4 hop, and big payloads written as
streams.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Connection

from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from operators.deliveries import CheckedDelivery
from operators.letters import Letter, LetterPart, Sink, new_uid
from operators.service import Operator

CHUNK = 1024 * 1024


def sbd_letter(recipient: str, text: str, *, sender: str = "0007:2021005448", manifest: bool = False) -> bytes:
    """A Peppol-style SBD letter to ``recipient`` (12 digits)."""
    header = Sbdh(
        sender=(Partner(sender),),
        receiver=(Partner(recipient),),
        document=DocumentIdentification(
            standard="urn:example:letter",
            type_version="1.0",
            instance_identifier=str(uuid.uuid4()),
            type="Letter",
            created=datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
        ),
        scopes=(Scope(ScopeType.DOCUMENTID, "urn:example:letter::Letter##1.0", "busdox-docid-qns"),),
    )
    body = f'<Letter xmlns="urn:example:letter">{text}</Letter>'.encode()
    return build_sbd(header, body)


def random_file(path: Path, size: int, *, seed: int = 1) -> str:
    """``size`` pseudo-random bytes (SHAKE-256 of ``seed``: fast, incompressible, reproducible) written in chunks;
    their hex SHA-256."""
    digest = hashlib.sha256()
    stream = hashlib.shake_256(seed.to_bytes(8, "big"))
    block = stream.digest(CHUNK)
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        counter = 0
        while written < size:
            # Each chunk differs: the block XOR-ed with a counter pattern would cost more; a salted block is enough.
            chunk = hashlib.shake_256(block + counter.to_bytes(8, "big")).digest(min(CHUNK, size - written))
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            counter += 1
    return digest.hexdigest()


async def deliver_letter(
    operator: Operator,
    origin: str,
    payloads: list[tuple[str, str, bytes | Path]],
    *,
    answer: bool = True,
    at: datetime | None = None,
) -> Letter:
    """Put one letter into the operator's store as a delivery would: its payloads (content id, MIME type, bytes or
    a file moved into place) checked, kept as files, the mail stored with its two-way terms and case events, and
    (``answer``) the signed answer kept."""
    staged = operator.files.staging(origin)
    parts: list[LetterPart] = []
    for index, (content_id, mime, data) in enumerate(payloads):
        target = staged / f"part-{index}"
        if isinstance(data, Path):
            size = data.stat().st_size
            digest = _sha256_of(data)
            data.replace(target)
        else:
            sink = Sink(target)
            await sink.write(data)
            size, digest = await sink.close()
        parts.append(LetterPart(target.name, content_id, mime, "payload", size, digest))
    chosen, outcome = operator._check_files(staged, parts)
    if not isinstance(outcome, CheckedDelivery):
        raise ValueError(f"{origin}: not a delivery: {outcome}")
    now = at or operator.clock()
    kept = tuple(replace(p, role="envelope") if i == chosen else p for i, p in enumerate(parts))
    letter = Letter(
        new_uid(),
        outcome.recipient,
        origin,
        str(outcome.network),
        outcome.business_id,
        outcome.sender,
        now,
        kept,
        metadata={"message_id": origin},
    )
    checked = outcome

    def two_way(conn: Connection, ids: list[int]) -> None:
        operator.twoway.delivered(conn, origin, {}, checked, ids, now)

    delivery = operator.twoway.for_mailbox(outcome)
    await operator.store.deliver(
        origin, delivery, now=now, letter=letter, files=operator.files, staged=staged, also=two_way
    )
    stored = await operator.store.letter(outcome.recipient, origin)
    assert stored is not None
    if answer:
        await operator._answer(outcome, origin, parts, stored, now)
        stored = await operator.store.letter(outcome.recipient, origin)
        assert stored is not None
    return stored


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def names(count: int, prefix: str = "letter") -> Iterator[str]:
    """``prefix-0@seed`` … origins for seeded letters."""
    return (f"{prefix}-{index}@seed" for index in range(count))


async def seed_letters(
    operator: Operator,
    letters: list[tuple[str, list[tuple[str, str, bytes | Path]]]],
    *,
    answer: bool = True,
    at: datetime | None = None,
) -> list[Letter]:
    """Many letters (origin, payloads) at once: each checked and answered as ``deliver_letter`` does, the files
    written in one worker thread, the rows in one transaction (a mailbox of thousands is filled in seconds)."""
    from operators.mailbox import insert_mail
    from operators.mailbox import letters as letter_table
    from operators.receipts import build_answer

    now = at or operator.clock()

    def prepare() -> list[tuple[Letter, CheckedDelivery]]:
        made = []
        for origin, payloads in letters:
            uid = new_uid()
            folder = operator.files.folder(uid)
            folder.mkdir(parents=True)
            parts: list[LetterPart] = []
            for index, (content_id, mime, data) in enumerate(payloads):
                target = folder / f"part-{index}"
                if isinstance(data, Path):
                    data.replace(target)
                    digest = _sha256_of(target)
                else:
                    target.write_bytes(data)
                    digest = hashlib.sha256(data).hexdigest()
                parts.append(LetterPart(target.name, content_id, mime, "payload", target.stat().st_size, digest))
            chosen, outcome = operator._check_files(folder, parts)
            if not isinstance(outcome, CheckedDelivery):
                raise ValueError(f"{origin}: not a delivery: {outcome}")
            kept = [replace(p, role="envelope") if i == chosen else p for i, p in enumerate(parts)]
            if answer:
                built = build_answer(
                    outcome,
                    message_id=origin,
                    payloads=(),
                    operator=operator.settings.id,
                    digests=[(p.content_id, p.sha256) for p in parts],
                    keys=operator.settings.keys,
                    at=now,
                )
                for index, part in enumerate(built):
                    target = folder / f"answer-{index}"
                    target.write_bytes(part.data)
                    kept.append(
                        LetterPart(
                            target.name,
                            part.content_id,
                            part.mime_type,
                            "answer",
                            len(part.data),
                            hashlib.sha256(part.data).hexdigest(),
                        )
                    )
            made.append(
                (
                    Letter(
                        uid,
                        outcome.recipient,
                        origin,
                        str(outcome.network),
                        outcome.business_id,
                        outcome.sender,
                        now,
                        tuple(kept),
                        metadata={"message_id": origin},
                        answered_by=operator.settings.id if answer else None,
                    ),
                    outcome,
                )
            )
        return made

    made = await asyncio.to_thread(prepare)
    async with operator.store.engine.begin() as conn:
        for letter, outcome in made:
            await conn.run_sync(insert_mail, letter.origin, outcome, received_at=now)
        await conn.execute(letter_table.insert(), [letter.row() for letter, _outcome in made])
    return [letter for letter, _outcome in made]
