"""Enveloped XML signatures over whole SMP documents (python-xmlsec), signed as each flavour expects.

Signing follows phoss-smp, the reference implementation the networks test against: RSA-SHA256 with a SHA-256
digest; SMP 1.0 (Peppol and OASIS) canonicalises SignedInfo with inclusive C14N 1.0, SMP 2.0 with C14N 1.1;
one Reference ``URI=""`` with only the enveloped transform; KeyInfo/X509Data with subject name and certificate.

Verifying: exactly one ``ds:Signature``, a child of the root, whose one Reference is ``URI=""`` (the whole
document, so nothing can be wrapped around or beside the signed content); algorithms from the allow-list
(SHA-1 only when the caller passes the legacy set, for pre-2022 Peppol responses); then xmlsec checks digest and
signature with the key of the certificate in KeyInfo. Trust in that certificate is a separate step
(``smp.client``), because the interop vectors must be checked at a fixed time with expired certificates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.xml import holds_elements, string_value
from accesspoint.security.keys import KeyPair, load_der_certificate
from smp.model import Flavour

DS = "http://www.w3.org/2000/09/xmldsig#"
_SIGNATURE = f"{{{DS}}}Signature"


class SmpAlgorithm(StrEnum):
    """Algorithm URIs that may appear in an SMP signature."""

    C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    C14N_COMMENTS = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments"
    C14N11 = "http://www.w3.org/2006/12/xml-c14n11"
    EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
    ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
    RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    RSA_SHA384 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384"
    RSA_SHA512 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512"
    ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
    SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
    RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
    SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"


ALLOWED: frozenset[str] = frozenset(SmpAlgorithm) - {SmpAlgorithm.RSA_SHA1, SmpAlgorithm.SHA1}
# Peppol SMPs signed with RSA-SHA1 until spec 1.3.0; old documents and the interop vectors still do.
LEGACY_SHA1: frozenset[str] = frozenset({SmpAlgorithm.RSA_SHA1, SmpAlgorithm.SHA1})


class SignatureError(ValueError):
    """An SMP signature that is missing, misplaced, uses a refused algorithm, or does not verify."""


@dataclass(frozen=True, slots=True)
class VerifiedDocument:
    """A document whose enveloped signature covers all of it, and the certificate whose key verified it."""

    root: etree._Element
    signer: x509.Certificate
    algorithms: frozenset[str]


def sign_document(root: etree._Element, keys: KeyPair, flavour: Flavour) -> etree._Element:
    """Append an enveloped signature to ``root`` (in place) as ``flavour`` expects; returns ``root``."""
    c14n = xmlsec.constants.TransformInclC14N11 if flavour is Flavour.OASIS2 else xmlsec.constants.TransformInclC14N
    template = xmlsec.template.create(root, c14n, xmlsec.constants.TransformRsaSha256, ns="ds")
    root.append(template)
    reference = xmlsec.template.add_reference(template, xmlsec.constants.TransformSha256, uri="")
    xmlsec.template.add_transform(reference, xmlsec.constants.TransformEnveloped)
    x509_data = xmlsec.template.add_x509_data(xmlsec.template.ensure_key_info(template))
    xmlsec.template.x509_data_add_subject_name(x509_data)
    xmlsec.template.x509_data_add_certificate(x509_data)
    context = xmlsec.SignatureContext()
    key_pem = keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = xmlsec.Key.from_memory(key_pem, xmlsec.constants.KeyDataFormatPem)
    key.load_cert_from_memory(
        keys.certificate.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatPem
    )
    context.key = key
    context.sign(template)
    return root


def _only(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = parent.findall(f"{{{DS}}}{tag}")
    if len(found) != 1:
        raise SignatureError(f"expected one ds:{tag} in {what}, found {len(found)}")
    return found[0]


def verify_document(root: etree._Element, *, allowed: frozenset[str] = ALLOWED) -> VerifiedDocument:
    """Check the enveloped signature over the whole of ``root``; SignatureError says what is wrong."""
    signatures = list(root.iter(_SIGNATURE))
    if len(signatures) != 1:
        raise SignatureError(f"expected exactly one ds:Signature, found {len(signatures)}")
    signature = signatures[0]
    if signature.getparent() is not root:
        raise SignatureError("ds:Signature is not a child of the document element")
    signed_info = _only(signature, "SignedInfo", "Signature")
    used = {
        _only(signed_info, "CanonicalizationMethod", "SignedInfo").get("Algorithm") or "",
        _only(signed_info, "SignatureMethod", "SignedInfo").get("Algorithm") or "",
    }
    reference = _only(signed_info, "Reference", "SignedInfo")
    if reference.get("URI") != "":
        raise SignatureError(f'the Reference must cover the whole document (URI=""), not {reference.get("URI")!r}')
    used.add(_only(reference, "DigestMethod", "Reference").get("Algorithm") or "")
    transforms = reference.findall(f"{{{DS}}}Transforms/{{{DS}}}Transform")
    used.update(t.get("Algorithm") or "" for t in transforms)
    if SmpAlgorithm.ENVELOPED not in {t.get("Algorithm") for t in transforms}:
        raise SignatureError("the Reference lacks the enveloped-signature transform")
    refused = sorted(used - allowed)
    if refused:
        raise SignatureError(f"algorithm not allowed: {', '.join(refused)}")
    certificates = signature.findall(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    if len(certificates) != 1 or holds_elements(certificates[0]) or not string_value(certificates[0]).strip():
        raise SignatureError("KeyInfo must carry the signer's certificate (one X509Certificate)")
    try:
        der = _b64decode(string_value(certificates[0]))
        signer = load_der_certificate(der)
        key = xmlsec.Key.from_memory(der, xmlsec.constants.KeyDataFormatCertDer)
    except (ValueError, xmlsec.Error):
        raise SignatureError("the KeyInfo certificate cannot be read") from None
    context = xmlsec.SignatureContext()
    context.key = key
    try:
        context.verify(signature)
    except xmlsec.Error:
        raise SignatureError("the signature does not verify (digest or signature value)") from None
    return VerifiedDocument(root, signer, frozenset(used))


def _b64decode(text: str) -> bytes:
    import base64

    return base64.b64decode("".join(text.split()), validate=True)
