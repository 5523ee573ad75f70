"""The one SMP data model every flavour (Peppol, OASIS BDXR SMP 1.0, OASIS SMP 2.0) is rendered from and read into."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from smp.identifiers import Identifier


class Flavour(StrEnum):
    """The three SMP document families; the value is the root namespace of a ServiceMetadata document."""

    PEPPOL = "http://busdox.org/serviceMetadata/publishing/1.0/"
    OASIS1 = "http://docs.oasis-open.org/bdxr/ns/SMP/2016/05"
    OASIS2 = "http://docs.oasis-open.org/bdxr/ns/SMP/2/ServiceMetadata"


class TransportProfile(StrEnum):
    """Transport profile ids as SMP endpoints name them."""

    EDELIVERY_AS4_1_15 = "bdxr-transport-ebms3-as4-v1p0"
    # eDelivery AS4 2.0 follows the v1p0 naming pattern; no registry lists another id for it yet.
    EDELIVERY_AS4_2_0 = "bdxr-transport-ebms3-as4-v2p0"
    PEPPOL_AS4 = "peppol-transport-as4-v2_0"
    SDK_AS4 = "digg-transport-as4-v1_0"


class CertPubUsage(StrEnum):
    """SDK CertPub certificate type codes (C3.4.5)."""

    SIGNING = "urn:fdc:digg.se:edelivery:certpub:signing-cert"
    ENCRYPTION = "urn:fdc:digg.se:edelivery:certpub:encryption-cert"


CERTPUB_EXTENSION_ID = "urn:fdc:digg.se:edelivery:xml-extension:smp-certpub:1.0"


@dataclass(frozen=True, slots=True)
class PublishedCertificate:
    """A participant certificate published through SDK's CertPub extension (DER bytes and what it is for)."""

    usage: CertPubUsage
    der: bytes


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    """One endpoint of a process: where to send, under which transport profile, and the AP's certificate (DER)."""

    transport_profile: str
    url: str
    certificate: bytes
    require_business_level_signature: bool = False
    activation: datetime | None = None
    expiration: datetime | None = None
    description: str = ""
    technical_contact: str = ""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process (None means any, as in SMP 2.0's ProcessMetadata without a Process) and its endpoints."""

    process: Identifier | None
    endpoints: tuple[EndpointInfo, ...]


@dataclass(frozen=True, slots=True)
class Redirect:
    """Ask another SMP: its URL for this document and, in SMP 1.0, the subject unique id of its signing cert."""

    href: str
    certificate_uid: str = ""
    certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceMetadata:
    """What one participant accepts for one document type: processes with endpoints, or a Redirect."""

    participant: Identifier
    document: Identifier
    processes: tuple[ProcessInfo, ...] = ()
    redirect: Redirect | None = None
    certpub: tuple[PublishedCertificate, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class ServiceGroup:
    """A participant and the document types it has metadata for."""

    participant: Identifier
    documents: tuple[Identifier, ...] = ()
