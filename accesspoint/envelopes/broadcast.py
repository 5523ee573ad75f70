"""An operator broadcast (*operatörsmeddelande*): one message from the infrastructure owner to every holder, or to
a filtered group, sans-I/O.

``{urn:accesspoint:broadcast:1}Broadcast``: its id, the issuer (the infrastructure owner's party id), when it was
issued, the subject, the content (MIME type and base64) and the group (``Filter``: ``all``, ``persons`` or
``organisations``, and for persons optionally born on or before / on or after a date, read from the
personnummer), signed (enveloped XML-DSig) by the access point that issues it for the owner. The router sends one
to each operator FaR knows; each operator verifies the signature against the intermediaries it trusts and puts the
message in every mailbox of the group (``operators/twoway.py``), answering with how many.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from cryptography import x509
from lxml import etree

from accesspoint.envelopes._common import (
    EnvelopeError,
    b64decode,
    b64encode,
    expect_root,
    need,
    need_text,
    optional_text,
    parse_date,
    parse_datetime,
    parse_document,
    root_is,
    serialize,
    sub,
    text,
    xml_datetime,
)
from accesspoint.envelopes.signature import VerifiedSignature, sign_enveloped, verify_enveloped_by_one_of
from accesspoint.security.keys import KeyPair

BROADCAST_NS = "urn:accesspoint:broadcast:1"
_B = f"{{{BROADCAST_NS}}}"
BROADCAST = f"{_B}Broadcast"
# A broadcast is a notice, not a letter with files: its content is bounded so a fan-out to millions stays cheap.
MAX_CONTENT = 1024 * 1024


class Group(StrEnum):
    """Whom a broadcast is for."""

    ALL = "all"
    PERSONS = "persons"
    ORGANISATIONS = "organisations"


@dataclass(frozen=True, slots=True)
class Audience:
    """The group, and for persons an optional range of birth dates (inclusive)."""

    group: Group = Group.ALL
    born_on_or_after: date | None = None
    born_on_or_before: date | None = None

    def includes(self, recipient: str) -> bool:
        """Whether a mailbox (its key: 12 digits, or another identifier) belongs to the audience."""
        organisation = len(recipient) == 12 and recipient.isdigit() and recipient.startswith("16")
        person = len(recipient) == 12 and recipient.isdigit() and not organisation
        if self.group is Group.ORGANISATIONS:
            return organisation
        if self.group is Group.PERSONS and not person:
            return False
        if self.born_on_or_after is None and self.born_on_or_before is None:
            return True
        born = birth_date(recipient) if person else None
        if born is None:
            return False
        return (self.born_on_or_after is None or born >= self.born_on_or_after) and (
            self.born_on_or_before is None or born <= self.born_on_or_before
        )

    def describe(self) -> str:
        """One line for counts and logs."""
        ranges = []
        if self.born_on_or_after is not None:
            ranges.append(f"born on or after {self.born_on_or_after.isoformat()}")
        if self.born_on_or_before is not None:
            ranges.append(f"born on or before {self.born_on_or_before.isoformat()}")
        return " ".join([self.group.value, *ranges])


def birth_date(personnummer: str) -> date | None:
    """The birth date in a 12-digit personnummer or samordningsnummer (day + 60); None when it names none."""
    if len(personnummer) != 12 or not personnummer.isdigit():
        return None
    day = int(personnummer[6:8])
    try:
        return date(int(personnummer[:4]), int(personnummer[4:6]), day - 60 if day > 60 else day)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Broadcast:
    """One operator broadcast (see the module docstring)."""

    id: str
    issuer: str
    issued: datetime
    subject: str
    content_type: str
    body: bytes
    audience: Audience = Audience()


def build_broadcast(broadcast: Broadcast, keys: KeyPair) -> bytes:
    """The signed Broadcast document."""
    if len(broadcast.body) > MAX_CONTENT:
        raise EnvelopeError(f"a broadcast's content is at most {MAX_CONTENT} bytes")
    if not broadcast.subject.strip() or len(broadcast.subject) > 255:
        raise EnvelopeError("a broadcast has a subject of at most 255 characters")
    root = etree.Element(BROADCAST, nsmap={"b": BROADCAST_NS})
    sub(root, f"{_B}Id", broadcast.id)
    sub(root, f"{_B}Issuer", broadcast.issuer)
    sub(root, f"{_B}Issued", xml_datetime(broadcast.issued))
    sub(root, f"{_B}Subject", broadcast.subject)
    audience = broadcast.audience
    attributes = {"Group": audience.group.value}
    if audience.born_on_or_after is not None:
        attributes["BornOnOrAfter"] = audience.born_on_or_after.isoformat()
    if audience.born_on_or_before is not None:
        attributes["BornOnOrBefore"] = audience.born_on_or_before.isoformat()
    sub(root, f"{_B}Filter", **attributes)
    sub(root, f"{_B}Body", b64encode(broadcast.body), ContentType=broadcast.content_type)
    sign_enveloped(root, keys)
    return serialize(root)


def is_broadcast(data: bytes) -> bool:
    """Whether the bytes are a Broadcast document (by their root; nothing is verified)."""
    return root_is(data, BROADCAST)


def verify_broadcast(
    data: bytes | etree._Element, issuers: tuple[x509.Certificate, ...]
) -> tuple[Broadcast, VerifiedSignature]:
    """A Broadcast whose signature verifies with one of ``issuers``; EnvelopeError otherwise."""
    root = parse_document(data, what="Broadcast")
    expect_root(root, BROADCAST, "a Broadcast")
    signature = verify_enveloped_by_one_of(
        root, issuers, refused="the broadcast is signed by no intermediary this operator trusts"
    )
    found = need(root, f"{_B}Filter", "Filter")
    try:
        group = Group(found.get("Group") or "all")
    except ValueError:
        raise EnvelopeError("Filter/@Group is all, persons or organisations") from None

    def day(name: str) -> date | None:
        value = found.get(name)
        return None if value is None else parse_date(value, f"Filter/@{name}")

    body = need(root, f"{_B}Body", "Body")
    broadcast = Broadcast(
        id=need_text(root, f"{_B}Id", "Id"),
        issuer=need_text(root, f"{_B}Issuer", "Issuer"),
        issued=parse_datetime(need_text(root, f"{_B}Issued", "Issued"), "Issued"),
        subject=optional_text(root, f"{_B}Subject") or "",
        content_type=body.get("ContentType") or "text/plain",
        body=b64decode(text(body), "Body"),
        audience=Audience(group, day("BornOnOrAfter"), day("BornOnOrBefore")),
    )
    return broadcast, signature
