"""eDelivery AS4 SBDH enhancement, AS4_SBDH_TA01-TA02 (TAD v1.2): a business document in an SBDH, C1 -> C4.

The producer submits a StandardBusinessDocument (built with the project's SBDH module, its Manifest listing
the binary payload) and a PDF-like binary; what C2 sent is decrypted and decompressed from the interceptor and
read with the same SBDH parser.
"""

from __future__ import annotations

from datetime import UTC, datetime

from accesspoint.conformance.protocol import BackendPayload
from accesspoint.envelopes.sbdh import DocumentIdentification, ManifestItem, Partner, Sbdh, build_sbd, parse_sbd
from tests.conformance.bed import Bed, Exchange, ProfileKeys, gunzip, opened_parts

BINARY = BackendPayload("attachment@minder", "application/pdf", b"%PDF-1.7 not really a PDF")
SBD_ID = "sbd@minder"


def _sbd() -> BackendPayload:
    header = Sbdh(
        sender=(Partner("0088:5798000000001"),),
        receiver=(Partner("0088:5798000000002"),),
        document=DocumentIdentification(
            standard="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
            type_version="2.1",
            instance_identifier="invoice-4711",
            type="Invoice",
            created=datetime(2026, 11, 30, 10, 0, tzinfo=UTC),
        ),
        manifest=(ManifestItem(BINARY.mime_type, f"cid:{BINARY.content_id}", "the invoice as PDF"),),
    )
    document = b"<Invoice xmlns='urn:oasis:names:specification:ubl:schema:xsd:Invoice-2'><ID>4711</ID></Invoice>"
    return BackendPayload(SBD_ID, "application/xml", build_sbd(header, document))


def _sent(bed: Bed, profile: ProfileKeys, label: str) -> tuple[str, Exchange]:
    message = bed.business(profile, "SIMPLE_ONEWAY", label, payloads=(_sbd(), BINARY))
    answer = bed.submit(profile, message, label=label)
    assert answer.receipt is not None, answer
    return str(message.message_id), bed.exchange(str(message.message_id))


def test_as4_sbdh_ta01(bed: Bed, profile: ProfileKeys) -> None:
    """SBDH first. Prerequisite: the producer submits a business document in an SBDH and other payloads.
    Predicate: the first PartInfo references the part holding the SBDH (and the consumer gets it first)."""
    message_id, exchange = _sent(bed, profile, "sbdh-ta01")
    user, parts = opened_parts(profile, exchange.capture, "SIMPLE_ONEWAY")
    first = user.payload_info[0]
    assert first.href == f"cid:{SBD_ID}"
    sbd = parse_sbd(gunzip(next(p.data for p in parts if p.content_id == first.content_id)))
    assert sbd.header.document.instance_identifier == "invoice-4711"
    assert bed.delivery(message_id).payloads[0].content_id == SBD_ID


def test_as4_sbdh_ta02(bed: Bed, profile: ProfileKeys) -> None:
    """Manifest. Prerequisite: the producer submits an SBDH first and non-XML payloads, each listed in the SBDH
    Manifest. Predicate: the RMSH processes the message and answers with a non-repudiation receipt, and every
    non-XML payload is referenced in the Manifest of the SBDH received."""
    message_id, exchange = _sent(bed, profile, "sbdh-ta02")
    signal = exchange.answer.signal
    assert 200 <= exchange.status < 300 and signal is not None and signal.receipt is not None, signal
    delivered = bed.delivery(message_id).payloads
    manifest = parse_sbd(delivered[0].data).header.manifest
    binary = [p for p in delivered if "xml" not in p.mime_type]
    assert binary
    listed = {(item.uri, item.mime_type) for item in manifest}
    assert all((f"cid:{p.content_id}", p.mime_type) in listed for p in binary)
    user = exchange.capture.request.user_message
    assert user is not None and [i.content_id for i in user.payload_info] == [p.content_id for p in delivered]
