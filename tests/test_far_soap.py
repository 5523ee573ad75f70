"""The Recipient v3 SOAP endpoint over real HTTP: the recorded Mina meddelanden answers are reproduced from the
same register contents, every answer and fault validates against the contract's schemas, bad requests fault."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from lxml import etree

from far.app import create_app
from far.identifiers import Policy
from far.model import AccountStatus
from far.service import FarService, Operator
from far.settings import FarSettings
from tests.conftest import interop_path
from tests.test_far_support import SENDER, make_service, recipient_schema, seed_people, soap_body_child

R = "{http://minameddelanden.gov.se/schema/Recipient}"
V3 = "{http://minameddelanden.gov.se/schema/Recipient/v3}"
C3 = "{http://minameddelanden.gov.se/schema/Common/v3}"
SAMPLES = [
    "soap/wiremock/skatteverket-kivra-recipient.xml",
    "soap/it/test1_sendDigitalMailToPrivatePerson/recipient.xml",
    "soap/it/test2_hasAvailableMailboxes/recipient.xml",
    "soap/it/test3_sendDigitalMailToOrganization/recipient.xml",
    "soap/wiremock/skatteverket-faulty-recipient.xml",  # an isRegisteredResponse
]
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def request(operation: str, *children: tuple[str, str]) -> bytes:
    """A Recipient v3 request envelope as the upstream clients send it."""
    inner = "".join(f"<v3:{name}>{value}</v3:{name}>" for name, value in children)
    return (
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:v3="http://minameddelanden.gov.se/schema/Recipient/v3">'
        f"<soapenv:Header/><soapenv:Body><v3:{operation}>{inner}</v3:{operation}></soapenv:Body></soapenv:Envelope>"
    ).encode()


def is_reachable(sender: str, *recipients: str) -> bytes:
    """An isReachable request."""
    return request("isReachable", ("senderOrgNr", "16" + sender), *(("recipientId", r) for r in recipients))


def _text(element: etree._Element, path: str) -> str | None:
    found = element.find(path)
    return None if found is None else (found.text or "")


def account(status: etree._Element) -> dict[str, Any]:
    """An AccountStatus as plain data; LastRegistration as an instant, so zones do not matter."""
    supplier = status.find(f"{R}ServiceSupplier")
    last = _text(status, f"{R}LastRegistration")
    return {
        "id": _text(status, f"{R}RecipientId"),
        "type": _text(status, f"{R}Type"),
        "pending": _text(status, f"{R}Pending"),
        "supplier": None
        if supplier is None
        else {child.tag.removeprefix(R): child.text or "" for child in supplier if isinstance(child.tag, str)},
        "last_registration": None if last is None else datetime.fromisoformat(last),
    }


def answers(envelope: bytes) -> tuple[str, list[dict[str, Any]]]:
    """The response element's name and its returns as plain data (LastSenderAcceptChange left out)."""
    response = soap_body_child(envelope)
    items = []
    for item in response.findall(f"{V3}return"):
        status = item.find(f"{R}AccountStatus")
        if status is None:
            items.append(account(item))
        else:
            items.append({**account(status), "accepted": _text(item, f"{R}SenderAccepted")})
    return response.tag.removeprefix(V3), items


async def seed_from_sample(far: FarService, items: list[dict[str, Any]]) -> None:
    """Put into FaR what the recorded answer says about each recipient."""
    for item in items:
        supplier = item["supplier"]
        operator = None
        if supplier is not None:
            operator = supplier["Id"][2:]
            await far.put_operator(
                Operator(
                    operator,
                    supplier["Name"],
                    f"urn:test:{operator}",
                    None,
                    supplier["ServiceAdress"],
                    supplier.get("UIAdress"),
                ),
                actor="sample",
            )
        status = {"Secure": AccountStatus.SECURE, "Anonymous": AccountStatus.ANONYMOUS, "Not": AccountStatus.NONE}
        await far.put_recipient(
            item["id"],
            status=status[item["type"]],
            pending=item["pending"] == "true",
            operator_id=operator,
            last_registration=item["last_registration"],
            actor="sample",
        )
        if item.get("accepted") == "false" and item["type"] != "Not":
            await far.refuse_sender(item["id"], SENDER, actor="sample")


@pytest.fixture
async def lenient(tmp_path: Path) -> AsyncIterator[FarService]:
    # The recorded samples use Skatteverket test numbers, several with a wrong check digit.
    far = await make_service(tmp_path / "far.db", policy=Policy(check_digits=False))
    yield far
    await far.engine.dispose()


async def post(client: TestClient[Any, Any], body: bytes) -> tuple[int, bytes]:
    """POST a SOAP 1.1 request to /Recipient/v3."""
    response = await client.post(
        "/Recipient/v3", data=body, headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    )
    assert response.headers["Content-Type"].startswith("text/xml")
    return response.status, await response.read()


def assert_valid(envelope: bytes) -> None:
    """The Body's child validates against the Recipient v3 / Common v3 schemas."""
    schema = recipient_schema()
    child = soap_body_child(envelope)
    if child.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Fault":
        detail = child.find("detail")
        assert detail is not None
        child = detail[0]
    assert schema.validate(etree.ElementTree(child)), schema.error_log


@pytest.mark.parametrize("sample", SAMPLES)
async def test_recorded_answers_are_reproduced(aiohttp_client: Client, lenient: FarService, sample: str) -> None:
    """With the register holding what a recorded answer says, FaR gives the same answer, schema-valid."""
    recorded = interop_path("minameddelanden/" + sample).read_bytes()
    assert_valid(recorded)
    operation, expected = answers(recorded)
    await seed_from_sample(lenient, expected)
    client = await aiohttp_client(create_app(FarSettings(), service=lenient))
    ids = [item["id"] for item in expected]
    body = (
        is_reachable(SENDER, *ids)
        if operation == "isReachableResponse"
        else request("isRegistered", *(("recipientId", r) for r in ids))
    )
    assert recipient_schema().validate(etree.ElementTree(soap_body_child(body)))
    status, answer = await post(client, body)
    assert status == 200
    assert_valid(answer)
    assert answers(answer) == (operation, expected)


async def test_thousand_recipients_in_one_request(aiohttp_client: Client, tmp_path: Path) -> None:
    """isReachable for 1,000 recipients answers 1,000 ReachabilityStatus in order, schema-valid."""
    far = await make_service(tmp_path / "far.db")
    await seed_people(far)
    client = await aiohttp_client(create_app(FarSettings(), service=far))
    ids = ["197802022389", "199001302380", "194004048569", "192301010168"] * 250
    status, answer = await post(client, is_reachable(SENDER, *ids))
    assert status == 200
    assert_valid(answer)
    _, items = answers(answer)
    assert [i["id"] for i in items] == ids
    # Secure + accepted, refused, anonymous, and a check-digit failure (answered as no account).
    assert [(i["type"], i["accepted"]) for i in items[:4]] == [
        ("Secure", "true"),
        ("Secure", "false"),
        ("Anonymous", "true"),
        ("Not", "false"),
    ]
    await far.engine.dispose()


BAD_REQUESTS = {
    "not-xml": (b"this is not xml", 1001),
    "soap-1.2": (
        b'<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Body/></e:Envelope>',
        1001,
    ),
    "doctype": (
        b'<!DOCTYPE x [<!ENTITY a "b">]><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        b"<soapenv:Body>&a;</soapenv:Body></soapenv:Envelope>",
        1001,
    ),
    "empty-body": (
        b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body/>'
        b"</soapenv:Envelope>",
        1001,
    ),
    "other-operation": (request("getRecipientCatalog", ("x", "y")), 1002),
    "sender-not-16": (request("isReachable", ("senderOrgNr", "2021005448")), 1003),
    "no-sender": (request("isReachable", ("recipientId", "197802022389")), 1003),
    "recipient-pattern": (is_reachable(SENDER, "19780202238X"), 1003),
    "recipient-month-13": (is_reachable(SENDER, "197813022389"), 1003),
    "eidas-in-soap": (is_reachable(SENDER, "ES/SE/99999142H"), 1003),
    "stray-element": (request("isReachable", ("senderOrgNr", "16" + SENDER), ("foo", "1")), 1003),
    "registered-none": (request("isRegistered"), 1003),
    "too-many": (is_reachable(SENDER, *["197802022389"] * 1001), 1004),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
async def test_bad_requests_fault(aiohttp_client: Client, lenient: FarService, case: str) -> None:
    """A request outside the contract gets HTTP 500 with a soap:Client fault carrying applicationFault."""
    body, code = BAD_REQUESTS[case]
    client = await aiohttp_client(create_app(FarSettings(), service=lenient))
    status, answer = await post(client, body)
    assert status == 500
    assert_valid(answer)
    fault = soap_body_child(answer)
    assert _text(fault, "faultcode") == "S:Client"
    assert _text(fault, f"detail/{C3}applicationFault/{C3}ErrorCode") == str(code)


async def test_operator_names_and_addresses_are_escaped(aiohttp_client: Client, tmp_path: Path) -> None:
    """Markup characters and non-ASCII in an operator's name and addresses come back intact in a valid answer."""
    far = await make_service(tmp_path / "far.db")
    name = 'Brevlåda <"Öst"> & Söner'
    address = "https://mm.example/service/v3?a=1&b=<2>"
    await far.put_operator(Operator("2021005448", name, "urn:test:x", None, address), actor="t")
    await far.put_recipient("197802022389", status=AccountStatus.SECURE, operator_id="2021005448", actor="t")
    client = await aiohttp_client(create_app(FarSettings(), service=far))
    status, answer = await post(client, is_reachable(SENDER, "197802022389"))
    assert status == 200
    assert_valid(answer)
    [item] = answers(answer)[1]
    assert item["supplier"] == {
        "Id": "162021005448",
        "Name": name,
        "ServiceAdress": address,
        "InternalServiceAdress": "",
    }
    await far.engine.dispose()
