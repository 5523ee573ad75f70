"""Enveloped XML-DSig over a whole document, as the SDK XHE and the Mina meddelanden layers use it (python-xmlsec).

Signing (Mina meddelanden's reference code, ``se.gov.minameddelanden.common.sign.SignatureUtils``): RSA-SHA256
(ECDSA-SHA256 for an EC key), SHA-256 digest, SignedInfo in exclusive C14N, one Reference ``URI=""`` with the
enveloped transform, KeyInfo/X509Data with the subject name and the certificate. We add an exclusive C14N
transform to the Reference: Mina meddelanden documents are signed standalone and then re-wrapped (a
SignedDelivery inside a SealedDelivery, a SealedDelivery renamed ``deliverSecure`` in the SOAP body), and
exclusive C14N keeps the digest independent of the namespaces the new ancestors declare.

Verifying ("see what is signed"): exactly one ``ds:Signature`` child of the root; one Reference, ``URI=""`` or
``#`` + the root's ``Id`` (so the signature covers the whole document and nothing can be wrapped beside it);
only the enveloped and C14N transforms; algorithms from an allow-list (SHA-1 only through the explicit legacy
set); then xmlsec checks digest and signature value. The key is the expected certificate's when the caller names
one (KeyInfo is then ignored), otherwise the KeyInfo certificate's; trust in that certificate is the caller's step.
The document is verified as a standalone, re-parsed copy, which is how the layers were signed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.core.xml import parse_xml
from accesspoint.envelopes._common import MAX_DOCUMENT_BYTES, EnvelopeError, Finding, b64decode, standalone_bytes, text
from accesspoint.security.keys import KeyPair, load_der_certificate

_DS = NS.DS.value
SIGNATURE = f"{{{_DS}}}Signature"


class DsigAlgorithm(StrEnum):
    """Algorithm URIs an enveloped document signature may name."""

    C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    C14N_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
    C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
    EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
    ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
    RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
    RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


LEGACY_SHA1: frozenset[str] = frozenset({DsigAlgorithm.RSA_SHA1, DsigAlgorithm.SHA1})
ALLOWED: frozenset[str] = frozenset(DsigAlgorithm) - LEGACY_SHA1
_TRANSFORMS = frozenset(
    {
        DsigAlgorithm.ENVELOPED,
        DsigAlgorithm.C14N,
        DsigAlgorithm.C14N_COMMENTS,
        DsigAlgorithm.C14N11,
        DsigAlgorithm.EXC_C14N,
    }
)


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """A signature that covers the whole document: who signed (the certificate whose key verified it) and how."""

    signer: x509.Certificate
    algorithms: frozenset[str]


def sign_enveloped(root: etree._Element, keys: KeyPair) -> etree._Element:
    """Append an enveloped signature over the whole of ``root`` (in place, as its last child); returns ``root``."""
    if isinstance(keys.private_key, rsa.RSAPrivateKey):
        method = xmlsec.constants.TransformRsaSha256
    elif isinstance(keys.private_key, ec.EllipticCurvePrivateKey):
        method = xmlsec.constants.TransformEcdsaSha256
    else:
        raise ValueError("document signatures need an RSA or EC key")
    template = xmlsec.template.create(root, xmlsec.constants.TransformExclC14N, method, ns="ds")
    root.append(template)
    reference = xmlsec.template.add_reference(template, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformExclC14N)
    x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(template))
    xmlsec.template.x509_data_add_subject_name(x509_data)
    xmlsec.template.x509_data_add_certificate(x509_data)
    key_pem = keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = xmlsec.Key.from_memory(key_pem, xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_memory(
        keys.certificate.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatPem
    )
    context = xmlsec.SignatureContext()
    context.key = key
    context.sign(template)
    return root


def _fail(message: str) -> EnvelopeError:
    return EnvelopeError(Finding("SIGNATURE", message))


def _only(parent: etree._Element, name: str) -> etree._Element:
    found = parent.findall(f"{{{_DS}}}{name}")
    if len(found) != 1:
        raise _fail(f"expected one ds:{name}, found {len(found)}")
    return found[0]


def _check_structure(root: etree._Element, allowed: frozenset[str]) -> tuple[etree._Element, frozenset[str]]:
    signatures = root.findall(SIGNATURE)
    if len(signatures) != 1:
        raise _fail(f"expected one enveloped ds:Signature as a child of {root.tag}, found {len(signatures)}")
    signature = signatures[0]
    signed_info = _only(signature, "SignedInfo")
    used = {
        _only(signed_info, "CanonicalizationMethod").get("Algorithm") or "",
        _only(signed_info, "SignatureMethod").get("Algorithm") or "",
    }
    reference = _only(signed_info, "Reference")
    uri = reference.get("URI")
    root_id = root.get("Id")
    if uri != "" and not (root_id and uri == f"#{root_id}"):
        raise _fail(f"the Reference must cover the whole document, not {uri!r}")
    used.add(_only(reference, "DigestMethod").get("Algorithm") or "")
    transforms = [t.get("Algorithm") or "" for t in reference.iterfind(f"{{{_DS}}}Transforms/{{{_DS}}}Transform")]
    if DsigAlgorithm.ENVELOPED not in transforms:
        raise _fail("the Reference lacks the enveloped-signature transform")
    unexpected = sorted(set(transforms) - _TRANSFORMS)
    if unexpected:
        raise _fail(f"transform not allowed: {', '.join(unexpected)}")
    used.update(transforms)
    refused = sorted(used - allowed - _TRANSFORMS)
    if refused:
        raise _fail(f"algorithm not allowed: {', '.join(refused)}")
    return signature, frozenset(used)


def _key_info_certificate(signature: etree._Element) -> x509.Certificate:
    certificates = signature.findall(f"{{{_DS}}}KeyInfo/{{{_DS}}}X509Data/{{{_DS}}}X509Certificate")
    if len(certificates) != 1:
        raise _fail("KeyInfo must carry the signer's certificate (one X509Certificate)")
    try:
        return load_der_certificate(b64decode(text(certificates[0]), "X509Certificate"))
    except (ValueError, EnvelopeError):
        raise _fail("the KeyInfo certificate cannot be read") from None


def standalone(element: etree._Element) -> etree._Element:
    """``element`` re-parsed as the root of a document of its own (a root keeps the comments and processing
    instructions beside it; a subtree carries its in-scope namespaces over).

    Re-parsing also matters for trees that xmlsec has just written into: lxml's ``find`` matches names by their
    interned pointer and misses the nodes libxmlsec created, so a signature made in memory would not be found."""
    source: etree._Element | etree._ElementTree = element.getroottree() if element.getparent() is None else element
    return parse_xml(standalone_bytes(source), max_bytes=MAX_DOCUMENT_BYTES, what="signed document")


def verify_enveloped(
    element: etree._Element,
    *,
    expected: x509.Certificate | None = None,
    allowed: frozenset[str] = ALLOWED,
) -> VerifiedSignature:
    """Verify the enveloped signature over the whole of ``element`` (taken as a standalone document)."""
    root = standalone(element)
    signature, used = _check_structure(root, allowed)
    signer = expected if expected is not None else _key_info_certificate(signature)
    try:
        key = xmlsec.Key.from_memory(
            signer.public_bytes(serialization.Encoding.DER), xmlsec.constants.KeyDataFormatCertDer
        )
    except xmlsec.Error:
        raise _fail("the signer's certificate holds no usable key") from None
    context = xmlsec.SignatureContext()
    context.key = key
    if root.get("Id"):
        context.register_id(root, "Id")
    try:
        context.verify(signature)
    except xmlsec.Error:
        raise _fail("the signature does not verify (digest or signature value)") from None
    return VerifiedSignature(signer, used)


def verify_enveloped_by_one_of(
    element: etree._Element, certificates: Iterable[x509.Certificate], *, refused: str
) -> VerifiedSignature:
    """``verify_enveloped`` with the first of ``certificates`` the signature verifies with (tried in order);
    EnvelopeError(``refused``) when it verifies with none of them."""
    for certificate in certificates:
        try:
            return verify_enveloped(element, expected=certificate)
        except EnvelopeError:
            continue
    raise EnvelopeError(refused)
