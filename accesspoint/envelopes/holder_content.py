"""End-to-end content encryption to the mailbox holder, one form per network, header left in the clear.

What stays outside the encryption is what routers and operators act on: the envelope's sender and receiver, reply
and receipt requests, the delgivning flag, invoice data and case events (in the SBDH, the AS4 message properties,
or the Mina meddelanden header). What goes inside is what only the holder reads. Sans-I/O.

=============================  ==========================================================================
network form                   what is encrypted, and how it travels
=============================  ==========================================================================
SBD (Nordic partners, Peppol)  the business document → ``<EncryptedContent>`` (this module's namespace) with
                               the CMS AuthEnvelopedData in base64 and ``keyId``, ``contentType`` attributes;
                               the SBDH stays as it was; the operator stores the wrapper as the mail body
any other payload              the whole payload → ``application/pkcs7-mime; smime-type=authEnveloped-data``
                               (the access point's submit API; AS4 PartProperties ``HolderKeyId``,
                               ``OriginalMimeType``)
Mina meddelanden               each SecureMessage body and attachment → the same ``<EncryptedContent>`` bytes,
                               its ContentType ``application/pkcs7-mime``; Header, Reply, ReceiptRequest,
                               OfficialMatter, Metadata untouched. The sender signs the SignedDelivery over
                               the ciphertext (done by the sender before signing: ``encrypt_secure_delivery``)
SDK (XHE)                      the existing ``tm-base-ext-sigenc`` extension (XMLEnc EncryptedData in the XHE
                               payload, envelopes/encryption.py) to the holder's certificate from FaR in place of
                               the organisation's CertPub certificate; nothing new on the wire
=============================  ==========================================================================
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace

from lxml import etree

from accesspoint.core.xml import string_value
from accesspoint.envelopes._common import EnvelopeError, parse_document, serialize
from accesspoint.envelopes.minameddelanden import Attachment, SecureDelivery, SecureMessage
from accesspoint.envelopes.sbdh import SBDH_NS
from accesspoint.security import cms

NAMESPACE = "urn:accesspoint:holder-content:1"
ENCRYPTED_CONTENT = f"{{{NAMESPACE}}}EncryptedContent"
CMS_MIME_TYPE = "application/pkcs7-mime; smime-type=authEnveloped-data"
_SBD = f"{{{SBDH_NS}}}StandardBusinessDocument"
_SBDH = f"{{{SBDH_NS}}}StandardBusinessDocumentHeader"


@dataclass(frozen=True, slots=True)
class EncryptedContent:
    """An ``<EncryptedContent>`` read back: the key it is for, the content's type and the CMS bytes."""

    key_id: str
    content_type: str
    ciphertext: bytes


def wrap(ciphertext: bytes, key_id: str, content_type: str) -> etree._Element:
    """The ``<EncryptedContent keyId contentType>`` element around a CMS message (base64, 76-character lines)."""
    element = etree.Element(ENCRYPTED_CONTENT, nsmap={"hc": NAMESPACE})
    element.set("keyId", key_id)
    element.set("contentType", content_type)
    element.text = base64.encodebytes(ciphertext).decode()
    return element


def unwrap(element: etree._Element) -> EncryptedContent:
    """What an ``<EncryptedContent>`` carries; EnvelopeError when it is not one."""
    if element.tag != ENCRYPTED_CONTENT:
        raise EnvelopeError(f"not an EncryptedContent element: {element.tag}", "holder-content")
    key_id, content_type = element.get("keyId"), element.get("contentType")
    if not key_id or not content_type:
        raise EnvelopeError("EncryptedContent needs keyId and contentType", "holder-content")
    try:
        ciphertext = base64.b64decode("".join(string_value(element).split()), validate=True)
    except ValueError:
        raise EnvelopeError("EncryptedContent is not base64", "holder-content") from None
    return EncryptedContent(key_id, content_type, ciphertext)


def encrypt_sbd(document: bytes, recipient: cms.Recipient) -> bytes:
    """An SBD whose business document is encrypted to ``recipient`` (the SBDH unchanged); EnvelopeError if not SBD."""
    root = parse_document(document, what="StandardBusinessDocument")
    if root.tag != _SBD:
        raise EnvelopeError("not a StandardBusinessDocument", "holder-content")
    bodies = [e for e in root if isinstance(e.tag, str) and e.tag != _SBDH]
    if len(bodies) != 1:
        raise EnvelopeError("an SBD carries exactly one business document", "holder-content")
    body = bodies[0]
    if body.tag == ENCRYPTED_CONTENT:
        raise EnvelopeError("the business document is encrypted already", "holder-content")
    plaintext = etree.tostring(body, xml_declaration=True, encoding="UTF-8")
    root.replace(body, wrap(cms.encrypt(plaintext, [recipient]), recipient.key_id, "application/xml"))
    return serialize(root)


def _sealed_content(body: bytes, content_type: str, recipient: cms.Recipient) -> bytes:
    return serialize(wrap(cms.encrypt(body, [recipient]), recipient.key_id, content_type))


def encrypt_secure_delivery(delivery: SecureDelivery, recipient: cms.Recipient) -> SecureDelivery:
    """The delivery with each message body and attachment encrypted to ``recipient`` (for the sender, before it
    signs the SignedDelivery): their ContentType becomes CMS's, the original type travels inside
    ``<EncryptedContent contentType>``, attachment checksums are those of what is sent. The headers (sender,
    recipient, reference, subject, support info, metadata, receipt request) are left as they are; attachment file
    names too (they are header data to the mailbox: choose neutral ones for sensitive mail)."""

    def message(item: SecureMessage) -> SecureMessage:
        attachments = tuple(
            Attachment(CMS_MIME_TYPE, _sealed_content(a.body, a.content_type, recipient), a.filename)
            for a in item.attachments
        )
        body = _sealed_content(item.body, item.content_type, recipient)
        return replace(item, content_type=CMS_MIME_TYPE, body=body, attachments=attachments)

    return replace(delivery, messages=tuple(message(m) for m in delivery.messages))


def is_encrypted_sbd(document: bytes) -> bool:
    """True when an SBD's business document is an ``<EncryptedContent>``."""
    try:
        root = parse_document(document, what="StandardBusinessDocument")
    except EnvelopeError:
        return False
    return root.tag == _SBD and any(e.tag == ENCRYPTED_CONTENT for e in root)


def decrypt_content(data: bytes, keys: Sequence[cms.DecryptionKey]) -> tuple[EncryptedContent, bytes]:
    """The plaintext of an ``<EncryptedContent>`` document (or of an SBD carrying one) and what it said about it.

    Raises EnvelopeError when there is nothing encrypted in it, and cms.CmsError when it does not open.
    """
    root = parse_document(data, what="encrypted content")
    if root.tag == _SBD:
        found = [e for e in root if e.tag == ENCRYPTED_CONTENT]
        if not found:
            raise EnvelopeError("the SBD's business document is not encrypted", "holder-content")
        root = found[0]
    wrapped = unwrap(root)
    return wrapped, cms.decrypt(wrapped.ciphertext, keys)
