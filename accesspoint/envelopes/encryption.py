"""SDK end-to-end payload encryption (``tm-base-ext-sigenc``): XMLEnc 1.0 ``EncryptedData`` for the recipient.

SDK's choice (Transportmodell Utökad Bas; DIGG's examples): content AES-256-CBC, key transport RSA-OAEP
(``rsa-oaep-mgf1p``, SHA-1 digest and MGF1 as that URI defines), the recipient's certificate in the
EncryptedKey's KeyInfo; ``Type`` ``#Element`` for an XML payload, ``#Content`` for any other bytes (carried as
the base64 of the bytes). GCM was left out by SDK for .NET's sake. Order: encrypt, then sign the XHE; the receiver
checks the signature first and answers a decryption failure without detail (a padding oracle otherwise).
"""

from __future__ import annotations

import dataclasses

import xmlsec
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.namespaces import NS
from accesspoint.envelopes._common import EnvelopeError, Finding, b64decode, parse_document, text
from accesspoint.envelopes.xhe import XhePayload
from accesspoint.security.keys import KeyPair

XENC = NS.XENC.value
_ELEMENT = f"{XENC}Element"
_CONTENT = f"{XENC}Content"
_AES256_CBC = f"{XENC}aes256-cbc"
_RSA_OAEP = f"{XENC}rsa-oaep-mgf1p"


def encrypt_payload(content: bytes, recipient: x509.Certificate, *, xml: bool = True) -> bytes:
    """``content`` (an XML document when ``xml``, else any bytes) as an EncryptedData only ``recipient`` opens."""
    template = xmlsec.template.encrypted_data_create(
        etree.Element("holder"),
        xmlsec.constants.TransformAes256Cbc,
        type=xmlsec.constants.TypeEncElement if xml else xmlsec.constants.TypeEncContent,
        ns="xenc",
    )
    xmlsec.template.encrypted_data_ensure_cipher_value(template)
    key_info = xmlsec.template.encrypted_data_ensure_key_info(template, ns="ds")
    encrypted_key = xmlsec.template.add_encrypted_key(key_info, xmlsec.constants.TransformRsaOaep)
    xmlsec.template.encrypted_data_ensure_cipher_value(encrypted_key)
    xmlsec.template.add_x509_data(xmlsec.template.encrypted_data_ensure_key_info(encrypted_key, ns="ds"))
    manager = xmlsec.KeysManager()
    manager.add_key(
        xmlsec.Key.from_memory(
            recipient.public_bytes(serialization.Encoding.PEM), xmlsec.constants.KeyDataFormatCertPem
        )
    )
    context = xmlsec.EncryptionContext(manager)
    context.key = xmlsec.Key.generate(xmlsec.constants.KeyDataAes, 256, xmlsec.constants.KeyDataTypeSession)
    if xml:
        holder = etree.Element("holder")  # encrypt_xml replaces the element in its parent
        holder.append(parse_document(content, what="payload"))
        encrypted = context.encrypt_xml(template, holder[0])
    else:
        encrypted = context.encrypt_binary(template, content)
    return etree.tostring(encrypted)


def encrypted_for(encrypted: bytes | etree._Element) -> x509.Certificate | None:
    """The recipient certificate named in the EncryptedKey, if any."""
    root = parse_document(encrypted, what="EncryptedData")
    found = root.find(f".//{{{XENC}}}EncryptedKey/{{{NS.DS}}}KeyInfo/{{{NS.DS}}}X509Data/{{{NS.DS}}}X509Certificate")
    if found is None:
        return None
    try:
        return x509.load_der_x509_certificate(b64decode(text(found), "X509Certificate"))
    except (ValueError, EnvelopeError):
        return None


def decrypt_payload(encrypted: bytes | etree._Element, keys: KeyPair) -> tuple[bytes, bool]:
    """Open an EncryptedData with ``keys``: the plaintext and whether it is an XML element (``#Element``).

    Every failure (not for this key, wrong algorithm, bad padding) raises the same ``EnvelopeError``."""
    root = parse_document(encrypted, what="EncryptedData")
    if root.tag != f"{{{XENC}}}EncryptedData":
        raise EnvelopeError(Finding("DECRYPTION", "the payload cannot be decrypted"))
    methods = {m.get("Algorithm") for m in root.iter(f"{{{XENC}}}EncryptionMethod")}
    is_element = root.get("Type") == _ELEMENT
    if methods != {_AES256_CBC, _RSA_OAEP} or root.get("Type") not in (_ELEMENT, _CONTENT):
        raise EnvelopeError(Finding("DECRYPTION", "the payload cannot be decrypted"))
    key_pem = keys.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # The private key alone: with its certificate loaded, xmlsec would also try to build a trust chain for it.
    manager = xmlsec.KeysManager()
    manager.add_key(xmlsec.Key.from_memory(key_pem, xmlsec.constants.KeyDataFormatPem))
    # Decrypted without its Type, xmlsec hands back the plaintext bytes instead of splicing them into the tree;
    # an #Element plaintext then goes through the hardened parser like any other untrusted XML.
    target = etree.fromstring(etree.tostring(root))
    del target.attrib["Type"]
    try:
        plaintext = xmlsec.EncryptionContext(manager).decrypt(target)
    except xmlsec.Error:
        plaintext = None
    if not isinstance(plaintext, bytes):
        raise EnvelopeError(Finding("DECRYPTION", "the payload cannot be decrypted"))
    if is_element:
        try:
            return etree.tostring(parse_document(plaintext, what="decrypted payload")), True
        except EnvelopeError:
            # Garbage from a tampered ciphertext must look like any other failure.
            raise EnvelopeError(Finding("DECRYPTION", "the payload cannot be decrypted")) from None
    return plaintext, False


def encrypt_xhe_payload(payload: XhePayload, recipient: x509.Certificate) -> XhePayload:
    """The payload encrypted for ``recipient``: content becomes the EncryptedData, the indicator true."""
    encrypted = encrypt_payload(payload.content, recipient, xml=payload.xml)
    return dataclasses.replace(payload, content=encrypted, xml=True, encrypted=True)


def decrypt_xhe_payload(payload: XhePayload, keys: KeyPair) -> XhePayload:
    """The plain payload of an encrypted one (call it only on an XHE whose signature has verified)."""
    if not payload.encrypted:
        return payload
    content, xml = decrypt_payload(payload.content, keys)
    return dataclasses.replace(payload, content=content, xml=xml, encrypted=False)
