"""SMP signatures: the interop documents verify or fail as ../shared/interop/smp/README.md says; forgeries fail."""

from __future__ import annotations

import pytest
from lxml import etree

from accesspoint.core.xml import parse_xml
from accesspoint.testing.smp import metadata, pki
from smp.documents import DocumentError, parse_service_metadata, render_service_metadata
from smp.model import Flavour
from smp.signature import ALLOWED, LEGACY_SHA1, SignatureError, sign_document, verify_document
from tests.conftest import interop_path

LEGACY = ALLOWED | LEGACY_SHA1
# file -> (participant, transport profiles of its endpoints)
VALID = {
    "peppol-commons/signed-service-metadata2.xml": ("0088:5060482240009", ["busdox-transport-as2-ver1p0"]),
    "peppol-commons/signed-service-metadata3-c14n-inclusive.xml": (
        "0106:55872255",
        ["busdox-transport-as2-ver1p0", "peppol-transport-as4-v2_0"],
    ),
    "ph-xsds/servicemetadata1.xml": ("123456789", ["bpc-ebms3-as4-v1p0"]),
}


def _load(name: str) -> etree._Element:
    return parse_xml(interop_path(f"smp/{name}").read_bytes(), what=name)


@pytest.mark.parametrize("name", sorted(VALID))
def test_interop_signatures_verify(name: str) -> None:
    """signed-service-metadata2, -3 and ph-xsds servicemetadata1 (C14N 1.1, default-namespace trap) verify."""
    root = _load(name)
    verified = verify_document(root, allowed=LEGACY)
    participant, profiles = VALID[name]
    model = parse_service_metadata(verified.root)
    assert model.participant.value == participant
    assert [e.transport_profile for p in model.processes for e in p.endpoints] == profiles


def test_pretty_printed_peppol_document_fails() -> None:
    """signed-service-metadata1.xml was reformatted after signing: its signature fails."""
    with pytest.raises(SignatureError, match="does not verify"):
        verify_document(_load("peppol-commons/signed-service-metadata1.xml"), allowed=LEGACY)


def test_sha1_needs_the_legacy_allow_list() -> None:
    """The RSA-SHA1 Peppol vectors are refused under the default policy."""
    with pytest.raises(SignatureError, match="not allowed"):
        verify_document(_load("peppol-commons/signed-service-metadata2.xml"))


@pytest.mark.parametrize("name", sorted(VALID))
def test_one_changed_byte_of_signed_content_fails(name: str) -> None:
    """Changing an endpoint URL of a valid document breaks its signature."""
    data = interop_path(f"smp/{name}").read_bytes()
    tampered = data.replace(b"https://", b"https:/x", 1)
    assert tampered != data
    with pytest.raises(SignatureError):
        verify_document(parse_xml(tampered, what=name), allowed=LEGACY)


def test_cef_template_with_empty_signature_is_rejected() -> None:
    """The CEF SignedServiceMetadata template's empty ds:Signature is not a signature."""
    with pytest.raises((SignatureError, DocumentError)):
        verify_document(_load("phoss/cef-templates/SignedServiceMetadata-template.xml"))


def test_unsigned_and_doubly_signed_documents_are_rejected() -> None:
    """No signature, or a second one (a wrapping attempt), is refused before any cryptography."""
    with pytest.raises(SignatureError, match="exactly one"):
        verify_document(_load("ph-xsds/servicemetadata2-unsigned.xml"))
    root = sign_document(
        render_service_metadata(metadata("https://ap.example"), Flavour.OASIS1), pki().smp, Flavour.OASIS1
    )
    inner = root[0]
    inner.append(etree.fromstring(etree.tostring(root[-1])))
    with pytest.raises(SignatureError, match="exactly one"):
        verify_document(root)


def test_signature_not_over_the_whole_document_is_rejected() -> None:
    """A Reference to anything but URI="" is refused (the signed part could sit beside what is read)."""
    root = sign_document(
        render_service_metadata(metadata("https://ap.example"), Flavour.PEPPOL), pki().smp, Flavour.PEPPOL
    )
    reference = root.find(".//{http://www.w3.org/2000/09/xmldsig#}Reference")
    assert reference is not None
    reference.set("URI", "#other")
    with pytest.raises(SignatureError, match="whole document"):
        verify_document(root)


def test_phoss_placeholder_certificates_fail_cleanly() -> None:
    """The phoss rest-file certificates are not DER: the Peppol one is not even base64."""
    oasis = parse_service_metadata(_load("phoss/rest-files/bdxr1-service-metadata.xml"))
    assert oasis.processes[0].endpoints[0].certificate == b"blacert"
    with pytest.raises(DocumentError, match="not base64"):
        parse_service_metadata(_load("phoss/rest-files/peppol-service-metadata.xml"))
