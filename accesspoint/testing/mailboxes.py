"""Mailboxes full of letters for tests and benchmarks: letters put into a reference operator's store through the
same steps a delivery takes (check, keep the files, answer), without the AS4 hop, and big payloads written as
streams.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

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
    a file moved into place) checked, kept as files, the mail stored, and (``answer``) the signed answer kept."""
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
    await operator.store.deliver(origin, outcome, now=now, letter=letter, files=operator.files, staged=staged)
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
