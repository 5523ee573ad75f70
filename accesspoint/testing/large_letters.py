"""A large letter through the two-way federation, for the tests and ``make bench``: a PDF/A written as a stream,
sent from the agency's access point as an AS4 attachment bound by its SHA-256 and size to the sealed Mina
meddelanden delivery (the envelope stays small), downloaded by the holder from the operator's mailbox API as a
stream, and the peak resident memory (VmHWM) of every server process on the way.

Nothing here holds the letter's content in memory: the file is written, hashed, uploaded and downloaded a MiB at
a time.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from accesspoint import demo_twoway as tw
from accesspoint.demo_common import Child, DemoFailure
from accesspoint.envelopes.letter import ExternalPart, LetterTerms, PartRole

CHUNK = 1024 * 1024
CONTENT_ID = "drawings@agency"
LETTER_ID = "letter@agency"
# The smallest PDF/A a mailbox shows (operators/presentation.py): the magic, XMP declaring PDF/A-2B, and a stream
# of hex digits, which never spell a name PDF/A forbids and compress as real scans do (about half).
_PDF_HEAD = (
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Metadata /Subtype /XML >>\nstream\n"
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:pdfaid="http://www.aiim.org/pdfa/ns/id/" pdfaid:part="2" pdfaid:conformance="B"/>'
    b"</rdf:RDF></x:xmpmeta>\nendstream\nendobj\n2 0 obj\n<< /Filter /ASCIIHexDecode >>\nstream\n"
)
_PDF_TAIL = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


@dataclass(frozen=True, slots=True)
class LargeFile:
    """A file written for the letter: where, how many bytes, their hex SHA-256."""

    path: Path
    size: int
    sha256: str


def write_pdf(path: Path, size: int, *, seed: int = 1) -> LargeFile:
    """A PDF/A of exactly ``size`` bytes (pseudo-random hex content, reproducible from ``seed``), written and
    hashed a MiB at a time."""
    body = size - len(_PDF_HEAD) - len(_PDF_TAIL)
    if body < 0:
        raise ValueError(f"a PDF of at least {len(_PDF_HEAD) + len(_PDF_TAIL)} bytes")
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:

        def put(data: bytes) -> None:
            out.write(data)
            digest.update(data)

        put(_PDF_HEAD)
        block = hashlib.shake_256(seed.to_bytes(8, "big")).digest(64)
        written, counter = 0, 0
        while written < body:
            # Each MiB differs (a counter in the XOF's input): fast, and nothing repeats for gzip to find.
            half = min(CHUNK, body - written + 1) // 2
            chunk = hashlib.shake_256(block + counter.to_bytes(8, "big")).digest(max(half, 1)).hex().encode()
            chunk = chunk[: body - written]
            put(chunk)
            written += len(chunk)
            counter += 1
        put(_PDF_TAIL)
    return LargeFile(path, size, digest.hexdigest())


def sealed_letter(world: tw.TwoWayFederation, recipient: str, content: LargeFile, *, letter_id: str) -> bytes:
    """A Mina meddelanden letter whose content is ``content`` as an AS4 attachment (``CONTENT_ID``), bound by its
    SHA-256 and size in the letter's signed header; signed by the agency and sealed by its förmedlare."""
    part = ExternalPart(CONTENT_ID, content.sha256, content.size, "application/pdf", PartRole.ATTACHMENT,
                        "ritningar.pdf")  # fmt: skip
    terms = LetterTerms(parts=(part,))
    return tw.mm_letter(world, recipient, terms, subject="Bygglov: ritningar", body=b"Ritningarna bifogas.",
                        letter_id=letter_id)  # fmt: skip


def _multipart(metadata: bytes, files: list[tuple[str, str, bytes | Path]]) -> tuple[str, int, Iterator[bytes]]:
    """multipart/form-data streamed from files: the content type, the length, the chunks."""
    boundary = "large-letter-" + uuid.uuid4().hex
    heads: list[bytes] = []
    sizes = 0
    for name, mime, source in [("metadata", "application/json", metadata), *files]:
        disposition = f'form-data; name="{name}"' + ("" if name == "metadata" else f'; filename="{name}"')
        heads.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {mime}\r\n\r\n".encode())
        sizes += source.stat().st_size if isinstance(source, Path) else len(source)
    end = f"\r\n--{boundary}--\r\n".encode()
    length = sum(len(h) for h in heads) + sizes + 2 * (len(heads) - 1) + len(end)

    def chunks() -> Iterator[bytes]:
        for index, (head, (_name, _mime, source)) in enumerate(
            zip(heads, [("metadata", "", metadata), *files], strict=True)
        ):
            yield (b"\r\n" if index else b"") + head
            if isinstance(source, Path):
                with source.open("rb") as stream:
                    while chunk := stream.read(CHUNK):
                        yield chunk
            else:
                yield source
        yield end

    return f"multipart/form-data; boundary={boundary}", length, chunks()


def send(world: tw.TwoWayFederation, recipient: str, content: LargeFile) -> str:
    """Submit the sealed letter and its content at the agency's access point (multipart, streamed from the file),
    routed through FaR to ``recipient``; its MessageId."""
    message_id = f"{uuid.uuid4()}@agency.demo"
    envelope = sealed_letter(world, recipient, content, letter_id=f"large-{uuid.uuid4()}")
    metadata = {
        "pmode": "nordic-to-se",
        "message_id": message_id,
        "properties": {
            "originalSender": {"value": tw.AGENCY, "type": "iso6523-actorid-upis"},
            "finalRecipient": recipient,
        },
        "payloads": [
            {"part": LETTER_ID, "content_id": LETTER_ID, "mime_type": "application/xml"},
            {"part": CONTENT_ID, "content_id": CONTENT_ID, "mime_type": "application/pdf"},
        ],
    }
    files: list[tuple[str, str, bytes | Path]] = [
        (LETTER_ID, "application/xml", envelope),
        (CONTENT_ID, "application/pdf", content.path),
    ]
    content_type, length, body = _multipart(json.dumps(metadata).encode(), files)
    request = urllib.request.Request(world.nordic.url + "/api/v1/messages", data=body, method="POST")  # noqa: S310
    request.add_header("Authorization", f"Bearer {world.nordic.token}")
    request.add_header("Content-Type", content_type)
    request.add_header("Content-Length", str(length))
    try:
        with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (loopback)
            response.read()
    except urllib.error.HTTPError as exc:
        refused = f"the agency's access point refused the large letter: HTTP {exc.code} {exc.read()!r}"
        raise DemoFailure(refused) from None
    return message_id


def download(world: tw.TwoWayFederation, recipient: str, mail_id: int, content_id: str) -> tuple[int, str]:
    """The holder downloads a part of a letter from their mailbox as a stream: its size and hex SHA-256."""
    url = f"{world.operator_url(recipient)}/api/v1/mailboxes/{recipient}/messages/{mail_id}/parts/" + quote(
        content_id, safe=""
    )
    request = urllib.request.Request(url)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {world.holder_tokens[recipient]}")
    digest, size = hashlib.sha256(), 0
    with urllib.request.urlopen(request, timeout=600) as response:  # noqa: S310 (loopback)
        while chunk := response.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def servers(world: tw.TwoWayFederation) -> dict[str, Child]:
    """The processes a letter passes: the agency's access point, the router, each operator's access point and
    mailbox service."""
    federation = world.federation
    found: dict[str, Child] = {"sender-ap": federation.nordic, "router": federation.sweden}
    for key, point in federation.operator_aps.items():
        found[f"{key}-ap"] = point
    for key, operator in federation.operators.items():
        found[f"{key}-mailbox"] = operator
    return found


def reset_peaks(processes: dict[str, Child]) -> None:
    """Start each process's peak resident set (VmHWM) again from its current one (``clear_refs`` 5)."""
    for child in processes.values():
        Path(f"/proc/{child.pid}/clear_refs").write_text("5")


def peaks(processes: dict[str, Child]) -> dict[str, int]:
    """Each process's peak resident set (VmHWM) in bytes."""
    found: dict[str, int] = {}
    for name, child in processes.items():
        for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                found[name] = int(line.split()[1]) * 1024
    return found
