"""eDelivery AS4 Common Profile test assertions AS4_CP_TA01-TA38, TA44-TA46 (TAD v1.2), C2 -> interceptor -> C3.

Each test's docstring is the assertion's prerequisite and predicate. The tests act as the test driver (C1/C4):
they send Submit to C2's (or, for a reply, C3's) conformance service and collect Deliver and Notify; what went
over the wire is read back from the interceptor with the project's own parsers and security layer. Where the
EC test bed "simulates" a sender, the interceptor decrypts C2's message, alters it and re-secures it with C2's
key. TA11 is checked through the P-Mode validator; TA39-43 (TLS) are in ``test_tls.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import threading
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accesspoint.conformance.protocol import BackendPayload, BusinessMessage
from accesspoint.core.errors import Category, ErrorCode, Severity
from accesspoint.core.message import ReceivedMessage
from accesspoint.core.model import ErrorInfo, PartInfo, Property, SignalMessage, UserMessage
from accesspoint.core.namespaces import GZIP, TEST_ACTION, TEST_SERVICE, PartProperty
from accesspoint.security.algorithms import (
    DataEncryption,
    DigestAlgorithm,
    KeyAgreement,
    KeyDerivation,
    KeyTransport,
    KeyWrap,
    MaskGeneration,
    SignatureAlgorithm,
)
from accesspoint.security.encryption import DecryptionKeyMissing, decrypt_attachments
from accesspoint.security.inbound import open_message, read_memory_part
from pmode import PModeError, load_pmodes
from tests.conformance.bed import (
    CUSTOM_PAYLOAD,
    FOUR_CORNER,
    XML_PAYLOAD,
    XML_PAYLOAD_2,
    Bed,
    Capture,
    Captured,
    Drop,
    Exchange,
    Forward,
    Hook,
    Part,
    ProfileKeys,
    opened_parts,
    resecure,
    with_part_infos,
)

NS_XENC = "http://www.w3.org/2001/04/xmlenc#"
NS_XENC11 = "http://www.w3.org/2009/xmlenc11#"
NS_DS = "http://www.w3.org/2000/09/xmldsig#"


# ------------------------------------------------------------------------------------------------ helpers


def _id(message: BusinessMessage) -> str:
    assert message.message_id is not None
    return message.message_id


def _sent(bed: Bed, profile: ProfileKeys, pmode: str, label: str, **fields: object) -> tuple[BusinessMessage, Exchange]:
    """Submit one message through C2 and wait until the interceptor saw C3 answer it."""
    message = bed.business(profile, pmode, label, **fields)  # type: ignore[arg-type]
    answer = bed.submit(profile, message, label=label)
    assert answer.receipt is not None, answer
    return message, bed.exchange(_id(message))


def _wire_user(exchange: Exchange) -> UserMessage:
    user = exchange.capture.request.user_message
    assert user is not None
    return user


def _receipt(exchange: Exchange) -> SignalMessage:
    """The synchronous answer: a 2xx non-repudiation receipt for the message sent."""
    assert 200 <= exchange.status < 300, exchange.status
    signal = exchange.answer.signal
    assert signal is not None and signal.receipt is not None, signal
    assert signal.receipt.is_non_repudiation
    assert signal.message_info.ref_to_message_id == _wire_user(exchange).message_id
    return signal


def _error(exchange: Exchange) -> ErrorInfo:
    """The synchronous answer: an ebMS error signal (failure) referring to the message sent."""
    signal = exchange.answer.signal
    assert signal is not None and signal.errors, (exchange.status, signal)
    (error,) = signal.errors
    assert error.severity == Severity.FAILURE
    assert error.ref_to_message_in_error == _wire_user(exchange).message_id
    return error


def _tampering(
    profile: ProfileKeys, pmode: str, message_id: str, alter: Callable[[UserMessage, list[Part]], Captured]
) -> Hook:
    """A hook that decrypts C2's message with C3's key, alters it and passes the re-secured copy on."""

    def hook(capture: Capture) -> Forward | None:
        if capture.message_id != message_id:
            return None
        user, parts = opened_parts(profile, capture, pmode)
        return Forward(replace=alter(user, parts))

    return hook


def _part_properties(change: Callable[[tuple[Property, ...]], tuple[Property, ...]]) -> Callable[[PartInfo], PartInfo]:
    return lambda info: dataclasses.replace(info, properties=change(info.properties))


def _tampered(bed: Bed, profile: ProfileKeys, pmode: str, label: str, alter: Callable[..., Captured]) -> Exchange:
    """Submit a message, let the interceptor alter it, and return the exchange with C3's answer."""
    message = bed.business(profile, pmode, label)
    hook = _tampering(profile, pmode, _id(message), alter)
    with bed.hooked(hook):
        bed.submit(profile, message, label=label)
        return bed.exchange(_id(message))


def _two_way(bed: Bed, profile: ProfileKeys, label: str) -> tuple[BusinessMessage, Exchange, BusinessMessage, Exchange]:
    """M1 from C1 via C2 to C3, then C4's reply M2 via C3 to C2 referring to it; both exchanges."""
    request, first = _sent(bed, profile, "SIMPLE_TWOWAY", f"{label}-request")
    delivered = bed.delivery(_id(request))
    reply = bed.business(
        profile,
        "SIMPLE_TWOWAY",
        f"{label}-reply",
        to="c2",
        ref_to_message_id=delivered.message_id,
        conversation_id=delivered.conversation_id,
    )
    answer = bed.submit(profile, reply, via="c3", label=f"{label}-reply")
    assert answer.receipt is not None, answer
    return request, first, reply, bed.exchange(_id(reply))


def _barrier(bed: Bed, profile: ProfileKeys, label: str) -> None:
    """Send one more message and wait for its Deliver. C3's events reach its conformance service one at a time
    in the order they happened, so any Deliver caused before (a duplicate, a ping) has arrived by then."""
    marker, _ = _sent(bed, profile, "SIMPLE_ONEWAY", f"{label}-marker")
    bed.delivery(_id(marker))


class _DropFirst:
    """Drop the first ``count`` attempts of one message (the sender gets an empty answer and retries), then pass
    it on after ``delay`` seconds (a slow network)."""

    def __init__(self, message_id: str, count: int, *, delay: float = 0.0) -> None:
        self.message_id, self.count, self.seen, self.delay = message_id, count, 0, delay
        self._lock = threading.Lock()

    def __call__(self, capture: Capture) -> Drop | Forward | None:
        if capture.message_id != self.message_id:
            return None
        with self._lock:
            self.seen += 1
            return Drop() if self.seen <= self.count else Forward(delay=self.delay)


def _opened(profile: ProfileKeys, exchange: Exchange, pmode: str) -> list[Part]:
    return opened_parts(profile, exchange.capture, pmode)[1]


# -------------------------------------------------------------------------------------------- assertions


def test_as4_cp_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """One-Way/Push. Prerequisite: the SMSH sends a user message. Predicate: the RMSH answers with a
    non-repudiation receipt in an HTTP 2xx response (and the message reaches the consumer, the producer is told)."""
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta01")
    _receipt(exchange)
    assert bed.delivery(_id(message)).payloads == message.payloads
    assert bed.notification(_id(message)).signal_type == "Receipt"


def test_as4_cp_ta02(bed: Bed, profile: ProfileKeys) -> None:
    """Two-Way correlation. Prerequisite: M1 needs a consumer reply. Predicate: M2 from the RMSH has
    RefToMessageId = M1's MessageId."""
    request, _, reply, second = _two_way(bed, profile, "ta02")
    assert _wire_user(second).message_info.ref_to_message_id == request.message_id
    assert bed.delivery(_id(reply), at="c2").ref_to_message_id == request.message_id


def test_as4_cp_ta03(bed: Bed, profile: ProfileKeys) -> None:
    """Single parties. Prerequisite: the SMSH sends several user messages. Predicate: each has exactly one From
    and one To, each with one PartyId."""
    for index in range(3):
        _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", f"ta03-{index}")
        parties = _wire_user(exchange).party_info
        assert len(parties.sender.party_ids) == 1 and len(parties.receiver.party_ids) == 1
        envelope = exchange.capture.request.read().parsed
        messaging = envelope.messaging_element
        assert len(messaging.findall(".//{*}PartyInfo/{*}From")) == 1
        assert len(messaging.findall(".//{*}PartyInfo/{*}To")) == 1


def test_as4_cp_ta04(bed: Bed, profile: ProfileKeys) -> None:
    """Uncompressed payloads accepted. Prerequisite: the SMSH is simulated to send its payload uncompressed
    (no CompressionType). Predicate: the RMSH answers with a receipt and delivers the payload."""

    def uncompressed(user: UserMessage, parts: list[Part]) -> Captured:
        plain = [Part(p.content_id, "application/xml", gzip.decompress(p.data)) for p in parts]
        no_compression = _part_properties(lambda props: tuple(p for p in props if p.name != "CompressionType"))
        return resecure(profile, "c3", "SIMPLE_ONEWAY", with_part_infos(user, no_compression), plain)

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta04", uncompressed)
    forwarded = exchange.forwarded
    assert forwarded is not None
    user = forwarded.user_message
    assert user is not None and all(info.compression_type is None for info in user.payload_info)
    _receipt(exchange)
    assert bed.delivery(_wire_user(exchange).message_id).payloads == (XML_PAYLOAD,)


def test_as4_cp_ta05(bed: Bed, profile: ProfileKeys) -> None:
    """Payload location. Prerequisite: one XML payload is submitted. Predicate: it travels compressed in a MIME
    part of its own and the SOAP Body is empty."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta05")
    received = exchange.capture.request.read()
    assert received.is_mime and received.parsed.body_payload is None
    assert len(received.parsed.body) == 0
    (info,) = _wire_user(exchange).payload_info
    assert info.content_id == XML_PAYLOAD.content_id and info.compression_type == GZIP
    assert [a.content_id for a in received.attachments] == [XML_PAYLOAD.content_id]
    (part,) = _opened(profile, exchange, "SIMPLE_ONEWAY")
    assert gzip.decompress(part.data) == XML_PAYLOAD.data


def test_as4_cp_ta06(bed: Bed, profile: ProfileKeys) -> None:
    """Leading document first. Prerequisite: an XML business document plus another XML and a binary payload.
    Predicate: the first PartInfo references the business document; all are compressed in separate MIME parts;
    the SOAP Body is empty."""
    payloads = (XML_PAYLOAD, XML_PAYLOAD_2, CUSTOM_PAYLOAD)
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta06", payloads=payloads)
    received = exchange.capture.request.read()
    infos = _wire_user(exchange).payload_info
    assert infos[0].href == f"cid:{XML_PAYLOAD.content_id}"
    assert all(info.compression_type == GZIP for info in infos)
    assert sorted(a.content_id for a in received.attachments) == sorted(p.content_id for p in payloads)
    assert received.parsed.body_payload is None and len(received.parsed.body) == 0


def test_as4_cp_ta07(bed: Bed, profile: ProfileKeys) -> None:
    """Several payloads processed. Prerequisite: the TA06 message is sent. Predicate: the RMSH answers with a
    receipt and every payload is delivered."""
    payloads = (XML_PAYLOAD, XML_PAYLOAD_2, CUSTOM_PAYLOAD)
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta07", payloads=payloads)
    _receipt(exchange)
    assert set(bed.delivery(_id(message)).payloads) == set(payloads)


def test_as4_cp_ta08(bed: Bed, profile: ProfileKeys) -> None:
    """External reference. Prerequisite: the SMSH is simulated to send a PartInfo whose href is an external URL.
    Predicate: the RMSH answers synchronously with an ebMS error (EBMS:0011), and the producer is told."""

    def external(user: UserMessage, parts: list[Part]) -> Captured:
        href = _part_properties(lambda props: props)
        moved = with_part_infos(user, lambda info: dataclasses.replace(href(info), href="http://example.org/payload"))
        return resecure(profile, "c3", "SIMPLE_ONEWAY", moved, parts)

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta08", external)
    assert _error(exchange).error_code == ErrorCode.EXTERNAL_PAYLOAD_ERROR.code
    notified = bed.notification(_wire_user(exchange).message_id)
    assert (notified.signal_type, notified.error_code) == ("Error", ErrorCode.EXTERNAL_PAYLOAD_ERROR.code)


def test_as4_cp_ta09(bed: Bed, profile: ProfileKeys) -> None:
    """Retry. Prerequisite: receipts are suppressed (the bed answers C2 without passing the message on).
    Predicate: the SMSH sends the same message again, at least once."""
    message = bed.business(profile, "ONEWAY_RETRY", "ta09")
    dropping = _DropFirst(_id(message), 2)
    with bed.hooked(dropping):
        bed.submit(profile, message, label="ta09")
        bed.notification(_id(message))
    attempts = bed.exchanges(_id(message))
    assert len(attempts) >= 2 and attempts[0].forwarded is None
    assert {_wire_user(e).message_id for e in attempts} == {message.message_id}


def test_as4_cp_ta10(bed: Bed, profile: ProfileKeys) -> None:
    """Retry, then success. Prerequisite: as TA09, the connection restored before the retries run out.
    Predicate: a receipt comes back, the consumer gets the message exactly once and resending stops; a
    duplicate replayed to the RMSH gets the same receipt and is not delivered again."""
    message = bed.business(profile, "ONEWAY_RETRY", "ta10")
    dropping = _DropFirst(_id(message), 2, delay=0.3)  # restored, but slow
    with bed.hooked(dropping):
        bed.submit(profile, message, label="ta10")
        assert bed.notification(_id(message)).signal_type == "Receipt"
    attempts = bed.exchanges(_id(message))
    assert [e.forwarded is None for e in attempts] == [True, True, False]
    assert attempts[-1].at - attempts[-1].capture.at >= 0.3  # the delay held the passing attempt
    first_receipt = _receipt(attempts[-1])
    replay = attempts[-1].capture.request
    request = urllib.request.Request(  # noqa: S310 (http on loopback)
        bed.harness.targets["c3"], data=replay.body, headers={"Content-Type": replay.content_type}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        again = Captured(response.headers["Content-Type"], response.read()).signal
    assert again is not None and again.receipt is not None
    assert again.message_id == first_receipt.message_id
    _barrier(bed, profile, "ta10")
    assert len(bed.deliveries(_id(message))) == 1
    assert len(bed.exchanges(_id(message))) == 3  # nothing resent after the receipt


@pytest.mark.parametrize("setting", ["unset", "set"])
def test_as4_cp_ta11(bed: Bed, profile: ProfileKeys, setting: str, tmp_path: Path) -> None:
    """SenderErrors unset. Prerequisite: the P-Mode validator of the network profile. Predicate:
    PMode[].ErrorHandling.Report.SenderErrorsTo is not set in the test P-Modes, and a P-Mode setting it is
    refused."""
    source = bed.folder / "c2" / "pmodes.yaml"
    if setting == "unset":
        pmodes = load_pmodes(source)
        legs = [leg for p in pmodes if p.id.endswith(profile.name) for leg in p.legs]
        assert legs and all(leg.error_handling.sender_errors_to is None for leg in legs)
        return
    document = json.loads(source.read_text())
    changed = copy.deepcopy(document)
    pmode = next(p for p in changed["pmodes"] if p["id"] == profile.pmode_id("SIMPLE_ONEWAY"))
    pmode["legs"][0]["error_handling"]["sender_errors_to"] = "https://errors.example/as4"
    target = tmp_path / "pmodes.yaml"
    target.write_text(json.dumps(changed))
    with pytest.raises(PModeError) as refused:
        load_pmodes(target)
    problems = [(p.pmode, p.field) for p in refused.value.problems]
    assert problems == [(pmode["id"], "legs[0].error_handling.sender_errors_to")]


def test_as4_cp_ta12(bed: Bed, profile: ProfileKeys) -> None:
    """Signature. Prerequisite: a signed message. Predicate: the digests are SHA-256, the signature method is
    the profile's (rsa-sha256 for 1.15, eddsa-ed25519 for 2.0), made with the SMSH's own certificate, and it
    covers eb:Messaging, the empty Body and every MIME part."""
    payloads = (XML_PAYLOAD, CUSTOM_PAYLOAD)
    _, exchange = _sent(bed, profile, "ONEWAY_ONLY_SIGN", "ta12", payloads=payloads)
    received = exchange.capture.request.read()
    policy = profile.policy("ONEWAY_ONLY_SIGN")
    opened = open_message(received, policy, at=datetime.now(UTC), partner_certificates=[profile.c2_signing.certificate])
    signature = opened.signature
    assert signature is not None
    wanted = SignatureAlgorithm.RSA_SHA256 if profile.name == "1.15" else SignatureAlgorithm.ED25519
    assert signature.signature_algorithm == wanted
    assert {r.echo.digest_method for r in signature.references} == {DigestAlgorithm.SHA256.value}
    assert signature.signer.certificate == profile.c2_signing.certificate
    targets = sorted(r.target for r in signature.references)
    assert targets == sorted(["messaging", "body", *(f"attachment:{p.content_id}" for p in payloads)])
    assert received.parsed.body_payload is None


def _text_attribute(element: object, path: str) -> str | None:
    found = element.find(path)  # type: ignore[attr-defined]
    return None if found is None else found.get("Algorithm")


def test_as4_cp_ta13(bed: Bed, profile: ProfileKeys) -> None:
    """Encryption. Prerequisite: an encrypted message. Predicate: the payloads are encrypted with aes128-gcm for
    the RMSH's certificate (1.15: RSA-OAEP with MGF1-SHA256; 2.0: X25519 + HKDF + kw-aes128)."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta13")
    received = exchange.capture.request.read()
    security = received.parsed.security_header
    assert security is not None
    data = security.findall(f"{{{NS_XENC}}}EncryptedData")
    assert data and all(_text_attribute(d, f"{{{NS_XENC}}}EncryptionMethod") == DataEncryption.AES128_GCM for d in data)
    (key,) = security.findall(f"{{{NS_XENC}}}EncryptedKey")
    method = key.find(f"{{{NS_XENC}}}EncryptionMethod")
    assert method is not None
    if profile.name == "1.15":
        assert method.get("Algorithm") == KeyTransport.RSA_OAEP_XMLENC11
        assert _text_attribute(method, f"{{{NS_XENC11}}}MGF") == MaskGeneration.MGF1_SHA256
        assert _text_attribute(method, f"{{{NS_DS}}}DigestMethod") == DigestAlgorithm.SHA256
    else:
        assert method.get("Algorithm") == KeyWrap.AES128
        agreement = key.find(f"{{{NS_DS}}}KeyInfo/{{{NS_XENC}}}AgreementMethod")
        assert agreement is not None and agreement.get("Algorithm") == KeyAgreement.X25519
        assert _text_attribute(agreement, f"{{{NS_XENC11}}}KeyDerivationMethod") == KeyDerivation.HKDF
    policy = profile.policy("SIMPLE_ONEWAY")
    opened = decrypt_attachments(received, (profile.c3_decryption,), policy, open_part=read_memory_part)
    assert set(opened) == {XML_PAYLOAD.content_id}
    with pytest.raises(DecryptionKeyMissing):  # for C3's certificate, no one else's
        decrypt_attachments(received, (profile.c2_decryption,), policy, open_part=read_memory_part)


def test_as4_cp_ta14(bed: Bed, profile: ProfileKeys) -> None:
    """Receipts in Two-Way. Prerequisite: a Two-Way exchange. Predicate: both user messages are answered with a
    non-repudiation receipt in an HTTP 2xx response."""
    _, first, _, second = _two_way(bed, profile, "ta14")
    _receipt(first)
    _receipt(second)


def test_as4_cp_ta15(bed: Bed, profile: ProfileKeys) -> None:
    """Missing receipt. Prerequisite: as TA09, every attempt suppressed until the retries run out. Predicate:
    the SMSH reports EBMS:0301 MissingReceipt to the producer."""
    message = bed.business(profile, "ONEWAY_RETRY", "ta15")
    with bed.hooked(_DropFirst(_id(message), 1000)):
        bed.submit(profile, message, label="ta15")
        notified = bed.notification(_id(message))
    assert (notified.signal_type, notified.error_code) == ("Error", ErrorCode.MISSING_RECEIPT.code)
    assert notified.short_description == "MissingReceipt"
    assert len(bed.exchanges(_id(message))) == 1 + 3  # the first attempt and the P-Mode's three retries


def test_as4_cp_ta16(bed: Bed, profile: ProfileKeys) -> None:
    """Ping. Prerequisite: the producer submits a ping. Predicate: the message carries the ebMS test service
    (.../200704/service) and action (.../200704/test)."""
    _, exchange = _sent(bed, profile, "PING", "ta16")
    collaboration = _wire_user(exchange).collaboration_info
    assert (collaboration.service.value, collaboration.action) == (TEST_SERVICE, TEST_ACTION)


def test_as4_cp_ta17(bed: Bed, profile: ProfileKeys) -> None:
    """Ping not delivered. Prerequisite: TA16 with the consumer reachable. Predicate: the RMSH answers with a
    receipt in an HTTP 2xx response and nothing is delivered to the consumer."""
    message, exchange = _sent(bed, profile, "PING", "ta17")
    _receipt(exchange)
    assert bed.notification(_id(message)).signal_type == "Receipt"
    _barrier(bed, profile, "ta17")
    assert bed.deliveries(_id(message)) == []


def test_as4_cp_ta18(bed: Bed, profile: ProfileKeys) -> None:
    """ConversationId generated. Prerequisite: the producer gives no conversation id. Predicate: the SMSH fills
    in a ConversationId."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta18", conversation_id=None)
    assert _wire_user(exchange).collaboration_info.conversation_id.strip()


def test_as4_cp_ta19(bed: Bed, profile: ProfileKeys) -> None:
    """ConversationId in Two-Way. Prerequisite: the producer sets a conversation id. Predicate: M1 and its reply
    M2 carry that value."""
    request, first, _, second = _two_way(bed, profile, "ta19")
    assert _wire_user(first).collaboration_info.conversation_id == request.conversation_id
    assert _wire_user(second).collaboration_info.conversation_id == request.conversation_id


def test_as4_cp_ta20(bed: Bed, profile: ProfileKeys) -> None:
    """MessageProperties. Prerequisite: the SMSH sends one property with name and type and one with a name only.
    Predicate: the RMSH answers with a receipt in an HTTP 2xx response."""
    shapes = (Property("typedProperty", "value-1", "urn:example:type"), Property("plainProperty", "value-2"))
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta20", properties=(*FOUR_CORNER, *shapes))
    wire = _wire_user(exchange).message_properties
    assert all(shape in wire for shape in shapes)
    _receipt(exchange)
    delivered = bed.delivery(_id(message))
    assert all(shape in delivered.properties for shape in shapes)


def test_as4_cp_ta21(bed: Bed, profile: ProfileKeys) -> None:
    """SwA message. Prerequisite: a user message with a payload. Predicate: it is sent as
    multipart/related; type="application/soap+xml" and the RMSH answers with a receipt."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta21")
    content_type = exchange.capture.request.read().content_type
    assert content_type.media_type == "multipart/related"
    assert content_type.param("type") == "application/soap+xml"
    _receipt(exchange)


def test_as4_cp_ta22(bed: Bed, profile: ProfileKeys) -> None:
    """Simple SOAP receipt. Prerequisite: after TA21. Predicate: the receipt is a bare SOAP message
    (application/soap+xml, not multipart) and the SMSH accepts it (the producer is told: Receipt)."""
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta22")
    answer: ReceivedMessage = exchange.answer.read()
    assert not answer.is_mime and answer.content_type.media_type == "application/soap+xml"
    _receipt(exchange)
    assert bed.notification(_id(message)).signal_type == "Receipt"


def test_as4_cp_ta23(bed: Bed, profile: ProfileKeys) -> None:
    """GZIP. Prerequisite: an XML payload. Predicate: the payload is GZIP-compressed."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta23")
    (part,) = _opened(profile, exchange, "SIMPLE_ONEWAY")
    assert part.data[:2] == b"\x1f\x8b" and gzip.decompress(part.data) == XML_PAYLOAD.data


def test_as4_cp_ta24(bed: Bed, profile: ProfileKeys) -> None:
    """CompressionType. Prerequisite: compressed payloads. Predicate: each PartInfo has the part property
    CompressionType=application/gzip."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta24", payloads=(XML_PAYLOAD, CUSTOM_PAYLOAD))
    assert [i.compression_type for i in _wire_user(exchange).payload_info] == [GZIP, GZIP]


def test_as4_cp_ta25(bed: Bed, profile: ProfileKeys) -> None:
    """MimeType. Prerequisite: the producer gives MimeType=application/xml. Predicate: the PartInfo carries the
    same MimeType part property."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta25", payloads=(XML_PAYLOAD, CUSTOM_PAYLOAD))
    assert [i.mime_type for i in _wire_user(exchange).payload_info] == ["application/xml", "application/octet-stream"]


def test_as4_cp_ta26(bed: Bed, profile: ProfileKeys) -> None:
    """Missing MimeType. Prerequisite: the SMSH is simulated to send a PartInfo without MimeType. Predicate: the
    RMSH answers synchronously with an ebMS error."""

    def without_mime_type(user: UserMessage, parts: list[Part]) -> Captured:
        change = _part_properties(lambda props: tuple(p for p in props if p.name != PartProperty.MIME_TYPE))
        return resecure(profile, "c3", "SIMPLE_ONEWAY", with_part_infos(user, change), parts)

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta26", without_mime_type)
    assert _error(exchange).error_code == ErrorCode.VALUE_INCONSISTENT.code


def _character_set(bed: Bed, profile: ProfileKeys, charset: str) -> None:
    document = "<?xml version='1.0'?><min><der>sample</der></min>"
    payload = BackendPayload(
        "xmlpayload@minder", "application/xml", document.encode(charset), (Property("CharacterSet", charset),)
    )
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", f"charset-{charset}", payloads=(payload,))
    (info,) = _wire_user(exchange).payload_info
    assert info.character_set == charset
    assert bed.delivery(_id(message)).payloads == (payload,)


def test_as4_cp_ta27(bed: Bed, profile: ProfileKeys) -> None:
    """CharacterSet UTF-16. Prerequisite: a UTF-16 XML payload with its character set given. Predicate: the
    PartInfo carries CharacterSet=UTF-16 (and the payload arrives as sent)."""
    _character_set(bed, profile, "UTF-16")


def test_as4_cp_ta28(bed: Bed, profile: ProfileKeys) -> None:
    """CharacterSet UTF-8. Prerequisite: a UTF-8 XML payload with its character set given. Predicate: the
    PartInfo carries CharacterSet=UTF-8 (and the payload arrives as sent)."""
    _character_set(bed, profile, "UTF-8")


def test_as4_cp_ta29(bed: Bed, profile: ProfileKeys) -> None:
    """Bad CharacterSet. Prerequisite: the SMSH is simulated to send a CharacterSet that is not an encoding name
    per XML 1.0 4.3.3 (``!utf*``). Predicate: the RMSH answers synchronously with an ebMS error."""

    def bad_charset(user: UserMessage, parts: list[Part]) -> Captured:
        change = _part_properties(
            lambda props: tuple(Property(p.name, "!utf*") if p.name == PartProperty.CHARACTER_SET else p for p in props)
        )
        changed = with_part_infos(user, change)
        assert all(info.character_set == "!utf*" for info in changed.payload_info)
        return resecure(profile, "c3", "SIMPLE_ONEWAY", changed, parts)

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta29", bad_charset)
    assert _error(exchange).error_code == ErrorCode.VALUE_INCONSISTENT.code


def _damaged(profile: ProfileKeys) -> Callable[[UserMessage, list[Part]], Captured]:
    def damage(user: UserMessage, parts: list[Part]) -> Captured:
        # The gzip header stays; every byte of the deflate stream after it is inverted.
        broken = [Part(p.content_id, p.content_type, p.data[:10] + bytes(b ^ 0xFF for b in p.data[10:])) for p in parts]
        return resecure(profile, "c3", "SIMPLE_ONEWAY", user, broken)

    return damage


def test_as4_cp_ta30(bed: Bed, profile: ProfileKeys) -> None:
    """Damaged GZIP. Prerequisite: a compressed payload whose data is corrupt. Predicate: the RMSH answers
    synchronously with EBMS:0303 DecompressionFailure, severity failure, category Communication."""
    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta30", _damaged(profile))
    error = _error(exchange)
    assert (error.error_code, error.short_description) == (ErrorCode.DECOMPRESSION_FAILURE.code, "DecompressionFailure")
    assert error.category == Category.COMMUNICATION


def test_as4_cp_ta31(bed: Bed, profile: ProfileKeys) -> None:
    """Consumer told of a processing error. Prerequisite: TA30 with ProcessErrorNotifyConsumer=true. Predicate:
    the same synchronous error, and the RMSH notifies its consumer (and the SMSH its producer)."""
    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta31", _damaged(profile))
    message_id = _wire_user(exchange).message_id
    assert _error(exchange).error_code == ErrorCode.DECOMPRESSION_FAILURE.code
    consumer = bed.notification(message_id, at="c3")
    assert (consumer.signal_type, consumer.error_code) == ("Error", ErrorCode.DECOMPRESSION_FAILURE.code)
    producer = bed.notification(message_id, at="c2")
    assert (producer.signal_type, producer.error_code) == ("Error", ErrorCode.DECOMPRESSION_FAILURE.code)


def test_as4_cp_ta32(bed: Bed, profile: ProfileKeys) -> None:
    """Decompressed delivery. Prerequisite: a compressed payload. Predicate: the consumer gets it decompressed."""
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta32")
    assert _wire_user(exchange).payload_info[0].compression_type == GZIP
    (delivered,) = bed.delivery(_id(message)).payloads
    assert delivered.data == XML_PAYLOAD.data


def test_as4_cp_ta33(bed: Bed, profile: ProfileKeys) -> None:
    """Several payloads decompressed. Prerequisite: an XML and a non-XML payload, both compressed. Predicate:
    the consumer gets every payload decompressed."""
    payloads = (XML_PAYLOAD, CUSTOM_PAYLOAD)
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta33", payloads=payloads)
    assert [i.compression_type for i in _wire_user(exchange).payload_info] == [GZIP, GZIP]
    assert {p.content_id: p.data for p in bed.delivery(_id(message)).payloads} == {
        p.content_id: p.data for p in payloads
    }


def test_as4_cp_ta34(bed: Bed, profile: ProfileKeys) -> None:
    """Compress, then sign. Prerequisite: the payload is compressed, then the message signed (not encrypted).
    Predicate: the RMSH answers with a receipt."""
    _, exchange = _sent(bed, profile, "ONEWAY_ONLY_SIGN", "ta34")
    received = exchange.capture.request.read()
    assert received.parsed.security_header is not None
    assert received.parsed.security_header.find(f"{{{NS_XENC}}}EncryptedData") is None
    (part,) = received.attachments
    assert b"".join(read_memory_part(part))[:2] == b"\x1f\x8b"  # the signed bytes are the gzip data
    _receipt(exchange)


def test_as4_cp_ta35(bed: Bed, profile: ProfileKeys) -> None:
    """Sign, then compress. Prerequisite: the signature is made over the uncompressed payload, which is then
    compressed. Predicate: the RMSH answers with an error."""

    def sign_then_compress(user: UserMessage, parts: list[Part]) -> Captured:
        plain = [Part(p.content_id, "application/xml", gzip.decompress(p.data)) for p in parts]
        return resecure(profile, "c3", "ONEWAY_ONLY_SIGN", user, parts, signed_parts=plain)

    exchange = _tampered(bed, profile, "ONEWAY_ONLY_SIGN", "ta35", sign_then_compress)
    assert _error(exchange).error_code == ErrorCode.FAILED_AUTHENTICATION.code


def test_as4_cp_ta36(bed: Bed, profile: ProfileKeys) -> None:
    """Compress, then encrypt. Prerequisite: the payload is compressed, then encrypted. Predicate: the RMSH
    answers with a receipt."""
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta36")
    (part,) = _opened(profile, exchange, "SIMPLE_ONEWAY")
    assert part.data[:2] == b"\x1f\x8b"  # what was encrypted is the compressed payload
    _receipt(exchange)


def test_as4_cp_ta37(bed: Bed, profile: ProfileKeys) -> None:
    """Encrypt, then compress. Prerequisite: the encrypted part is then compressed. Predicate: the RMSH answers
    with an error."""

    def encrypt_then_compress(user: UserMessage, parts: list[Part]) -> Captured:
        return resecure(
            profile,
            "c3",
            "SIMPLE_ONEWAY",
            user,
            parts,
            after_encryption=lambda p: Part(p.content_id, p.content_type, gzip.compress(p.data)),
        )

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta37", encrypt_then_compress)
    assert _error(exchange).error_code == ErrorCode.FAILED_DECRYPTION.code


def test_as4_cp_ta38(bed: Bed, profile: ProfileKeys) -> None:
    """Compress, sign and encrypt. Prerequisite: the whole pipeline. Predicate: the RMSH answers with a receipt
    (and the payload arrives as submitted)."""
    message, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta38")
    received = exchange.capture.request.read()
    security = received.parsed.security_header
    assert security is not None
    assert security.find(f"{{{NS_DS}}}Signature") is not None
    assert security.find(f"{{{NS_XENC}}}EncryptedData") is not None
    assert _wire_user(exchange).payload_info[0].compression_type == GZIP
    _receipt(exchange)
    assert bed.delivery(_id(message)).payloads == (XML_PAYLOAD,)


def test_as4_cp_ta44(bed: Bed, profile: ProfileKeys) -> None:
    """PartProperties. Prerequisite: the SMSH sends one part property with name and type and one with a name
    only. Predicate: the RMSH answers with a receipt in an HTTP 2xx response."""
    shapes = (Property("typedPartProperty", "value-1", "urn:example:type"), Property("plainPartProperty", "value-2"))

    def with_shapes(user: UserMessage, parts: list[Part]) -> Captured:
        changed = with_part_infos(user, _part_properties(lambda props: props + shapes))
        return resecure(profile, "c3", "SIMPLE_ONEWAY", changed, parts)

    exchange = _tampered(bed, profile, "SIMPLE_ONEWAY", "ta44", with_shapes)
    forwarded = exchange.forwarded
    assert forwarded is not None and forwarded.user_message is not None
    assert all(shape in forwarded.user_message.payload_info[0].properties for shape in shapes)
    _receipt(exchange)


def test_as4_cp_ta45(bed: Bed, profile: ProfileKeys) -> None:
    """Payload order. Prerequisite: an XML document, P1 and P2 submitted in that order. Predicate: PartInfo 1, 2
    and 3 follow that order."""
    payloads = (XML_PAYLOAD, CUSTOM_PAYLOAD, XML_PAYLOAD_2)
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta45", payloads=payloads)
    assert [i.content_id for i in _wire_user(exchange).payload_info] == [p.content_id for p in payloads]


def test_as4_cp_ta46(bed: Bed, profile: ProfileKeys) -> None:
    """IPv6 to IPv4. Prerequisite: the SMSH on an IPv6 host, the RMSH on an IPv4 host. Predicate: the RMSH
    answers with a receipt in an HTTP 2xx response."""
    if not bed.ipv6:
        pytest.skip("this machine has no IPv6 loopback (::1): the sender cannot be put on IPv6")
    _, exchange = _sent(bed, profile, "SIMPLE_ONEWAY", "ta46")
    assert exchange.capture.remote == "::1"  # C2 reached the network over IPv6
    assert bed.harness.targets["c3"].startswith("http://127.0.0.1:")  # C3 listens on IPv4 only
    _receipt(exchange)
