"""The router's sender checks without I/O: the binding of a sender to the access point that signed, and the letter's
business envelope checked against its AS4 header and sealed."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from accesspoint.core.model import PartyId
from accesspoint.core.signals import build_error_signal
from accesspoint.envelopes.minameddelanden import build_signed_delivery, verify_sealed_delivery
from accesspoint.routing.decision import NOT_SERVICED, MessageFacts, Refusal, check_sender
from accesspoint.routing.letters import (
    LETTER_RECIPIENT,
    LETTER_SENDER,
    LETTER_SIGNATURE,
    LetterPart,
    LetterRefused,
    certificate_sha256,
    check_letter,
)
from accesspoint.testing import pki
from far.senders import AccessPoint, Sender, SenderNetwork, SenderStatus, SenderView
from tests.test_operators_support import AUTHORITY, INTERMEDIARY, PERSON, STRANGER, sbd, secure_delivery, xhe

SWEDISH = "0007:2021005448"
FINNISH = "0216:003701120389"
AP_FI = pki.issue(pki.make_ca("Finnish APs"), "AP-FI-0001")
AP_OTHER = pki.issue(pki.make_ca("Other APs"), "AP-XX-0001")
FI_SHA = certificate_sha256(AP_FI.certificate)
FROM_FI = (PartyId("AP-FI-0001", "urn:oasis:names:tc:ebcore:partyid-type:unregistered"),)
TODAY = date(2026, 12, 7)


def _facts(*, sdk: bool = False) -> MessageFacts:
    return MessageFacts("m1@fi", PERSON, original_sender=FINNISH, sdk=sdk)


def _view(*, status: SenderStatus = SenderStatus.ACTIVE, networks: tuple[SenderNetwork, ...] = ()) -> SenderView:
    sender = Sender(FINNISH, "Verohallinto", status, networks, (AccessPoint("AP-FI-0001", FI_SHA),))
    return SenderView(sender)


def _reason(found: SenderView | None, certificate: str | None = FI_SHA, **extra: object) -> str | None:
    decision = check_sender(
        _facts(),
        FINNISH,
        found,
        certificate_sha256=certificate,
        party_ids=extra.get("party_ids", FROM_FI),  # type: ignore[arg-type]
        network=extra.get("network"),  # type: ignore[arg-type]
    )
    return None if decision is None else decision.reason


def test_a_registered_active_sender_through_its_own_access_point_passes() -> None:
    """The sender's access point, by certificate and PartyId: no refusal."""
    assert _reason(_view()) is None


def test_each_binding_refusal_has_its_reason() -> None:
    """Unregistered, suspended, another certificate, another PartyId, unsigned, another network: each refused."""
    assert _reason(None) == Refusal.UNKNOWN_SENDER
    assert _reason(_view(status=SenderStatus.SUSPENDED)) == Refusal.SENDER_SUSPENDED
    assert _reason(_view(), certificate_sha256(AP_OTHER.certificate)) == Refusal.SENDER_NOT_CONNECTED
    assert _reason(_view(), party_ids=(PartyId("AP-XX-0001"),)) == Refusal.SENDER_NOT_CONNECTED
    assert _reason(_view(), None) == Refusal.SENDER_NOT_CONNECTED
    sdk_only = _view(networks=(SenderNetwork.SDK,))
    assert _reason(sdk_only, network=SenderNetwork.CROSS_BORDER) == Refusal.SENDER_NOT_CONNECTED
    assert _reason(sdk_only, network=SenderNetwork.SDK) is None


def test_a_dispatchers_access_point_is_connected_for_the_senders_it_sends_for_while_active() -> None:
    """An intermediary's access point may submit for the senders it dispatches for, not once it is suspended."""
    own = Sender(FINNISH, "Verohallinto")
    dispatcher = Sender("0007:5567212344", "Förmedlaren AB", access_points=(AccessPoint("AP-FI-0001", FI_SHA),))
    assert _reason(SenderView(own, (dispatcher,))) is None
    suspended = Sender(dispatcher.id, dispatcher.name, SenderStatus.SUSPENDED, access_points=dispatcher.access_points)
    assert _reason(SenderView(own, (suspended,))) == Refusal.SENDER_NOT_CONNECTED


def test_an_sdk_senders_refusal_says_not_serviced_with_the_reason_as_description() -> None:
    """SDK's transport profile: errorDetail NOT_SERVICED; the eb:Description says which check refused."""
    decision = check_sender(_facts(sdk=True), FINNISH, None, certificate_sha256=FI_SHA, party_ids=FROM_FI, network=None)
    assert decision is not None
    error = decision.error()
    assert error.detail == NOT_SERVICED and error.description is not None
    assert error.description.startswith("unknown-sender: ")
    signal = build_error_signal([error], message_id="e1", now=datetime(2026, 12, 7, tzinfo=UTC))
    [info] = signal.errors
    assert info.detail == NOT_SERVICED and info.description is not None
    assert info.description.text.startswith("unknown-sender")


def _signed(recipient: str = PERSON) -> LetterPart:
    return LetterPart("letter@se", "application/xml", build_signed_delivery(secure_delivery(recipient), AUTHORITY))


def test_a_signed_delivery_from_a_registered_signer_is_sealed_by_the_router() -> None:
    """The SignedDelivery verifies with a registered certificate, names the sender and the finalRecipient: sealed."""
    checked = check_letter(
        [_signed()],
        sender=SWEDISH,
        recipient=PERSON,
        signing_certificates=(certificate_sha256(AUTHORITY.certificate),),
        seal=INTERMEDIARY,
        today=TODAY,
    )
    assert checked.network is SenderNetwork.MINA_MEDDELANDEN
    sealed = verify_sealed_delivery(checked.replaced["letter@se"], intermediary=INTERMEDIARY.certificate)
    assert sealed.seal.signatures_ok and sealed.seal.received == TODAY
    assert sealed.sender_signature.signer == AUTHORITY.certificate and sealed.delivery.recipient == PERSON


@pytest.mark.parametrize(
    ("sender", "recipient", "registered", "reason"),
    [
        (SWEDISH, PERSON, (), LETTER_SIGNATURE),  # the register lists no signing certificate
        (SWEDISH, PERSON, ("stranger",), LETTER_SIGNATURE),  # signed by someone else
        ("0007:2120000142", PERSON, ("authority",), LETTER_SENDER),  # another sender's delivery
        (SWEDISH, "197802022389", ("authority",), LETTER_RECIPIENT),  # not for the finalRecipient
    ],
)
def test_a_signed_delivery_that_does_not_fit_is_refused(
    sender: str, recipient: str, registered: tuple[str, ...], reason: str
) -> None:
    """Unregistered signer, another sender or another recipient than the AS4 header says: refused, never sealed."""
    names = {
        "authority": certificate_sha256(AUTHORITY.certificate),
        "stranger": certificate_sha256(STRANGER.certificate),
    }
    with pytest.raises(LetterRefused) as caught:
        check_letter(
            [_signed()],
            sender=sender,
            recipient=recipient,
            signing_certificates=tuple(names[r] for r in registered),
            seal=INTERMEDIARY,
            today=TODAY,
        )
    assert caught.value.reason == reason


def test_an_altered_signed_delivery_is_refused() -> None:
    """A SignedDelivery changed after the sender signed it does not verify: letter-signature."""
    part = _signed()
    altered = LetterPart(part.content_id, part.mime_type, part.data.replace(b"Beslut om skatt", b"Beslut om bidrag"))
    with pytest.raises(LetterRefused) as caught:
        check_letter(
            [altered], sender=SWEDISH, recipient=PERSON, signing_certificates=(), seal=INTERMEDIARY, today=TODAY
        )
    assert caught.value.reason == LETTER_SIGNATURE


def test_sbdh_and_xhe_senders_must_be_the_original_sender() -> None:
    """The SBDH Sender and the XHE FromParty are compared with originalSender; a mismatch is refused."""
    letter = LetterPart("sbd@x", "application/xml", sbd())
    xhe_part = LetterPart("xhe@x", "application/xml", xhe())
    with pytest.raises(LetterRefused) as sbd_caught:
        check_letter([letter], sender=FINNISH, recipient=PERSON, signing_certificates=(), seal=None, today=TODAY)
    assert sbd_caught.value.reason == LETTER_SENDER
    with pytest.raises(LetterRefused) as xhe_caught:
        check_letter([xhe_part], sender=FINNISH, recipient=PERSON, signing_certificates=(), seal=None, today=TODAY)
    assert xhe_caught.value.reason == LETTER_SENDER
    norwegian, municipality = "0192:810418052", "0203:kommun.example.se"
    fits = check_letter([letter], sender=norwegian, recipient=PERSON, signing_certificates=(), seal=None, today=TODAY)
    assert fits.network is SenderNetwork.CROSS_BORDER and not fits.replaced
    signed_xhe = check_letter(
        [xhe_part], sender=municipality, recipient=None, signing_certificates=(), seal=None, today=TODAY
    )
    assert signed_xhe.network is SenderNetwork.SDK
    with pytest.raises(LetterRefused) as unlisted:
        stranger = (certificate_sha256(STRANGER.certificate),)
        check_letter(
            [xhe_part], sender=municipality, recipient=None, signing_certificates=stranger, seal=None, today=TODAY
        )
    assert unlisted.value.reason == LETTER_SIGNATURE
    plain = LetterPart("note@x", "text/plain", b"hello")
    assert (
        check_letter([plain], sender=FINNISH, recipient=PERSON, signing_certificates=(), seal=None, today=TODAY).network
        is None
    )
