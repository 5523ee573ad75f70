"""The Service v3 adapter: deliverSecure from our client to a legacy operator, against the contract's schemas."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from lxml import etree

from accesspoint.envelopes._common import EnvelopeError
from accesspoint.envelopes.schemas import load_minameddelanden_schema
from accesspoint.testing.services import free_port
from operators.channels import SoapChannel
from operators.deliveries import CheckedDelivery, check_delivery
from operators.soap import (
    FAULT_SCHEMA,
    FAULT_SIGNATURE,
    DeliverSecureFault,
    ServiceV3Client,
    SoapBodyLimit,
    body_child,
    deliver_secure_request,
    fault_response,
    legacy_operator_app,
    read_deliver_secure_answer,
)
from tests.conftest import interop_path
from tests.test_operators_support import PERSON, STRANGER, TRUST, sealed, secure_delivery

RECORDED = {
    "soap/wiremock/deliverSecure-kivra.xml": ("3832352f-fa74-4c17-ab6a-a6e3ab8324f3", "192301010168"),
    "soap/wiremock/deliverSecure-e-boks.xml": (None, "192301010170"),
    "soap/it/test1_sendDigitalMailToPrivatePerson/deliverSecure.xml": (None, "190101010159"),
    "soap/it/test3_sendDigitalMailToOrganization/deliverSecure.xml": (None, "165591628136"),
}


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    """Mina meddelanden's v3 schemas (Service, Message, Recipient) from the recorded contracts."""
    return load_minameddelanden_schema(interop_path("minameddelanden/contracts"))


async def _serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/deliversecure"
    finally:
        await runner.cleanup()


class LegacyOperator:
    """The legacy operator's mailboxes: one person has one."""

    def __init__(self) -> None:
        self.stored: list[CheckedDelivery] = []

    async def deliver(self, delivery: CheckedDelivery, document: bytes = b"") -> bool:
        if delivery.recipient != PERSON:
            return False
        self.stored.append(delivery)
        return True


@pytest.fixture
async def legacy(schema: etree.XMLSchema) -> AsyncIterator[tuple[str, LegacyOperator]]:
    """A running legacy Service v3 operator that validates against the schema and checks seals."""
    operator = LegacyOperator()
    async for url in _serve(legacy_operator_app(operator.deliver, TRUST, schema=schema)):
        yield url, operator


def test_deliver_secure_request_is_valid_and_keeps_both_signatures(schema: etree.XMLSchema) -> None:
    """The SOAP request's body validates against Service v3 and the operator's checks accept what it carries."""
    request = deliver_secure_request(sealed(secure_delivery()), schema=schema)
    child = body_child(request)
    assert schema.validate(child), schema.error_log
    checked = check_delivery(etree.tostring(child), TRUST, at=datetime.now(UTC))
    assert checked.recipient == PERSON


@pytest.mark.parametrize("recorded", sorted(RECORDED))
def test_recorded_deliver_secure_responses_are_accepted(schema: etree.XMLSchema, recorded: str) -> None:
    """Each recorded deliverSecureResponse validates and reads as delivered for its recipient."""
    trans_id, recipient = RECORDED[recorded]
    result = read_deliver_secure_answer(interop_path(f"minameddelanden/{recorded}").read_bytes(), schema=schema)
    assert result.statuses == ((recipient, True),)
    assert trans_id is None or result.trans_id == trans_id


def test_an_answer_of_another_kind_is_refused(schema: etree.XMLSchema) -> None:
    """The recorded isRegisteredResponse is not an answer to deliverSecure."""
    recorded = interop_path("minameddelanden/soap/wiremock/skatteverket-faulty-recipient.xml").read_bytes()
    with pytest.raises(EnvelopeError):
        read_deliver_secure_answer(recorded, schema=schema)


def test_fault_carries_application_fault(schema: etree.XMLSchema) -> None:
    """A Common v3 applicationFault in the SOAP Fault detail becomes DeliverSecureFault with its fields."""
    with pytest.raises(DeliverSecureFault) as caught:
        read_deliver_secure_answer(fault_response(FAULT_SCHEMA, "bad", schema=schema), schema=schema)
    assert (caught.value.error_code, caught.value.description) == (FAULT_SCHEMA, "bad")
    assert 20 <= len(caught.value.call_id) <= 50


async def test_client_delivers_to_the_legacy_operator(
    legacy: tuple[str, LegacyOperator], schema: etree.XMLSchema
) -> None:
    """Delivered=true for a person with a mailbox (stored), false for one without."""
    url, operator = legacy
    delivery = secure_delivery(PERSON)
    result = await ServiceV3Client(url, schema).deliver_secure(sealed(delivery))
    assert result.statuses == ((PERSON, True),) and result.trans_id
    (stored,) = operator.stored
    assert stored.items[0].reference == delivery.messages[0].id and stored.sender == "162021005448"
    handover = await SoapChannel(url, schema).deliver(
        sealed(secure_delivery("198112289874")), message_id="x@se", recipient="198112289874"
    )
    assert (handover.channel, handover.delivered) == ("soap", False)


async def test_legacy_operator_refuses_bad_seals_and_invalid_requests(
    legacy: tuple[str, LegacyOperator], schema: etree.XMLSchema
) -> None:
    """A seal by an untrusted intermediary: fault 1002; a request the schema refuses: fault 1001."""
    url, operator = legacy
    with pytest.raises(DeliverSecureFault) as caught:
        await ServiceV3Client(url, schema).deliver_secure(sealed(secure_delivery(), intermediary=STRANGER))
    assert caught.value.error_code == FAULT_SIGNATURE
    invalid = deliver_secure_request(sealed(secure_delivery())).replace(b"Beslut om skatt", b"x" * 300)
    with pytest.raises(DeliverSecureFault) as caught:
        await ServiceV3Client(url, schema).post(invalid)
    assert caught.value.error_code == FAULT_SCHEMA
    assert operator.stored == []


async def test_client_reads_recorded_answers_from_a_stub(schema: etree.XMLSchema) -> None:
    """Against a stub that answers with a recorded file (as the upstream WireMock does), the client parses it."""
    recorded = interop_path("minameddelanden/soap/wiremock/deliverSecure-kivra.xml").read_bytes()

    async def answer(_request: web.Request) -> web.Response:
        return web.Response(body=recorded, content_type="text/xml")

    app = web.Application()
    app.router.add_post("/deliversecure", answer)
    async for url in _serve(app):
        result = await ServiceV3Client(url, schema).deliver_secure(sealed(secure_delivery()))
        assert result.statuses == (("192301010168", True),)


async def test_a_soap_request_over_the_limit_or_past_the_large_slots_is_refused_before_it_is_read(
    aiohttp_client: Callable[..., Awaitable[TestClient]],
) -> None:
    """413 for a body over soap_max_size (declared or streamed), 503 with Retry-After while the one large slot is
    taken; a delivery within the limits is still taken."""
    mib = 1024 * 1024
    operator = LegacyOperator()
    limit = SoapBodyLimit(max_size=2 * mib, max_large=1, large=64 * 1024, retry_after=3)
    client = await aiohttp_client(legacy_operator_app(operator.deliver, TRUST, limit=limit))
    declared = await client.post("/service", data=io.BytesIO(b"x" * (3 * mib)))
    assert declared.status == 413 and b"Fault" in await declared.read()

    release = asyncio.Event()

    async def slow(size: int) -> AsyncIterator[bytes]:
        yield b"<" * (128 * 1024)
        await release.wait()
        for _ in range(size // (128 * 1024)):
            yield b"x" * (128 * 1024)

    holding = asyncio.create_task(client.post("/service", data=slow(3 * mib)))
    while limit.in_progress == 0:
        await asyncio.sleep(0.01)
    busy = await client.post("/service", data=io.BytesIO(b"y" * (256 * 1024)))
    assert (busy.status, busy.headers.get("Retry-After")) == (503, "3")
    release.set()
    streamed = await holding
    assert streamed.status == 413, "a chunked body is cut off once it passes the limit"
    assert limit.in_progress == 0
    good = await client.post("/service", data=deliver_secure_request(sealed(secure_delivery(PERSON))))
    assert good.status == 200 and len(operator.stored) == 1
