"""Strict on the wire at the running endpoint: each departure from the AS4 wire format, a decompression bomb and an
AgreementRef/@pmode naming another P-Mode are answered with a signed ebMS error signal (code, category, severity,
RefToMessageId) and nothing is stored; a P-Mode's leniency lets exactly its rules pass; a signed value with a
comment inside is stored and answered whole. One access point process serves the whole module."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lxml import etree

from accesspoint.core.errors import ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.model import ErrorInfo, Property, SignalMessage, UserMessage
from accesspoint.core.namespaces import GZIP, NS, PartProperty, SoapVersion
from accesspoint.security import outbound
from accesspoint.security.outbound import Payload, SecuredMessage, secure_message
from accesspoint.security.signing import find_signature
from pmode import Route
from tests.test_msh_exchange import _keys
from tests.test_msh_refusals import _route, _user_message
from tests.test_msh_support import SE_KEY, Peer, pair, running
from tests.test_values_as_signed import commented
from tests.test_wire_strictness import gzip_bomb, in_part_headers

AGREEMENT = {"value": "urn:example:agreement:se-be"}


@dataclass(frozen=True)
class Wire:
    """Belgium running; Sweden's view of its push P-Modes (strict, lenient, shared id) to build messages on."""

    belgium: Peer
    strict: Route
    lenient: Route
    shared: Route


def _extra_pmodes(document: dict[str, Any]) -> None:
    """Beside se-to-be: one that relaxes every relaxable rule, and one whose id is shared with the partner."""
    (push,) = [p for p in document["pmodes"] if p["id"] == "se-to-be"]
    leg = push["legs"][0]
    lenient = {**push, "id": "se-to-be-lenient", "legs": [{**leg, "action": "Lenient"}]}
    lenient["leniency"] = {"soap11": True, "must_understand": True, "message_id": True}
    shared = {**push, "id": "se-to-be-shared", "legs": [{**leg, "action": "Shared"}], "agreement": AGREEMENT}
    shared["shared_id"] = True
    document["pmodes"] += [lenient, shared]


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wire]:
    folder = tmp_path_factory.mktemp("wire")
    sweden, belgium = pair(folder)
    for peer in (sweden, belgium):
        document = json.loads((peer.folder / "pmodes.yaml").read_text())
        _extra_pmodes(document)
        (peer.folder / "pmodes.yaml").write_text(json.dumps(document))
    routes = [_route(sweden, pmode_id, folder) for pmode_id in ("se-to-be", "se-to-be-lenient", "se-to-be-shared")]
    with running(belgium):
        yield Wire(belgium, *routes)


def _secure(
    route: Route,
    message: UserMessage,
    *,
    soap_version: SoapVersion = SoapVersion.V12,
    payload: Payload | None = None,
) -> SecuredMessage:
    """The message signed and encrypted as Sweden sends it on the route."""
    return secure_message(
        message,
        [payload or Payload("letter@x", "application/xml", lambda: [b"<letter>hej</letter>"])],
        route.security,
        signing_key=_keys(SE_KEY),
        recipient_certificate=route.partner_encryption_certificate,
        soap_version=soap_version,
    )


def _refused(
    wire: Wire, body: bytes, content_type: str, code: ErrorCode, message_id: str, *, refers: bool = True
) -> ErrorInfo:
    """Post; the answer is one signed eb:Error of that code, category and severity, referring to the message
    (unless ``refers`` is False), and nothing was stored under the MessageId."""
    status, kind, answer = wire.belgium.post_as4(body, content_type)
    assert status == 200
    received = read_message(kind, answer)
    assert find_signature(received.parsed) is not None
    signal = received.parsed.header
    assert isinstance(signal, SignalMessage) and len(signal.errors) == 1, signal
    (error,) = signal.errors
    spec = code.value
    assert (error.error_code, error.category, error.severity) == (
        spec.code,
        spec.category.value,
        spec.severity.value,
    ), error
    ref = message_id if refers else None
    assert (signal.message_info.ref_to_message_id, error.ref_to_message_in_error) == (ref, ref)
    assert message_id not in {m["message_id"] for m in wire.belgium.messages(direction="in")}
    return error


def _accepted(wire: Wire, secured: SecuredMessage, body: bytes | None = None) -> str:
    """Post; the answer is a signed receipt; the stored message's id (the one the receipt answers) comes back."""
    status, kind, answer = wire.belgium.post_as4(body or secured.packed.to_bytes(), secured.packed.content_type)
    assert status == 200
    received = read_message(kind, answer)
    signal = received.parsed.header
    assert isinstance(signal, SignalMessage) and signal.receipt is not None, signal
    ref = signal.message_info.ref_to_message_id
    assert ref is not None and ref in {m["message_id"] for m in wire.belgium.messages(direction="in")}
    return ref


def _without_must_understand(value: str | None) -> Callable[..., etree._Element]:
    """build_envelope as a sender that leaves eb:Messaging's mustUnderstand out (None) or sets it to ``value``."""
    build = outbound.build_envelope

    def build_envelope(*args: Any, **kwargs: Any) -> etree._Element:
        envelope = build(*args, **kwargs)
        messaging = next(envelope.iter(f"{{{NS.EBMS}}}Messaging"))
        name = f"{{{etree.QName(envelope).namespace}}}mustUnderstand"
        if value is None:
            del messaging.attrib[name]
        else:
            messaging.set(name, value)
        return envelope

    return build_envelope


# ---------------------------------------------------------------------------------------------------- refusals


def test_refuses_soap11_on_soap12_pmode(wire: Wire) -> None:
    """A signed SOAP 1.1 message on an AS4 (SOAP 1.2) P-Mode: EBMS:0010."""
    secured = _secure(wire.strict, _user_message(wire.strict, "soap11@se"), soap_version=SoapVersion.V11)
    body = secured.packed.to_bytes()
    _refused(wire, body, secured.packed.content_type, ErrorCode.PROCESSING_MODE_MISMATCH, "soap11@se")


@pytest.mark.parametrize("value", [None, "false", "0"])
def test_refuses_messaging_without_must_understand_true(
    wire: Wire, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """eb:Messaging signed without mustUnderstand, or with false or 0: EBMS:0009."""
    monkeypatch.setattr(outbound, "build_envelope", _without_must_understand(value))
    message_id = f"must-understand-{value}@se"
    secured = _secure(wire.strict, _user_message(wire.strict, message_id))
    start = secured.envelope.index(b"<eb:Messaging")
    tag = secured.envelope[start : secured.envelope.index(b">", start)]
    assert (b"mustUnderstand" in tag) is (value is not None)
    _refused(wire, secured.packed.to_bytes(), secured.packed.content_type, ErrorCode.INVALID_HEADER, message_id)


def test_refuses_message_id_that_is_not_an_rfc_2822_msg_id(wire: Wire) -> None:
    """A signed MessageId without '@': EBMS:0009, and the error refers to no message."""
    secured = _secure(wire.strict, _user_message(wire.strict, "no-at-sign"))
    body = secured.packed.to_bytes()
    _refused(wire, body, secured.packed.content_type, ErrorCode.INVALID_HEADER, "no-at-sign", refers=False)


def test_refuses_root_part_not_in_its_declared_charset(wire: Wire) -> None:
    """The signed envelope re-encoded in UTF-32 (its signature still holds) under charset=UTF-8: EBMS:0009."""
    secured = _secure(wire.strict, _user_message(wire.strict, "utf-32@se"))
    utf32 = etree.tostring(etree.fromstring(secured.envelope), xml_declaration=True, encoding="UTF-32")
    body = secured.packed.to_bytes()
    assert body.count(secured.envelope) == 1 and b"charset=UTF-8" in body
    body = body.replace(secured.envelope, utf32)
    _refused(wire, body, secured.packed.content_type, ErrorCode.INVALID_HEADER, "utf-32@se")


BARE_LINE_BREAKS = {
    "lf": (b"binary\r\nContent-ID", b"binary\nContent-ID"),
    "cr": (b"octet-stream\r\nContent-Transfer", b"octet-stream\rX-Smuggled: yes\r\nContent-Transfer"),
}


@pytest.mark.parametrize("kind", sorted(BARE_LINE_BREAKS))
def test_refuses_a_bare_line_break_inside_a_mime_header(wire: Wire, kind: str) -> None:
    """A bare LF (a second header smuggled into a line) or a bare CR in an attachment's MIME headers: EBMS:0007."""
    old, new = BARE_LINE_BREAKS[kind]
    message_id = f"bare-{kind}@se"
    secured = _secure(wire.strict, _user_message(wire.strict, message_id))
    body = in_part_headers(secured.packed.to_bytes(), "letter@x", old, new)
    _refused(wire, body, secured.packed.content_type, ErrorCode.MIME_INCONSISTENCY, message_id)


def test_refuses_agreement_pmode_other_than_the_shared_id(wire: Wire) -> None:
    """On a P-Mode whose id is shared, AgreementRef/@pmode naming another P-Mode: EBMS:0010; its own id: a receipt."""
    named = _user_message(wire.shared, "shared-other@se")
    agreement = named.collaboration_info.agreement_ref
    assert agreement is not None and agreement.pmode == "se-to-be-shared"  # a shared id is sent
    wrong = dataclasses.replace(agreement, pmode="phase4-own-pmode-id")
    other = dataclasses.replace(
        named, collaboration_info=dataclasses.replace(named.collaboration_info, agreement_ref=wrong)
    )
    secured = _secure(wire.shared, other)
    body = secured.packed.to_bytes()
    _refused(wire, body, secured.packed.content_type, ErrorCode.PROCESSING_MODE_MISMATCH, "shared-other@se")
    assert _accepted(wire, _secure(wire.shared, _user_message(wire.shared, "shared-own@se"))) == "shared-own@se"


def test_refuses_a_gzip_bomb_with_ebms_0303(wire: Wire) -> None:
    """A signed, encrypted part that inflates to 2 GiB (about 2 MiB on the wire): EBMS:0303, nothing stored."""
    compression = (Property(PartProperty.COMPRESSION_TYPE.value, GZIP),)
    bomb = Payload("letter@x", GZIP, lambda: gzip_bomb(2048), compress=False, properties=compression)
    secured = _secure(wire.strict, _user_message(wire.strict, "bomb@se"), payload=bomb)
    body = secured.packed.to_bytes()
    assert len(body) < 4 * 1024 * 1024
    _refused(wire, body, secured.packed.content_type, ErrorCode.DECOMPRESSION_FAILURE, "bomb@se")


# ---------------------------------------------------------------------------------------------------- accepted


def test_leniency_lets_exactly_the_relaxed_rules_pass(wire: Wire, monkeypatch: pytest.MonkeyPatch) -> None:
    """On the P-Mode relaxing soap11, must_understand and message_id, a SOAP 1.1 message without mustUnderstand
    and with a bare MessageId is received; a bare LF in its MIME headers (never relaxable) is still EBMS:0007."""
    monkeypatch.setattr(outbound, "build_envelope", _without_must_understand(None))
    lenient = _secure(wire.lenient, _user_message(wire.lenient, "lenient-1"), soap_version=SoapVersion.V11)
    assert _accepted(wire, lenient) == "lenient-1"
    smuggled = _secure(wire.lenient, _user_message(wire.lenient, "lenient-2"), soap_version=SoapVersion.V11)
    body = in_part_headers(smuggled.packed.to_bytes(), "letter@x", b"binary\r\nContent-ID", b"binary\nContent-ID")
    _refused(wire, body, smuggled.packed.content_type, ErrorCode.MIME_INCONSISTENCY, "lenient-2")


def test_a_comment_inside_the_signed_message_id_is_stored_and_answered_whole(wire: Wire) -> None:
    """A comment put into the signed MessageId abc-def@x after signing: it verifies, and the receipt answers and
    the store keeps abc-def@x, not the text before the comment."""
    secured = _secure(wire.strict, _user_message(wire.strict, "abc-def@x"))
    body = commented(secured.packed.to_bytes(), "MessageId", pi=False)
    assert b"abc-def@x" not in body
    assert _accepted(wire, secured, body) == "abc-def@x"
    assert "abc" not in {m["message_id"] for m in wire.belgium.messages(direction="in")}
