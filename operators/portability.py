"""Mailbox portability on the wire, without the network: the signed documents operators send each other and the
transfer archive, written and read as streams.

Service ``urn:accesspoint:operators:portability``, action ``Transfer``; the payload's root element says what it
is, and every one is signed (enveloped XML-DSig) by the operator that sends it:

==================  ============================  =============================================================
``SwitchRequest``   new operator → old            FaR has a pending switch of this holder to me (its id)
``SwitchCancelled`` either way                    the holder cancelled it before the switch time
``MailboxExport``   old → new                     a tar: ``manifest.xml`` (the ``MailboxTransfer``, signed),
                                                  then ``letters/<uid>/<file>`` for every part it lists
``ImportReceipt``   new → old                     what was imported (or refused, and why); only then does the
                                                  old operator delete its copies
==================  ============================  =============================================================

A ``MailboxTransfer`` lists, per letter, where it first arrived (``Origin``, unique per mailbox: a letter handed
over twice is stored once), its network, business id, sender, time of arrival, the operator whose signed answer
it carries, the access point's record of it, and every file with its size and SHA-256. ``write_archive`` copies
the files through a hash and refuses a file that no longer matches; ``read_archive`` streams each member into a
staging folder through a hash and refuses the whole batch at the first mismatch, missing or unexpected member.

Manifest formats (``Format``; absent means 1): **1** letters and their files; **2** also, per letter that has one,
its two-way record (``TwoWay``, JSON: the terms, what the holder did with the letter, the case events; see
``operators/twoway_transfer.py``) inside the signed manifest, so the signature covers it. A reader takes both.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from cryptography import x509
from lxml import etree

from accesspoint.core.xml import string_value
from accesspoint.envelopes._common import EnvelopeError, parse_document, serialize
from accesspoint.envelopes.signature import sign_enveloped, verify_enveloped
from accesspoint.security.keys import KeyPair
from operators.letters import CHUNK, Letter, LetterPart

SERVICE = "urn:accesspoint:operators:portability"
ACTION = "Transfer"
NS = "urn:accesspoint:operators:portability:1"
_P = f"{{{NS}}}"
MANIFEST = "manifest.xml"
MAX_MANIFEST = 64 * 1024 * 1024
ARCHIVE_TYPE = "application/x-tar"
FORMAT = 2  # the manifest format written (see the module docstring)


class Kind(StrEnum):
    """What a portability document is (its root element)."""

    SWITCH_REQUEST = "SwitchRequest"
    SWITCH_CANCELLED = "SwitchCancelled"
    TRANSFER = "MailboxTransfer"
    RECEIPT = "ImportReceipt"


class TransferRefused(ValueError):
    """A transfer that cannot be taken: its ``reason`` names what failed (a digest, a signature, a member);
    ``manifest``: the archive's manifest when its signature verified before the rest failed (the sender is known,
    so it can be told)."""

    def __init__(self, reason: str, manifest: Manifest | None = None) -> None:
        self.reason = reason
        self.manifest = manifest
        super().__init__(reason)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _sub(parent: etree._Element, name: str, value: str | None = None, **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{_P}{name}", attributes)
    if value is not None:
        element.text = value
    return element


def _text(root: etree._Element, name: str) -> str:
    found = root.find(f"{_P}{name}")
    if found is None:
        raise TransferRefused(f"{etree.QName(root).localname} lacks {name}")
    return string_value(found).strip()


def _signed(root: etree._Element, keys: KeyPair) -> bytes:
    sign_enveloped(root, keys)
    return serialize(root)


def _verified(data: bytes, kind: Kind, signer: x509.Certificate) -> etree._Element:
    try:
        root = parse_document(data, what=kind.value, max_bytes=MAX_MANIFEST)
    except EnvelopeError as exc:
        raise TransferRefused(f"the {kind.value} is not readable XML: {exc}") from None
    if root.tag != f"{_P}{kind.value}":
        raise TransferRefused(f"expected a {kind.value}, found {root.tag}")
    try:
        verify_enveloped(root, expected=signer)
    except EnvelopeError as exc:
        raise TransferRefused(
            f"the {kind.value}'s signature does not verify with the sending operator's certificate: {exc}"
        ) from None
    return root


def claimed_sender(data: bytes, element: str = "Sender") -> str:
    """The operator a portability document says it comes from (unverified: it picks the certificate that must
    then verify it); TransferRefused when it names none."""
    try:
        root = parse_document(data, what="portability document", max_bytes=MAX_MANIFEST)
    except EnvelopeError as exc:
        raise TransferRefused(f"not readable XML: {exc}") from None
    found = root.find(f"{_P}{element}")
    if found is None:
        raise TransferRefused(f"the document names no {element}")
    return string_value(found).strip()


def kind_of(data: bytes) -> Kind | None:
    """Which portability document ``data`` is (by its root element), without checking it."""
    try:
        root = parse_document(data, what="portability document", max_bytes=MAX_MANIFEST)
    except EnvelopeError:
        return None
    if not root.tag.startswith(_P):
        return None
    try:
        return Kind(root.tag.removeprefix(_P))
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------ notices


@dataclass(frozen=True, slots=True)
class Notice:
    """SwitchRequest or SwitchCancelled: FaR's switch id, from which operator to which, whose mailbox."""

    kind: Kind
    switch_id: str
    sender: str  # the operator that sent this notice
    from_operator: str
    to_operator: str
    holder: str
    at: datetime


def build_notice(notice: Notice, keys: KeyPair) -> bytes:
    """The signed notice."""
    root = etree.Element(f"{_P}{notice.kind.value}", nsmap={"p": NS})
    for name, value in (
        ("Switch", notice.switch_id),
        ("Sender", notice.sender),
        ("From", notice.from_operator),
        ("To", notice.to_operator),
        ("Holder", notice.holder),
        ("Time", _utc(notice.at)),
    ):
        _sub(root, name, value)
    return _signed(root, keys)


def read_notice(data: bytes, kind: Kind, signer: x509.Certificate) -> Notice:
    """A notice verified with the sending operator's certificate (TransferRefused otherwise)."""
    root = _verified(data, kind, signer)
    return Notice(
        kind,
        _text(root, "Switch"),
        _text(root, "Sender"),
        _text(root, "From"),
        _text(root, "To"),
        _text(root, "Holder"),
        _moment(_text(root, "Time")),
    )


def _moment(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TransferRefused(f"{text[:40]!r} is not a date-time") from None


# ----------------------------------------------------------------------------------------- manifest


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a transfer batch holds (see the module docstring)."""

    switch_id: str
    seq: int
    from_operator: str
    to_operator: str
    holder: str
    created: datetime
    letters: tuple[Letter, ...]
    sha256: str = field(default="", compare=False)  # of the signed manifest as sent
    two_way: dict[str, dict[str, Any]] = field(default_factory=dict)  # letter uid -> its two-way record
    format: int = FORMAT

    def member(self, letter: Letter, part: LetterPart) -> str:
        """The archive member of one file."""
        return f"letters/{letter.uid}/{part.name}"


def build_manifest(manifest: Manifest, keys: KeyPair) -> bytes:
    """The signed MailboxTransfer."""
    root = etree.Element(f"{_P}{Kind.TRANSFER.value}", nsmap={"p": NS})
    for name, value in (
        ("Switch", manifest.switch_id),
        ("Batch", str(manifest.seq)),
        ("From", manifest.from_operator),
        ("To", manifest.to_operator),
        ("Holder", manifest.holder),
        ("Created", _utc(manifest.created)),
    ):
        _sub(root, name, value)
    if manifest.format > 1:  # format 1 was written before formats were named
        _sub(root, "Format", str(manifest.format))
    for letter in manifest.letters:
        item = _sub(
            root,
            "Letter",
            Uid=letter.uid,
            Origin=letter.origin,
            Network=letter.network,
            BusinessId=letter.business_id,
            Sender=letter.sender,
            ReceivedAt=_utc(letter.received_at),
            **({"AnsweredBy": letter.answered_by} if letter.answered_by else {}),
        )
        _sub(item, "Metadata", json.dumps(letter.metadata, sort_keys=True))
        record = manifest.two_way.get(letter.uid) if manifest.format > 1 else None
        if record is not None:
            _sub(item, "TwoWay", json.dumps(record, sort_keys=True))
        for part in letter.parts:
            _sub(
                item,
                "Part",
                Name=part.name,
                ContentId=part.content_id,
                MimeType=part.mime_type,
                Role=part.role,
                Size=str(part.size),
                SHA256=part.sha256,
            )
    return _signed(root, keys)


def read_manifest(data: bytes, signer: x509.Certificate) -> Manifest:
    """The MailboxTransfer verified with the old operator's certificate (TransferRefused otherwise)."""
    root = _verified(data, Kind.TRANSFER, signer)
    holder = _text(root, "Holder")
    version = _format(root)
    two_way: dict[str, dict[str, Any]] = {}
    letters = []
    seen: set[str] = set()
    for item in root.iterfind(f"{_P}Letter"):
        uid = item.get("Uid") or ""
        if not uid or "/" in uid or uid in seen or uid.startswith("."):
            raise TransferRefused(f"letter uid {uid[:40]!r} is missing, repeated or not a plain name")
        seen.add(uid)
        parts = []
        for part in item.iterfind(f"{_P}Part"):
            name = part.get("Name") or ""
            if not name or "/" in name or name.startswith("."):
                raise TransferRefused(f"letter {uid}: part name {name[:40]!r} is not a plain name")
            try:
                size = int(part.get("Size") or "")
            except ValueError:
                raise TransferRefused(f"letter {uid}: part {name} has no size") from None
            parts.append(
                LetterPart(
                    name,
                    part.get("ContentId") or "",
                    part.get("MimeType") or "",
                    part.get("Role") or "",
                    size,
                    (part.get("SHA256") or "").lower(),
                )
            )
        metadata = item.find(f"{_P}Metadata")
        record = item.find(f"{_P}TwoWay")
        if record is not None:
            if version < 2:
                raise TransferRefused(f"letter {uid}: a two-way record in a manifest of format {version}")
            two_way[uid] = _json_object(string_value(record), f"letter {uid}: the two-way record")
        letters.append(
            Letter(
                uid=uid,
                recipient=holder,
                origin=item.get("Origin") or "",
                network=item.get("Network") or "",
                business_id=item.get("BusinessId") or "",
                sender=item.get("Sender") or "",
                received_at=_moment(item.get("ReceivedAt") or ""),
                parts=tuple(parts),
                metadata={} if metadata is None else json.loads(string_value(metadata) or "{}"),
                answered_by=item.get("AnsweredBy"),
            )
        )
    try:
        seq = int(_text(root, "Batch"))
    except ValueError:
        raise TransferRefused("the Batch is not a number") from None
    return Manifest(
        _text(root, "Switch"),
        seq,
        _text(root, "From"),
        _text(root, "To"),
        holder,
        _moment(_text(root, "Created")),
        tuple(letters),
        hashlib.sha256(data).hexdigest(),
        two_way,
        version,
    )


def _format(root: etree._Element) -> int:
    found = root.find(f"{_P}Format")
    if found is None:
        return 1  # written before formats were named
    text = string_value(found).strip()
    if not text.isdigit() or not 1 <= int(text) <= FORMAT:
        raise TransferRefused(f"the manifest's format {text[:20]!r} is not one this operator reads (1 to {FORMAT})")
    return int(text)


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise TransferRefused(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise TransferRefused(f"{what} is not a JSON object")
    return value


# ------------------------------------------------------------------------------------------- archive


def write_archive(out: IO[bytes], manifest_bytes: bytes, manifest: Manifest, folder_of: Any) -> None:
    """Stream the archive to ``out``: the signed manifest, then every part listed, each copied through a hash
    (``folder_of(uid)`` is the letter's folder); TransferRefused when a file no longer matches its digest."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(manifest_bytes)
        archive.addfile(info, _BytesReader(manifest_bytes))
        for letter in manifest.letters:
            for part in letter.parts:
                path = Path(folder_of(letter.uid)) / part.name
                info = tarfile.TarInfo(manifest.member(letter, part))
                info.size = part.size
                with path.open("rb") as source:
                    hashed = _Hashing(source)
                    archive.addfile(info, hashed)
                if hashed.digest() != part.sha256 or hashed.size != part.size:
                    raise TransferRefused(f"{path.name} of letter {letter.uid} no longer matches its digest")


@dataclass
class Staged:
    """What ``read_archive`` verified and staged: the manifest and where each letter's files are."""

    manifest: Manifest
    manifest_bytes: bytes
    folder: Path

    def letter_folder(self, uid: str) -> Path:
        """The staged files of one letter."""
        return self.folder / uid


def read_archive(source: IO[bytes], staging: Path, signer: Callable[[str], x509.Certificate]) -> Staged:
    """Stream an archive: its manifest verified with ``signer(<the operator it says it is from>)``, every member
    staged under ``staging`` through a hash and compared with the manifest; TransferRefused at the first member out
    of place, digest or size that does not match, or part missing (the caller removes ``staging``)."""
    try:
        with tarfile.open(fileobj=source, mode="r|") as archive:
            return _read(archive, staging, signer)
    except tarfile.TarError as exc:
        raise TransferRefused(f"not a complete transfer archive: {exc}") from None


def _read(archive: tarfile.TarFile, staging: Path, signer: Callable[[str], x509.Certificate]) -> Staged:
    members = iter(archive)
    first = next(members, None)
    if first is None or first.name != MANIFEST or not first.isfile() or first.size > MAX_MANIFEST:
        raise TransferRefused(f"the archive must start with {MANIFEST}")
    handle = archive.extractfile(first)
    assert handle is not None
    manifest_bytes = handle.read()
    manifest = read_manifest(manifest_bytes, signer(claimed_sender(manifest_bytes, "From")))
    try:
        return _read_members(archive, members, manifest, manifest_bytes, staging)
    except tarfile.TarError as exc:
        raise TransferRefused(f"not a complete transfer archive: {exc}", manifest) from None
    except TransferRefused as exc:
        raise TransferRefused(exc.reason, manifest) from None


def _read_members(
    archive: tarfile.TarFile,
    members: Iterator[tarfile.TarInfo],
    manifest: Manifest,
    manifest_bytes: bytes,
    staging: Path,
) -> Staged:
    """The members after a verified manifest, each staged and compared with it."""
    expected = {manifest.member(letter, part): (letter, part) for letter in manifest.letters for part in letter.parts}
    for member in members:
        wanted = expected.pop(member.name, None)
        if wanted is None or not member.isfile():
            raise TransferRefused(f"archive member {member.name[:100]!r} is not in the manifest")
        letter, part = wanted
        stream = archive.extractfile(member)
        assert stream is not None
        target = staging / letter.uid / part.name
        target.parent.mkdir(parents=True, exist_ok=True)
        size, digest = _copy(stream, target)
        if digest != part.sha256 or size != part.size:
            raise TransferRefused(
                f"{member.name}: the digest does not match the manifest (SHA-256 {digest[:16]}…, "
                f"{size} bytes; the manifest says {part.sha256[:16]}…, {part.size} bytes)"
            )
    if expected:
        raise TransferRefused(
            f"{len(expected)} part(s) listed in the manifest are missing, e.g. {next(iter(expected))}"
        )
    return Staged(manifest, manifest_bytes, staging)


def _copy(stream: IO[bytes], target: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class _Hashing:
    """A file object that hashes what tarfile reads from it."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.size = 0
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self._hash.update(chunk)
        self.size += len(chunk)
        return chunk

    def digest(self) -> str:
        return self._hash.hexdigest()


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.at + size
        chunk = bytes(self.data[self.at : end])
        self.at += len(chunk)
        return chunk


# ------------------------------------------------------------------------------------------ receipts


@dataclass(frozen=True, slots=True)
class ImportReceipt:
    """The new operator's answer to one batch: imported (each letter: imported, or present already) or refused."""

    switch_id: str
    seq: int
    sender: str  # the importing operator
    to_operator: str
    holder: str
    manifest_sha256: str
    accepted: bool
    at: datetime
    letters: tuple[tuple[str, str, str], ...] = ()  # (uid, origin, imported | present)
    reason: str | None = None


def build_receipt(receipt: ImportReceipt, keys: KeyPair) -> bytes:
    """The signed ImportReceipt."""
    root = etree.Element(f"{_P}{Kind.RECEIPT.value}", nsmap={"p": NS})
    for name, value in (
        ("Switch", receipt.switch_id),
        ("Batch", str(receipt.seq)),
        ("Sender", receipt.sender),
        ("To", receipt.to_operator),
        ("Holder", receipt.holder),
        ("ManifestSHA256", receipt.manifest_sha256),
        ("Status", "imported" if receipt.accepted else "refused"),
        ("Time", _utc(receipt.at)),
    ):
        _sub(root, name, value)
    if receipt.reason is not None:
        _sub(root, "Reason", receipt.reason[:2000])
    for uid, origin, outcome in receipt.letters:
        _sub(root, "Letter", Uid=uid, Origin=origin, Outcome=outcome)
    return _signed(root, keys)


def read_receipt(data: bytes, signer: x509.Certificate) -> ImportReceipt:
    """An ImportReceipt verified with the new operator's certificate (TransferRefused otherwise)."""
    root = _verified(data, Kind.RECEIPT, signer)
    reason = root.find(f"{_P}Reason")
    try:
        seq = int(_text(root, "Batch"))
    except ValueError:
        raise TransferRefused("the Batch is not a number") from None
    letters = tuple(
        (e.get("Uid") or "", e.get("Origin") or "", e.get("Outcome") or "") for e in root.iterfind(f"{_P}Letter")
    )
    return ImportReceipt(
        _text(root, "Switch"),
        seq,
        _text(root, "Sender"),
        _text(root, "To"),
        _text(root, "Holder"),
        _text(root, "ManifestSHA256"),
        _text(root, "Status") == "imported",
        _moment(_text(root, "Time")),
        letters,
        None if reason is None else string_value(reason),
    )


def batches(letters: Sequence[Letter], *, max_letters: int, max_bytes: int) -> Iterator[list[Letter]]:
    """Letters in order, cut into batches of at most ``max_letters`` and ``max_bytes`` (a larger letter alone)."""
    batch: list[Letter] = []
    size = 0
    for letter in letters:
        if batch and (len(batch) >= max_letters or size + letter.size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(letter)
        size += letter.size
    if batch:
        yield batch


def uids(letters: Iterable[Letter]) -> list[str]:
    """The letters' uids, in order."""
    return [letter.uid for letter in letters]
