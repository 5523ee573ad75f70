"""WS-Security XML signatures for AS4: sign eb:Messaging, the Body and every attachment; verify what others sign.

Written on lxml exclusive C14N and ``cryptography`` (byte-identical to xmlsec for these inputs) because
the SwA attachment transforms and Ed25519 are beyond python-xmlsec. "See what is signed": verification
returns the references that held, tied to the very elements the core parsed, and nothing else is trusted.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from lxml import etree

from accesspoint.core.envelope import ParsedEnvelope, _first_children, read_reference
from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import ReferenceEcho
from accesspoint.core.model import Transform as ReferenceTransform
from accesspoint.core.namespaces import NS
from accesspoint.core.xml import element_id, holds_elements, parse_xml, string_value
from accesspoint.security.algorithms import C14N, DigestAlgorithm, SignatureAlgorithm, Transform
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.tokens import (
    ResolvedToken,
    add_security_token,
    read_binary_security_token,
    resolve_token_reference,
)

DS = f"{{{NS.DS}}}"
WSSE = f"{{{NS.WSSE}}}"
WSU_ID = f"{{{NS.WSU}}}Id"
EC_INCLUSIVE = f"{{{NS.EC}}}InclusiveNamespaces"

_HASHES: dict[str, Callable[..., hashlib._Hash]] = {
    DigestAlgorithm.SHA256: hashlib.sha256,
    DigestAlgorithm.SHA384: hashlib.sha384,
    DigestAlgorithm.SHA512: hashlib.sha512,
    DigestAlgorithm.SHA1: hashlib.sha1,
}
_SIGNATURE_HASH: dict[str, hashes.HashAlgorithm | None] = {
    SignatureAlgorithm.RSA_SHA256: hashes.SHA256(),
    SignatureAlgorithm.RSA_SHA384: hashes.SHA384(),
    SignatureAlgorithm.RSA_SHA512: hashes.SHA512(),
    SignatureAlgorithm.RSA_SHA1: hashes.SHA1(),  # noqa: S303 - legacy, only through the policy's legacy list
    SignatureAlgorithm.ECDSA_SHA256: hashes.SHA256(),
    SignatureAlgorithm.ECDSA_SHA384: hashes.SHA384(),
    SignatureAlgorithm.ECDSA_SHA512: hashes.SHA512(),
    SignatureAlgorithm.ED25519: None,
}
# XML media types are canonicalised before digesting, text/* gets CRLF line ends (SwA profile 1.1 §5.4.2).
_XML_MEDIA = re.compile(r"^\s*(text/xml|application/xml|(application|image)/[^;]*\+xml)", re.IGNORECASE)
_TEXT_MEDIA = re.compile(r"^\s*text/", re.IGNORECASE)
# An XML attachment is parsed for canonicalisation: bounded, as any XML we parse.
MAX_XML_ATTACHMENT_C14N = 64 * 1024 * 1024

ChunkSource = Callable[[], Iterable[bytes]]


@dataclass(frozen=True, slots=True)
class AttachmentSource:
    """An attachment as signing sees it: Content-ID, MIME type (before encryption) and a re-openable stream."""

    content_id: str
    content_type: str
    open: ChunkSource


@dataclass(frozen=True, slots=True)
class VerifiedReference:
    """A reference whose digest matched, and what it covers."""

    echo: ReferenceEcho
    target: str  # "messaging", "body", "attachment:<cid>" or "element:<id>"


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    """The outcome of a successful verification: who signed, how, and exactly which parts."""

    signer: ResolvedToken
    signature_algorithm: str
    canonicalization: str
    references: tuple[VerifiedReference, ...]
    # Attachment references whose bytes were not available (encrypted, no key): neither good nor bad.
    unchecked: tuple[ReferenceEcho, ...] = ()

    @property
    def echoes(self) -> tuple[ReferenceEcho, ...]:
        """The references as a receipt echoes them (NonRepudiationInformation)."""
        return tuple(ref.echo for ref in self.references)

    def covers(self, target: str) -> bool:
        """True when a verified reference covers ``target``."""
        return any(ref.target == target for ref in self.references)


# ------------------------------------------------------------------------------------------- helpers


def exc_c14n(element: etree._Element, inclusive_prefixes: Sequence[str] | None = None) -> bytes:
    """Exclusive XML canonicalisation (without comments) of an element and its subtree.

    EBMS:0101 for what C14N cannot canonicalise (a relative namespace URI, say): what cannot be canonicalised
    cannot have been signed."""
    try:
        return etree.tostring(
            element,
            method="c14n",
            exclusive=True,
            with_comments=False,
            inclusive_ns_prefixes=list(inclusive_prefixes) if inclusive_prefixes else None,
        )
    except etree.C14NError as exc:
        raise _fail(f"exclusive C14N failed: {exc}") from None


def _crlf(chunks: Iterable[bytes]) -> Iterable[bytes]:
    """Normalise line ends to CRLF across chunk boundaries (RFC 2045 canonical text)."""
    pending_cr = False
    for chunk in chunks:
        if not chunk:
            continue
        data = chunk
        if pending_cr and data.startswith(b"\n"):
            data = data[1:]
        pending_cr = data.endswith(b"\r")
        yield data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def attachment_digest(source: AttachmentSource, digest_algorithm: str) -> bytes:
    """Digest an attachment as the Attachment-Content-Signature-Transform defines (SwA 1.1 §5.4.2)."""
    digest = _HASHES[digest_algorithm]()
    if _XML_MEDIA.match(source.content_type):
        data = b"".join(source.open())
        if len(data) > MAX_XML_ATTACHMENT_C14N:
            raise EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, "XML attachment too large to canonicalise for signing")
        digest.update(exc_c14n(parse_xml(data, max_bytes=MAX_XML_ATTACHMENT_C14N, what="XML attachment")))
    elif _TEXT_MEDIA.match(source.content_type):
        for chunk in _crlf(source.open()):
            digest.update(chunk)
    else:
        for chunk in source.open():
            digest.update(chunk)
    return digest.digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _raw_ecdsa(der: bytes, key_size: int) -> bytes:
    r, s = decode_dss_signature(der)
    size = (key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def sign_bytes(keys: KeyPair, algorithm: SignatureAlgorithm, data: bytes) -> bytes:
    """Sign canonical SignedInfo bytes as XML-DSig encodes signature values (ECDSA as raw r||s)."""
    key = keys.private_key
    chosen = _SIGNATURE_HASH[algorithm]
    if isinstance(key, ed25519.Ed25519PrivateKey) and algorithm is SignatureAlgorithm.ED25519:
        return key.sign(data)
    if isinstance(key, rsa.RSAPrivateKey) and algorithm.name.startswith("RSA") and chosen is not None:
        return key.sign(data, padding.PKCS1v15(), chosen)
    if isinstance(key, ec.EllipticCurvePrivateKey) and algorithm.name.startswith("ECDSA") and chosen is not None:
        return _raw_ecdsa(key.sign(data, ec.ECDSA(chosen)), key.curve.key_size)
    raise ValueError(f"a {type(key).__name__} cannot sign with {algorithm.value}")


def verify_bytes(public_key: object, algorithm: str, signature: bytes, data: bytes) -> bool:
    """Check an XML-DSig signature value over canonical bytes."""
    chosen = _SIGNATURE_HASH.get(algorithm)
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey) and algorithm == SignatureAlgorithm.ED25519:
            public_key.verify(signature, data)
            return True
        if isinstance(public_key, rsa.RSAPublicKey) and algorithm.startswith(
            "http://www.w3.org/2001/04/xmldsig-more#rsa-"
        ):
            assert chosen is not None
            public_key.verify(signature, data, padding.PKCS1v15(), chosen)
            return True
        if algorithm == SignatureAlgorithm.RSA_SHA1 and isinstance(public_key, rsa.RSAPublicKey):
            assert chosen is not None
            public_key.verify(signature, data, padding.PKCS1v15(), chosen)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey) and "ecdsa" in algorithm and chosen is not None:
            size = (public_key.curve.key_size + 7) // 8
            if len(signature) != 2 * size:
                return False
            der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
            public_key.verify(der, data, ec.ECDSA(chosen))
            return True
    except InvalidSignature:
        return False
    return False


# ------------------------------------------------------------------------------------------- signing


def security_header(envelope: etree._Element, *, create: bool = True) -> etree._Element | None:
    """The envelope's wsse:Security header (created first in the SOAP Header, mustUnderstand, when absent)."""
    namespace = etree.QName(envelope).namespace
    soap_header = envelope.find(f"{{{namespace}}}Header")
    if soap_header is None:
        raise ValueError("the envelope has no SOAP Header")
    found = soap_header.find(f"{WSSE}Security")
    if found is not None or not create:
        return found
    security = etree.Element(f"{WSSE}Security", nsmap={"wsse": NS.WSSE.value, "wsu": NS.WSU.value})
    security.set(f"{{{namespace}}}mustUnderstand", "true" if namespace == NS.SOAP12 else "1")
    soap_header.insert(0, security)
    return security


def _reference(parent: etree._Element, transform: str, digest_method: str) -> None:
    reference = etree.SubElement(parent, f"{DS}Reference")
    reference.set("URI", "#")
    transforms = etree.SubElement(reference, f"{DS}Transforms")
    etree.SubElement(transforms, f"{DS}Transform").set("Algorithm", transform)
    etree.SubElement(reference, f"{DS}DigestMethod").set("Algorithm", digest_method)
    etree.SubElement(reference, f"{DS}DigestValue").text = ""


_TEMPLATE_ID = "_template"


def _security_template(keys: KeyPair, policy: SecurityPolicy, attachments: int) -> etree._Element:
    """A wsse:Security header holding the signer's token and a ds:Signature with every value left to fill in.

    The order of elements and of attributes is the one each message's header has: filling in changes values only.
    """
    security = etree.Element(f"{WSSE}Security", nsmap={"wsse": NS.WSSE.value, "wsu": NS.WSU.value})
    signature = etree.SubElement(security, f"{DS}Signature", nsmap={"ds": NS.DS.value})
    signature.set("Id", _TEMPLATE_ID)
    signed_info = etree.SubElement(signature, f"{DS}SignedInfo")
    etree.SubElement(signed_info, f"{DS}CanonicalizationMethod").set("Algorithm", C14N.EXCLUSIVE.value)
    etree.SubElement(signed_info, f"{DS}SignatureMethod").set("Algorithm", policy.signature_algorithm.value)
    digest_method = policy.digest_algorithm.value
    for transform in [Transform.EXCLUSIVE_C14N] * 2 + [Transform.ATTACHMENT_CONTENT_SIGNATURE] * attachments:
        _reference(signed_info, transform, digest_method)
    etree.SubElement(signature, f"{DS}SignatureValue").text = ""
    key_info = etree.SubElement(signature, f"{DS}KeyInfo")
    key_info.set("Id", _TEMPLATE_ID)
    token = add_security_token(security, keys.certificate, keys.chain, policy.token_reference, _TEMPLATE_ID)
    token.set(WSU_ID, _TEMPLATE_ID)
    key_info.append(token)
    return security


class TokenTemplates:
    """The signer's wsse:Security header (token and signature skeleton) per key pair and policy, written once.

    Encoding the certificate (and for a PKIPath its chain) and base64 again for every message costs more than an
    Ed25519 signature, and writing the two dozen elements of a signature one by one about as much again: each
    message copies its header from the template in one call and fills in ids, digests and the signature value.
    One instance belongs to one signer (the access point's ``Signer``); entries are keyed by the key pair's
    identity and hold the pair, so an id is never reused while its entry lives.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._entries: dict[tuple[int, str, str, str, int], tuple[KeyPair, etree._Element]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def security(self, keys: KeyPair, policy: SecurityPolicy, attachments: int) -> etree._Element:
        """A fresh copy of the header template for signing ``attachments`` parts with ``keys`` under ``policy``."""
        key = (
            id(keys),
            policy.token_reference.value,
            policy.signature_algorithm.value,
            policy.digest_algorithm.value,
            attachments,
        )
        entry = self._entries.get(key)
        if entry is None or entry[0] is not keys:
            entry = (keys, _security_template(keys, policy, attachments))
            with self._lock:
                while len(self._entries) >= self.size:
                    del self._entries[next(iter(self._entries))]
                self._entries[key] = entry
        return copy.deepcopy(entry[1])


def sign_envelope(
    envelope: etree._Element,
    attachments: Sequence[AttachmentSource],
    keys: KeyPair,
    policy: SecurityPolicy,
    *,
    new_id: Callable[[], str],
    templates: TokenTemplates | None = None,
) -> tuple[ReferenceEcho, ...]:
    """Sign eb:Messaging, the Body and every attachment; return the references (to check the receipt with).

    The envelope must carry eb:Messaging and Body with wsu:Id (``build_envelope`` gives them). ``templates``:
    the signer's header templates (each message writes its header afresh without them).
    """
    namespace = etree.QName(envelope).namespace
    soap_header = envelope.find(f"{{{namespace}}}Header")
    body = envelope.find(f"{{{namespace}}}Body")
    messaging = None if soap_header is None else soap_header.find(f"{{{NS.EBMS}}}Messaging")
    if soap_header is None or messaging is None or body is None:
        raise ValueError("the envelope has no eb:Messaging or no Body")
    digest_method = policy.digest_algorithm.value
    hash_of = _HASHES[digest_method]
    signed: list[tuple[str, str, bytes]] = []  # (URI, transform, digest) in SignedInfo's order
    for element in (messaging, body):
        element_ref = element_id(element)
        if element_ref is None:
            raise ValueError(f"{element.tag} has no wsu:Id to reference")
        signed.append((f"#{element_ref}", Transform.EXCLUSIVE_C14N, hash_of(exc_c14n(element)).digest()))
    for attachment in attachments:
        digest = attachment_digest(attachment, digest_method)
        signed.append((f"cid:{attachment.content_id}", Transform.ATTACHMENT_CONTENT_SIGNATURE, digest))
    written = (TokenTemplates(size=1) if templates is None else templates).security(keys, policy, len(attachments))
    signature = written[-1]
    bst = written[0] if len(written) > 1 else None
    security = security_header(envelope, create=False)
    if security is None:
        soap_header.insert(0, written)
        written.set(f"{{{namespace}}}mustUnderstand", "true" if namespace == NS.SOAP12 else "1")
    else:  # a header someone wrote before: the token goes first in it (WSS: tokens precede their use)
        security.append(signature)
        if bst is not None:
            security.insert(0, bst)
    signature.set("Id", new_id())
    signed_info = signature[0]
    echoes = []
    for reference, (uri, transform, digest) in zip(list(signed_info)[2:], signed, strict=True):
        value = _b64(digest)
        reference.set("URI", uri)
        reference[2].text = value
        # What read_reference would make of the element just written, without reading it back.
        echoes.append(ReferenceEcho(uri, str(digest_method), value, (ReferenceTransform(str(transform)),)))
    signature[1].text = _b64(sign_bytes(keys, policy.signature_algorithm, exc_c14n(signed_info)))
    key_info = signature[2]
    key_info.set("Id", new_id())
    token_id = new_id()
    token = key_info[0]
    if bst is not None:  # a BinarySecurityToken, which the SecurityTokenReference points to
        bst.set(WSU_ID, token_id)
        token[0].set("URI", f"#{token_id}")
    token.set(WSU_ID, new_id())
    return tuple(echoes)


# ----------------------------------------------------------------------------------------- verifying


class TokenCache:
    """BinarySecurityTokens decoded once: a partner sends the same token with every message, and decoding it (for
    a PKIPath each certificate, then finding the leaf) costs more than an Ed25519 verification. Same bytes, same
    certificates (immutable), so one decoding serves every message, and the certificates are the same objects
    each time (``TrustCache`` relies on that). Only successes are kept. One instance belongs to one verifier.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._entries: dict[tuple[str, str], ResolvedToken] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def read(self, token: etree._Element) -> ResolvedToken:
        """``read_binary_security_token``, from the cache when these exact bytes were read before."""
        # The key is all read_binary_security_token reads of the element: its ValueType and its whole text (the
        # string-value: a comment inside the token must not make it another token's key).
        key = (token.get("ValueType", ""), string_value(token))
        found = self._entries.get(key)
        if found is not None:
            return found
        resolved = read_binary_security_token(token)
        with self._lock:
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[key] = resolved
        return resolved


def resolve_token(
    str_element: etree._Element,
    ids: Mapping[str, etree._Element],
    candidates: Iterable[x509.Certificate] = (),
    tokens: TokenCache | None = None,
) -> ResolvedToken:
    """``resolve_token_reference``, a referenced BinarySecurityToken decoded through ``tokens`` when given."""
    reference = str_element.find(f"{WSSE}Reference")
    if reference is not None and tokens is not None:
        uri = reference.get("URI", "")
        token = ids.get(uri[1:]) if uri.startswith("#") else None
        if token is not None and token.tag == f"{WSSE}BinarySecurityToken" and not holds_elements(token):
            return tokens.read(token)
    return resolve_token_reference(str_element, dict(ids), candidates)


def _fail(detail: str) -> EbmsError:
    # The wire says only that authentication failed; the log gets the precise reason.
    return EbmsError(ErrorCode.FAILED_AUTHENTICATION, "the signature could not be verified", log_detail=detail)


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()))
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise _fail(f"{what} is not base64") from None


def _policy(detail: str) -> EbmsError:
    return EbmsError(ErrorCode.POLICY_NONCOMPLIANCE, detail)


def find_signature(parsed: ParsedEnvelope) -> etree._Element | None:
    """The one ds:Signature of the message's wsse:Security header (EBMS:0103 if there are several)."""
    soap_header = parsed.messaging_element.getparent()
    assert soap_header is not None
    headers = soap_header.findall(f"{WSSE}Security")
    # Several Security headers are legal only for distinct actors; AS4 uses one (no actor, or "ebms").
    if len(headers) > 1:
        raise _policy("more than one wsse:Security header")
    if not headers:
        return None
    signatures = headers[0].findall(f"{DS}Signature")
    if len(signatures) > 1:
        raise _policy("more than one ds:Signature in wsse:Security")
    stray = [s for s in parsed.envelope.iter(f"{DS}Signature") if s.getparent() is not headers[0]]
    if any(not _inside_receipt_or_security(s) for s in stray):
        raise _fail("a ds:Signature outside the wsse:Security header")
    return signatures[0] if signatures else None


def _inside_receipt_or_security(element: etree._Element) -> bool:
    return any(
        a.tag in (f"{{{NS.EBMS}}}Receipt", f"{WSSE}Security", f"{{{NS.XENC}}}EncryptedKey")
        for a in element.iterancestors()
    )


def verify_signature(
    parsed: ParsedEnvelope,
    attachments: Mapping[str, AttachmentSource],
    policy: SecurityPolicy,
    *,
    candidates: Iterable[x509.Certificate] = (),
    skip_attachments: frozenset[str] = frozenset(),
    require_coverage: bool = True,
    found: etree._Element | None = None,
    tokens: TokenCache | None = None,
) -> VerifiedSignature:
    """Verify the message's signature: algorithms allowed, every reference digest, the signature value.

    EBMS:0103 for a missing signature, disallowed algorithms or parts left unsigned; EBMS:0101 for a wrong
    digest, a wrong signature value, references to elements other than the parsed eb:Messaging and Body, or
    an unresolvable key. ``skip_attachments`` names attachments whose bytes are not available (encrypted
    without a key): their references come back in ``unchecked``.
    Trust in the signer's certificate is checked separately (``trust``). ``require_coverage=False`` leaves the
    coverage rule to the caller (``coverage_gaps``): a diagnostic tool reports a gap that an MSH refuses.
    ``found`` is what ``find_signature(parsed)`` returned, for a caller that looked already; ``tokens`` the
    verifier's cache of decoded tokens.
    """
    signature = find_signature(parsed) if found is None else found
    if signature is None:
        raise _policy("the message is not signed")
    parts = _first_children(signature)
    signed_info = parts.get(_SIGNED_INFO)
    value_element = parts.get(_SIGNATURE_VALUE)
    value_text = None if value_element is None or holds_elements(value_element) else string_value(value_element)
    if signed_info is None or value_text is None:
        raise _fail("ds:Signature lacks SignedInfo or SignatureValue")
    signed_parts = _first_children(signed_info)
    c14n_element = signed_parts.get(_CANONICALIZATION_METHOD)
    method_element = signed_parts.get(_SIGNATURE_METHOD)
    c14n = "" if c14n_element is None else c14n_element.get("Algorithm", "")
    method = "" if method_element is None else method_element.get("Algorithm", "")
    if c14n != C14N.EXCLUSIVE or not policy.allows(c14n):
        raise _policy(f"canonicalisation {c14n[:100]!r} is not allowed")
    if not policy.allows(method):
        raise _policy(f"signature algorithm {method[:100]!r} is not allowed")
    inclusive = None if c14n_element is None else c14n_element.find(EC_INCLUSIVE)
    prefixes = None if inclusive is None else inclusive.get("PrefixList", "").split()

    references = [child for child in signed_info if child.tag == _REFERENCE]
    if not references:
        raise _fail("ds:SignedInfo has no reference")
    echoes = [read_reference(reference) for reference in references]
    for echo in echoes:
        _check_reference_algorithms(echo, policy)

    key_info = parts.get(_KEY_INFO)
    token_reference = None if key_info is None else key_info.find(f"{WSSE}SecurityTokenReference")
    if token_reference is None:
        raise _fail("ds:KeyInfo has no wsse:SecurityTokenReference")
    try:
        signer = resolve_token(token_reference, parsed.ids, candidates, tokens)
    except EbmsError as exc:
        raise _fail(exc.log_detail) from None
    raw = _unb64(value_text, "SignatureValue")
    if not verify_bytes(signer.certificate.public_key(), method, raw, exc_c14n(signed_info, prefixes)):
        raise _fail("the SignatureValue does not verify with the signer's key")

    # The signature value first: a forged signature costs no attachment hashing.
    verified: list[VerifiedReference] = []
    unchecked: list[ReferenceEcho] = []
    for echo in echoes:
        outcome = _verify_reference(echo, parsed, attachments, policy, skip_attachments)
        if isinstance(outcome, VerifiedReference):
            verified.append(outcome)
        else:
            unchecked.append(outcome)
    result = VerifiedSignature(signer, method, c14n, tuple(verified), tuple(unchecked))
    if require_coverage:
        gaps = coverage_gaps(result, parsed, attachments, skip_attachments)
        if gaps:
            raise _policy(gaps[0])
    return result


_SIGNED_INFO = f"{DS}SignedInfo"
_SIGNATURE_VALUE = f"{DS}SignatureValue"
_CANONICALIZATION_METHOD = f"{DS}CanonicalizationMethod"
_SIGNATURE_METHOD = f"{DS}SignatureMethod"
_REFERENCE = f"{DS}Reference"
_KEY_INFO = f"{DS}KeyInfo"


def _check_reference_algorithms(echo: ReferenceEcho, policy: SecurityPolicy) -> None:
    if not policy.allows(echo.digest_method) or echo.digest_method not in _HASHES:
        raise _policy(f"digest algorithm {echo.digest_method[:100]!r} is not allowed")
    for transform in echo.transforms:
        if not policy.allows(transform.algorithm):
            raise _policy(f"transform {transform.algorithm[:100]!r} is not allowed")


def _verify_reference(
    echo: ReferenceEcho,
    parsed: ParsedEnvelope,
    attachments: Mapping[str, AttachmentSource],
    policy: SecurityPolicy,
    skip_attachments: frozenset[str],
) -> VerifiedReference | ReferenceEcho:
    """A verified reference, or the bare echo of an attachment reference that could not be checked."""
    expected = _unb64(echo.digest_value, f"DigestValue of {echo.uri[:80]!r}")
    if echo.uri.startswith("cid:"):
        content_id = echo.uri[4:]
        if [t.algorithm for t in echo.transforms] not in (
            [Transform.ATTACHMENT_CONTENT_SIGNATURE],
            [Transform.ATTACHMENT_COMPLETE_SIGNATURE],
        ):
            raise _policy(f"attachment reference {echo.uri[:80]!r} lacks the SwA signature transform")
        if content_id in skip_attachments:
            return echo
        source = attachments.get(content_id)
        if source is None:
            raise _fail(f"signed attachment {content_id!r} is not in the message")
        if echo.transforms[0].algorithm == Transform.ATTACHMENT_COMPLETE_SIGNATURE:
            raise _policy("Attachment-Complete-Signature-Transform (MIME headers signed) is not supported")
        actual = attachment_digest(source, echo.digest_method)
        if not hmac.compare_digest(actual, expected):
            raise _fail(f"digest mismatch on attachment {content_id!r}")
        return VerifiedReference(echo, f"attachment:{content_id}")
    if not echo.uri.startswith("#") or len(echo.uri) < 2:
        raise _fail(f"reference URI {echo.uri[:80]!r} is neither #id nor cid:")
    target = parsed.ids.get(echo.uri[1:])
    if target is None:
        raise _fail(f"reference {echo.uri[:80]!r} names no element")
    if [t.algorithm for t in echo.transforms] not in ([Transform.EXCLUSIVE_C14N],):
        raise _policy(f"reference {echo.uri[:80]!r} must use exactly the exclusive C14N transform")
    actual = _HASHES[echo.digest_method](exc_c14n(target, echo.transforms[0].inclusive_prefixes)).digest()
    if not hmac.compare_digest(actual, expected):
        raise _fail(f"digest mismatch on {echo.uri[:80]!r} ({etree.QName(target).localname})")
    # Tie the reference to the very elements the core read: this is what defeats signature wrapping.
    if target is parsed.messaging_element:
        kind = "messaging"
    elif target is parsed.body:
        kind = "body"
    else:
        kind = f"element:{echo.uri[1:]}"
    return VerifiedReference(echo, kind)


def coverage_gaps(
    result: VerifiedSignature,
    parsed: ParsedEnvelope,
    attachments: Mapping[str, AttachmentSource],
    skip_attachments: frozenset[str] = frozenset(),
) -> list[str]:
    """What AS4 requires signed but this signature leaves out: eb:Messaging, a Body payload, each attachment."""
    gaps = []
    if not result.covers("messaging"):
        gaps.append("eb:Messaging is not covered by the signature")
    if parsed.body_payload is not None and not result.covers("body"):
        gaps.append("the SOAP Body carries a payload that is not signed")
    gaps.extend(
        f"attachment {content_id!r} is not covered by the signature"
        for content_id in attachments
        if content_id not in skip_attachments and not result.covers(f"attachment:{content_id}")
    )
    return gaps
