"""Participant, document and process identifiers (``scheme::value``) and the DNS labels BDXL derives from them.

Hashing rules (see ../shared/interop/smp/README.md, "Hash vectors"):

* Peppol SML, SHA-256 form (Policy for use of Identifiers 4.4.0, POLICY 7): ``base32(sha256(lower(value)))``
  without ``=`` padding, lower case, under ``<label>.<scheme>.<zone>``; published as a U-NAPTR record.
* Peppol SML, legacy MD5 form: ``"B-" + hex(md5(lower(value)))`` under ``<label>.<scheme>.<zone>``; a CNAME.
* eDelivery BDXL 1.6: ``base32(sha256(value))`` of the value *as given* (no lowercasing); an ebCore party id
  URN is hashed whole and has no scheme label.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import quote

SEPARATOR = "::"
EBCORE_PREFIX = "urn:oasis:names:tc:ebcore:partyid-type:"


class IdentifierError(ValueError):
    """An identifier that is not ``scheme::value`` (or an ebCore URN where one is allowed)."""


class ParticipantScheme(StrEnum):
    """Participant identifier schemes."""

    ISO6523 = "iso6523-actorid-upis"


class DocumentScheme(StrEnum):
    """Document type identifier schemes."""

    BUSDOX = "busdox-docid-qns"
    PEPPOL_WILDCARD = "peppol-doctype-wildcard"
    BDX = "bdx-docid-qns"


class ProcessScheme(StrEnum):
    """Process identifier schemes (``bdx:noprocess`` is what SDK sends as its AS4 Service)."""

    CENBII = "cenbii-procid-ubl"


NO_PROCESS = "bdx:noprocess"


@dataclass(frozen=True, slots=True, order=True)
class Identifier:
    """A scheme-qualified identifier; ``value`` is kept as given (case matters only when hashing as-given)."""

    scheme: str
    value: str

    @classmethod
    def parse(cls, text: str, *, allow_ebcore: bool = False) -> Identifier:
        """``scheme::value``; with ``allow_ebcore`` also a whole ebCore party id URN (scheme = its type)."""
        scheme, sep, value = text.partition(SEPARATOR)
        if sep and scheme and value:
            return cls(scheme, value)
        if allow_ebcore and text.startswith(EBCORE_PREFIX) and text.count(":") > EBCORE_PREFIX.count(":"):
            # urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088:4035811991021 -> type up to the ICD.
            head, _, tail = text.rpartition(":")
            return cls(head, tail)
        raise IdentifierError(f"not a scheme::value identifier: {text[:200]!r}")

    @property
    def is_ebcore(self) -> bool:
        """True for an ebCore party id type used as the scheme."""
        return self.scheme.startswith(EBCORE_PREFIX)

    def __str__(self) -> str:
        return f"{self.scheme}{SEPARATOR}{self.value}"

    def url_segment(self) -> str:
        """The percent-encoded path segment of an SMP REST URL (``::`` -> ``%3A%3A``, ``#`` -> ``%23``)."""
        return quote(str(self), safe="")

    def key(self) -> str:
        """The store key: participant ids compare case-insensitively (Peppol Policy 1), so they are lowercased."""
        return str(self).lower()


def _base32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=")


def peppol_sha256_label(value: str) -> str:
    """Peppol's NAPTR label: lowercase base32 (no padding) of SHA-256 over the lowercased value."""
    return _base32(hashlib.sha256(value.lower().encode("utf-8")).digest()).lower()


def raw_sha256_label(value: str) -> str:
    """eDelivery BDXL 1.6's label: base32 (no padding) of SHA-256 over the value as given, lower case for DNS."""
    return _base32(hashlib.sha256(value.encode("utf-8")).digest()).lower()


def peppol_md5_label(value: str) -> str:
    """The legacy Peppol CNAME label: ``B-`` and the hex MD5 of the lowercased value."""
    # MD5 is what the deprecated scheme names, not a security control here.
    return "B-" + hashlib.md5(value.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def _zone(zone: str) -> str:
    return zone.strip().strip(".")


def peppol_naptr_name(participant: Identifier, zone: str) -> str:
    """``<sha256 label>.<scheme>.<zone>`` for Peppol's U-NAPTR lookup."""
    return f"{peppol_sha256_label(participant.value)}.{participant.scheme}.{_zone(zone)}"


def peppol_cname_name(participant: Identifier, zone: str) -> str:
    """``B-<md5>.<scheme>.<zone>`` for the legacy CNAME lookup."""
    return f"{peppol_md5_label(participant.value)}.{participant.scheme}.{_zone(zone)}"


def bdxl_naptr_name(participant: Identifier, zone: str) -> str:
    """eDelivery BDXL 1.6: an ebCore URN hashed whole under the zone, else ``<hash(value)>.<scheme>.<zone>``."""
    if participant.is_ebcore:
        return f"{raw_sha256_label(f'{participant.scheme}:{participant.value}')}.{_zone(zone)}"
    return f"{raw_sha256_label(participant.value)}.{participant.scheme}.{_zone(zone)}"
