"""SMP documents to and from the model: Peppol (busdox), OASIS BDXR SMP 1.0 and OASIS SMP 2.0.

Rendering produces unsigned trees (``smp.signature`` signs them as each flavour expects); parsing accepts the
signed or unsigned form and ignores the signature, which the caller has verified on the same tree before.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography import x509
from lxml import etree

from accesspoint.core.xml import holds_elements, string_value
from smp.identifiers import Identifier
from smp.model import (
    CERTPUB_EXTENSION_ID,
    CertPubUsage,
    EndpointInfo,
    Flavour,
    ProcessInfo,
    PublishedCertificate,
    Redirect,
    ServiceGroup,
    ServiceMetadata,
)

PEPPOL = Flavour.PEPPOL.value
BUSDOX_IDS = "http://busdox.org/transport/identifiers/1.0/"
WSA = "http://www.w3.org/2005/08/addressing"
OASIS1 = Flavour.OASIS1.value
SMP2_SG = "http://docs.oasis-open.org/bdxr/ns/SMP/2/ServiceGroup"
SMP2_SM = Flavour.OASIS2.value
SMP2_AGG = "http://docs.oasis-open.org/bdxr/ns/SMP/2/AggregateComponents"
SMP2_BASIC = "http://docs.oasis-open.org/bdxr/ns/SMP/2/BasicComponents"
SMP2_EXT = "http://docs.oasis-open.org/bdxr/ns/SMP/2/ExtensionComponents"
DS = "http://www.w3.org/2000/09/xmldsig#"


class DocumentError(ValueError):
    """An SMP document that is not one of the three flavours or lacks what the model needs."""


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _sub(parent: etree._Element, ns: str, name: str, text: str | None = None, **attrs: str) -> etree._Element:
    element = etree.SubElement(parent, _q(ns, name), attrs)
    if text is not None:
        element.text = text
    return element


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------ render


def render_service_group(group: ServiceGroup, flavour: Flavour, base_url: str) -> etree._Element:
    """The ServiceGroup of ``flavour``; references are absolute URLs under ``base_url`` (SMP 1) or ids (SMP 2)."""
    base = base_url.rstrip("/")
    part = group.participant
    if flavour is Flavour.OASIS2:
        root = etree.Element(_q(SMP2_SG, "ServiceGroup"), nsmap={"sg": SMP2_SG, "smb": SMP2_BASIC, "sma": SMP2_AGG})
        _sub(root, SMP2_BASIC, "SMPVersionID", "2.0")
        _sub(root, SMP2_BASIC, "ParticipantID", part.value, schemeID=part.scheme)
        for doc in group.documents:
            ref = _sub(root, SMP2_AGG, "ServiceReference")
            _sub(ref, SMP2_BASIC, "ID", doc.value, schemeID=doc.scheme)
        return root
    if flavour is Flavour.PEPPOL:
        root = etree.Element(_q(PEPPOL, "ServiceGroup"), nsmap={"smp": PEPPOL, "id": BUSDOX_IDS})
        _sub(root, BUSDOX_IDS, "ParticipantIdentifier", part.value, scheme=part.scheme)
    else:
        root = etree.Element(_q(OASIS1, "ServiceGroup"), nsmap={"smp": OASIS1})
        _sub(root, OASIS1, "ParticipantIdentifier", part.value, scheme=part.scheme)
    ns = flavour.value
    collection = _sub(root, ns, "ServiceMetadataReferenceCollection")
    for doc in group.documents:
        _sub(
            collection, ns, "ServiceMetadataReference", href=f"{base}/{part.url_segment()}/services/{doc.url_segment()}"
        )
    return root


def render_service_metadata(metadata: ServiceMetadata, flavour: Flavour) -> etree._Element:
    """The unsigned document: ``SignedServiceMetadata`` wrapping ``ServiceMetadata`` (SMP 1) or ``ServiceMetadata``."""
    if flavour is Flavour.OASIS2:
        return _render_smp2(metadata)
    ns = flavour.value
    ids = BUSDOX_IDS if flavour is Flavour.PEPPOL else ns
    nsmap = {"smp": PEPPOL, "id": BUSDOX_IDS, "wsa": WSA} if flavour is Flavour.PEPPOL else {"smp": OASIS1}
    signed = etree.Element(_q(ns, "SignedServiceMetadata"), nsmap=nsmap)
    inner = _sub(signed, ns, "ServiceMetadata")
    if metadata.redirect is not None:
        redirect = _sub(inner, ns, "Redirect", href=metadata.redirect.href)
        _sub(redirect, ns, "CertificateUID", _certificate_uid(metadata.redirect))
        return signed
    info = _sub(inner, ns, "ServiceInformation")
    _sub(info, ids, "ParticipantIdentifier", metadata.participant.value, scheme=metadata.participant.scheme)
    _sub(info, ids, "DocumentIdentifier", metadata.document.value, scheme=metadata.document.scheme)
    process_list = _sub(info, ns, "ProcessList")
    for process in metadata.processes:
        if process.process is None:
            raise DocumentError("SMP 1.0 needs a process identifier for every process (use bdx:noprocess)")
        element = _sub(process_list, ns, "Process")
        _sub(element, ids, "ProcessIdentifier", process.process.value, scheme=process.process.scheme)
        endpoints = _sub(element, ns, "ServiceEndpointList")
        for endpoint in process.endpoints:
            _render_smp1_endpoint(
                _sub(endpoints, ns, "Endpoint", transportProfile=endpoint.transport_profile), ns, endpoint
            )
    if metadata.certpub and flavour is Flavour.OASIS1:
        extension = _sub(info, ns, "Extension")
        _sub(extension, ns, "ExtensionID", CERTPUB_EXTENSION_ID)
        _render_certpub(extension, metadata.certpub)
    return signed


def _certificate_uid(redirect: Redirect) -> str:
    """SMP 1.0 names the target SMP's signer by a UID; from an SMP 2.0 Redirect we derive its subject."""
    if redirect.certificate_uid or not redirect.certificates:
        return redirect.certificate_uid
    try:
        return x509.load_der_x509_certificate(redirect.certificates[0]).subject.rfc4514_string()
    except ValueError:
        return ""


def _render_smp1_endpoint(element: etree._Element, ns: str, endpoint: EndpointInfo) -> None:
    if ns == PEPPOL:
        _sub(_sub(element, WSA, "EndpointReference"), WSA, "Address", endpoint.url)
    else:
        _sub(element, ns, "EndpointURI", endpoint.url)
    _sub(element, ns, "RequireBusinessLevelSignature", "true" if endpoint.require_business_level_signature else "false")
    if endpoint.activation is not None:
        _sub(element, ns, "ServiceActivationDate", _datetime(endpoint.activation))
    if endpoint.expiration is not None:
        _sub(element, ns, "ServiceExpirationDate", _datetime(endpoint.expiration))
    _sub(element, ns, "Certificate", _b64(endpoint.certificate))
    _sub(element, ns, "ServiceDescription", endpoint.description)
    _sub(element, ns, "TechnicalContactUrl", endpoint.technical_contact)


def _render_certpub(parent: etree._Element, certificates: Iterable[PublishedCertificate]) -> None:
    for published in certificates:
        certificate = etree.SubElement(parent, _q(SMP2_AGG, "Certificate"), nsmap={"sma": SMP2_AGG, "smb": SMP2_BASIC})
        _sub(certificate, SMP2_BASIC, "TypeCode", published.usage.value)
        _sub(certificate, SMP2_BASIC, "ContentBinaryObject", _b64(published.der), mimeCode="application/base64")


def _render_smp2(metadata: ServiceMetadata) -> etree._Element:
    nsmap = {"sm": SMP2_SM, "sma": SMP2_AGG, "smb": SMP2_BASIC, "ext": SMP2_EXT}
    root = etree.Element(_q(SMP2_SM, "ServiceMetadata"), nsmap=nsmap)
    if metadata.certpub:
        extension = _sub(_sub(root, SMP2_EXT, "SMPExtensions"), SMP2_EXT, "SMPExtension")
        _sub(extension, SMP2_BASIC, "ID", CERTPUB_EXTENSION_ID)
        _render_certpub(_sub(extension, SMP2_EXT, "ExtensionContent"), metadata.certpub)
    _sub(root, SMP2_BASIC, "SMPVersionID", "2.0")
    _sub(root, SMP2_BASIC, "ID", metadata.document.value, schemeID=metadata.document.scheme)
    _sub(root, SMP2_BASIC, "ParticipantID", metadata.participant.value, schemeID=metadata.participant.scheme)
    if metadata.redirect is not None:
        redirect = _sub(_sub(root, SMP2_AGG, "ProcessMetadata"), SMP2_AGG, "Redirect")
        _sub(redirect, SMP2_BASIC, "PublisherURI", metadata.redirect.href)
        for der in metadata.redirect.certificates:
            _sub(
                _sub(redirect, SMP2_AGG, "Certificate"),
                SMP2_BASIC,
                "ContentBinaryObject",
                _b64(der),
                mimeCode="application/base64",
            )
        return root
    for process in metadata.processes:
        element = _sub(root, SMP2_AGG, "ProcessMetadata")
        if process.process is not None:
            _sub(
                _sub(element, SMP2_AGG, "Process"),
                SMP2_BASIC,
                "ID",
                process.process.value,
                schemeID=process.process.scheme,
            )
        for endpoint in process.endpoints:
            item = _sub(element, SMP2_AGG, "Endpoint")
            _sub(item, SMP2_BASIC, "TransportProfileID", endpoint.transport_profile)
            if endpoint.description:
                _sub(item, SMP2_BASIC, "Description", endpoint.description)
            if endpoint.technical_contact:
                _sub(item, SMP2_BASIC, "Contact", endpoint.technical_contact)
            _sub(item, SMP2_BASIC, "AddressURI", endpoint.url)
            if endpoint.activation is not None:
                _sub(item, SMP2_BASIC, "ActivationDate", endpoint.activation.astimezone(UTC).date().isoformat())
            if endpoint.expiration is not None:
                _sub(item, SMP2_BASIC, "ExpirationDate", endpoint.expiration.astimezone(UTC).date().isoformat())
            certificate = _sub(item, SMP2_AGG, "Certificate")
            _sub(
                certificate,
                SMP2_BASIC,
                "ContentBinaryObject",
                _b64(endpoint.certificate),
                mimeCode="application/base64",
            )
    return root


# ------------------------------------------------------------------------------------------------- parse


def _text(element: etree._Element | None) -> str:
    """The value of an element (its string-value, as signed), trimmed; '' when absent.

    Every SMP value is of simple type: an element inside one is refused (there is no schema check here).
    """
    if element is None:
        return ""
    if holds_elements(element):
        raise DocumentError(f"{etree.QName(element).localname} holds an element where a value belongs")
    return string_value(element).strip()


def _identifier(element: etree._Element | None, attribute: str, what: str) -> Identifier:
    if element is None or not _text(element):
        raise DocumentError(f"{what} is missing")
    return Identifier(element.get(attribute) or "", _text(element))


def _decode_b64(text: str, what: str) -> bytes:
    cleaned = "".join(text.replace("-----BEGIN CERTIFICATE-----", "").replace("-----END CERTIFICATE-----", "").split())
    try:
        return base64.b64decode(cleaned, validate=True)
    except (binascii.Error, ValueError):
        raise DocumentError(f"{what} is not base64") from None


def _parse_datetime(text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DocumentError(f"not a date or dateTime: {text[:40]!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def flavour_of(root: etree._Element) -> Flavour:
    """The flavour of a ServiceGroup or (Signed)ServiceMetadata root element."""
    namespace = etree.QName(root).namespace
    if namespace in (SMP2_SM, SMP2_SG):
        return Flavour.OASIS2
    for flavour in (Flavour.PEPPOL, Flavour.OASIS1):
        if namespace == flavour.value:
            return flavour
    raise DocumentError(f"not an SMP document: root {root.tag!r}")


def parse_service_group(root: etree._Element) -> tuple[Identifier, tuple[str, ...]]:
    """The participant and the references (hrefs in SMP 1, ``scheme::value`` document ids in SMP 2)."""
    flavour = flavour_of(root)
    if etree.QName(root).localname != "ServiceGroup":
        raise DocumentError(f"expected a ServiceGroup, got {etree.QName(root).localname}")
    if flavour is Flavour.OASIS2:
        participant = _identifier(root.find(_q(SMP2_BASIC, "ParticipantID")), "schemeID", "ParticipantID")
        refs = tuple(
            str(_identifier(ref.find(_q(SMP2_BASIC, "ID")), "schemeID", "ServiceReference/ID"))
            for ref in root.iterchildren(_q(SMP2_AGG, "ServiceReference"))
        )
        return participant, refs
    ids = BUSDOX_IDS if flavour is Flavour.PEPPOL else flavour.value
    participant = _identifier(root.find(_q(ids, "ParticipantIdentifier")), "scheme", "ParticipantIdentifier")
    hrefs = tuple(
        ref.get("href") or ""
        for ref in root.iterfind(f"{_q(flavour.value, 'ServiceMetadataReferenceCollection')}/*")
        if etree.QName(ref).localname == "ServiceMetadataReference"
    )
    return participant, hrefs


def parse_service_metadata(root: etree._Element) -> ServiceMetadata:
    """ServiceMetadata (signed or not) of any flavour to the model; a Redirect leaves the ids empty."""
    flavour = flavour_of(root)
    if flavour is Flavour.OASIS2:
        return _parse_smp2(root)
    ns = flavour.value
    inner = root.find(_q(ns, "ServiceMetadata")) if etree.QName(root).localname == "SignedServiceMetadata" else root
    if inner is None or etree.QName(inner).localname != "ServiceMetadata":
        raise DocumentError("no ServiceMetadata element")
    redirect = inner.find(_q(ns, "Redirect"))
    if redirect is not None:
        target = Redirect(redirect.get("href") or "", _text(redirect.find(_q(ns, "CertificateUID"))))
        if not target.href:
            raise DocumentError("Redirect without href")
        return ServiceMetadata(Identifier("", ""), Identifier("", ""), redirect=target)
    info = inner.find(_q(ns, "ServiceInformation"))
    if info is None:
        raise DocumentError("ServiceMetadata holds neither ServiceInformation nor Redirect")
    ids = BUSDOX_IDS if flavour is Flavour.PEPPOL else ns
    participant = _identifier(info.find(_q(ids, "ParticipantIdentifier")), "scheme", "ParticipantIdentifier")
    document = _identifier(info.find(_q(ids, "DocumentIdentifier")), "scheme", "DocumentIdentifier")
    processes = []
    for process in info.iterfind(f"{_q(ns, 'ProcessList')}/{_q(ns, 'Process')}"):
        process_id = _identifier(process.find(_q(ids, "ProcessIdentifier")), "scheme", "ProcessIdentifier")
        endpoints = tuple(
            _parse_smp1_endpoint(endpoint, ns)
            for endpoint in process.iterfind(f"{_q(ns, 'ServiceEndpointList')}/{_q(ns, 'Endpoint')}")
        )
        processes.append(ProcessInfo(process_id, endpoints))
    certpub: list[PublishedCertificate] = []
    for extension in info.iterchildren(_q(ns, "Extension")):
        if _text(extension.find(_q(ns, "ExtensionID"))) == CERTPUB_EXTENSION_ID:
            certpub.extend(_parse_certpub(extension))
    return ServiceMetadata(participant, document, tuple(processes), certpub=tuple(certpub))


def _parse_smp1_endpoint(element: etree._Element, ns: str) -> EndpointInfo:
    if ns == PEPPOL:
        url = _text(element.find(f"{_q(WSA, 'EndpointReference')}/{_q(WSA, 'Address')}"))
    else:
        url = _text(element.find(_q(ns, "EndpointURI")))
    profile = element.get("transportProfile") or ""
    if not url or not profile:
        raise DocumentError("Endpoint without address or transportProfile")
    return EndpointInfo(
        transport_profile=profile,
        url=url,
        certificate=_decode_b64(_text(element.find(_q(ns, "Certificate"))), "endpoint Certificate"),
        require_business_level_signature=_text(element.find(_q(ns, "RequireBusinessLevelSignature"))) == "true",
        activation=_parse_datetime(_text(element.find(_q(ns, "ServiceActivationDate")))),
        expiration=_parse_datetime(_text(element.find(_q(ns, "ServiceExpirationDate")))),
        description=_text(element.find(_q(ns, "ServiceDescription"))),
        technical_contact=_text(element.find(_q(ns, "TechnicalContactUrl"))),
    )


def _parse_certpub(parent: etree._Element) -> list[PublishedCertificate]:
    found = []
    for certificate in parent.iterchildren(_q(SMP2_AGG, "Certificate")):
        code = _text(certificate.find(_q(SMP2_BASIC, "TypeCode")))
        if code in {usage.value for usage in CertPubUsage}:
            der = _decode_b64(_text(certificate.find(_q(SMP2_BASIC, "ContentBinaryObject"))), "CertPub certificate")
            found.append(PublishedCertificate(CertPubUsage(code), der))
    return found


def _parse_smp2(root: etree._Element) -> ServiceMetadata:
    if etree.QName(root).localname != "ServiceMetadata":
        raise DocumentError(f"expected ServiceMetadata, got {etree.QName(root).localname}")
    document = _identifier(root.find(_q(SMP2_BASIC, "ID")), "schemeID", "ID")
    participant = _identifier(root.find(_q(SMP2_BASIC, "ParticipantID")), "schemeID", "ParticipantID")
    certpub: list[PublishedCertificate] = []
    for extension in root.iterfind(f"{_q(SMP2_EXT, 'SMPExtensions')}/{_q(SMP2_EXT, 'SMPExtension')}"):
        content = extension.find(_q(SMP2_EXT, "ExtensionContent"))
        if _text(extension.find(_q(SMP2_BASIC, "ID"))) == CERTPUB_EXTENSION_ID and content is not None:
            certpub.extend(_parse_certpub(content))
    processes: list[ProcessInfo] = []
    for metadata in root.iterchildren(_q(SMP2_AGG, "ProcessMetadata")):
        redirect = metadata.find(_q(SMP2_AGG, "Redirect"))
        if redirect is not None:
            href = _text(redirect.find(_q(SMP2_BASIC, "PublisherURI")))
            if not href:
                raise DocumentError("Redirect without PublisherURI")
            certificates = tuple(
                _decode_b64(_text(c.find(_q(SMP2_BASIC, "ContentBinaryObject"))), "Redirect certificate")
                for c in redirect.iterchildren(_q(SMP2_AGG, "Certificate"))
            )
            return ServiceMetadata(participant, document, redirect=Redirect(href, certificates=certificates))
        endpoints = tuple(_parse_smp2_endpoint(e) for e in metadata.iterchildren(_q(SMP2_AGG, "Endpoint")))
        process_ids: list[Identifier | None] = [
            _identifier(p.find(_q(SMP2_BASIC, "ID")), "schemeID", "Process/ID")
            for p in metadata.iterchildren(_q(SMP2_AGG, "Process"))
        ]
        processes.extend(ProcessInfo(pid, endpoints) for pid in process_ids or [None])
    return ServiceMetadata(participant, document, tuple(processes), certpub=tuple(certpub))


def _parse_smp2_endpoint(element: etree._Element) -> EndpointInfo:
    profile = _text(element.find(_q(SMP2_BASIC, "TransportProfileID")))
    url = _text(element.find(_q(SMP2_BASIC, "AddressURI")))
    if not profile or not url:
        raise DocumentError("Endpoint without TransportProfileID or AddressURI")
    certificates = [
        _decode_b64(_text(c.find(_q(SMP2_BASIC, "ContentBinaryObject"))), "endpoint Certificate")
        for c in element.iterchildren(_q(SMP2_AGG, "Certificate"))
    ]
    return EndpointInfo(
        transport_profile=profile,
        url=url,
        certificate=certificates[0] if certificates else b"",
        activation=_parse_datetime(_text(element.find(_q(SMP2_BASIC, "ActivationDate")))),
        expiration=_parse_datetime(_text(element.find(_q(SMP2_BASIC, "ExpirationDate")))),
        description=_text(element.find(_q(SMP2_BASIC, "Description"))),
        technical_contact=_text(element.find(_q(SMP2_BASIC, "Contact"))),
    )
