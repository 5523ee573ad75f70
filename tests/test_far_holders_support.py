"""Helpers for the FaR holder tests (no tests here): a FaR with two operators' tokens, the reference registers over
real HTTP, a test e-ID CA, people of every age and companies with signatory rules."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from lxml import etree

from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing.eid import EidCa
from far.app import create_app
from far.identifiers import with_check_digit
from far.registers import RegistersClient, reference_app
from far.service import FarService
from far.settings import FarSettings, MinorsPolicy
from tests.conftest import interop_path
from tests.test_far_support import BILLO, KIVRA, NOW, make_service

ADMIN = "admin-token-0123456789"
OP_A = "kivra-token-0123456789"  # Kivra's: its own record and holders
OP_B = "billo-token-0123456789"  # Billo's
REGISTERS_TOKEN = "registers-token-0123456789"
EID = EidCa()

ADULT = "19" + with_check_digit("800101123")
OTHER_ADULT = "19" + with_check_digit("750505123")
GUARDIAN = "19" + with_check_digit("820202123")
CHILD = "20" + with_check_digit("160505123")  # 10 on 2026-11-30
TEEN = "20" + with_check_digit("120303123")  # 14
SIGNER_1 = "19" + with_check_digit("700707123")
SIGNER_2 = "19" + with_check_digit("710808123")
ORGNR = with_check_digit("556677889")
COMPANY = "16" + ORGNR
EIDAS = "DE/SE/1234567890ABC"
TEXT = "Jag vill ha en digital brevlåda och godkänner villkoren."

REGISTERS: dict[str, Any] = {
    "persons": {
        TEEN: {"name": "Tuva Tonåring", "guardians": [{"id": GUARDIAN, "name": "Greta Förälder"}]},
        CHILD: {"name": "Kalle Barn", "guardians": [{"id": GUARDIAN, "name": "Greta Förälder"}]},
    },
    "companies": {
        ORGNR: {
            "name": "Exempel AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas två i förening av styrelsens ledamöter",
            "signatories": [{"id": SIGNER_1, "name": "Stina Styrelse"}, {"id": SIGNER_2, "name": "Sven Styrelse"}],
        },
    },
    "roles": {ORGNR: {ADULT: ["read"]}},
}


def settings(**changes: Any) -> FarSettings:
    """FaR's settings: an administrator, Kivra's and Billo's tokens, the test e-ID CA."""
    base = {
        "tokens": (
            BearerToken("admin", ADMIN, scopes("read", "write")),
            BearerToken("kivra", OP_A, scopes("read", f"write:operator={KIVRA.id}")),
            BearerToken("billo", OP_B, scopes("read", f"write:operator={BILLO.id}")),
        ),
        "eid_anchors": (EID.certificate,),
        "eid_max_age": timedelta(minutes=10),
        "minors": MinorsPolicy(own_mailbox_age=16, consent_age=13, senders_told="minor"),
    }
    return FarSettings(**{**base, **changes})


def auth(token: str) -> dict[str, str]:
    """The Authorization header."""
    return {"Authorization": f"Bearer {token}"}


def signed(text: str, *identities: str, **options: Any) -> list[dict[str, Any]]:
    """The REST signatures of ``identities`` over ``text``, dated FaR's now."""
    return [EID.sign(text, identity, at=NOW, **options).to_json() for identity in identities]


@dataclass
class Far:
    """A running FaR (in this process, over real HTTP) with the reference registers beside it."""

    client: TestClient[Any, Any]
    service: FarService
    registers: TestServer

    async def call(self, method: str, path: str, token: str = ADMIN, body: Any = None) -> tuple[int, Any]:
        """Status and JSON body."""
        response = await self.client.request(method, path, json=body, headers=auth(token))
        return response.status, await response.json(content_type=None)

    async def register(self, recipient: str, *signers: str, token: str = OP_A, **extra: Any) -> tuple[int, Any]:
        """POST /api/v1/registrations signed by ``signers`` (the recipient when none are named)."""
        body = {"recipient": recipient, "agreement_text": TEXT, "signatures": signed(TEXT, *(signers or (recipient,)))}
        return await self.call("POST", "/api/v1/registrations", token, {**body, **extra})

    async def reachable(self, recipient: str) -> dict[str, Any]:
        """FaR's answer about one recipient."""
        return (await self.service.is_reachable("2021005448", [recipient]))[0].to_json()

    async def audit(self, entity_id: str) -> list[dict[str, Any]]:
        """The audit trail, newest first."""
        return list(await self.service.audit_trail(entity_id))

    async def change_company(self, orgnr: str, record: dict[str, Any]) -> None:
        """Replace a company in the business register (as Bolagsverket would after a change of signatory)."""
        url = self.registers.make_url(f"/business/v1/companies/{orgnr}")
        async with self.client.session.put(url, json=record, headers=auth(REGISTERS_TOKEN)) as response:
            assert response.status == 204


Client = Callable[..., Awaitable[TestClient[Any, Any]]]


async def running_far(
    aiohttp_client: Client, aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Path, **changes: Any
) -> AsyncIterator[Far]:
    """FaR with Kivra and Billo, the reference registers on their own HTTP server."""
    registers = await aiohttp_server(reference_app(REGISTERS, token=REGISTERS_TOKEN))
    service = await make_service(tmp_path / "far.db")
    client = RegistersClient(str(registers.make_url("")).rstrip("/"))
    app = create_app(settings(**changes), service=service, registers=client)
    try:
        yield Far(await aiohttp_client(app), service, registers)
    finally:
        await client.close()
        await service.engine.dispose()


@cache
def contract_schema() -> etree.XMLSchema:
    """Recipient v2 and v3 of the contract, and Common v3 (applicationFault)."""
    contracts = interop_path("minameddelanden/contracts/schema")
    imports = "".join(
        f'<xs:import namespace="http://minameddelanden.gov.se/schema/{ns}" schemaLocation="{location}"/>'
        for ns, location in (
            ("Recipient/v3", "v3/Recipient.xsd"),
            ("Recipient/v2", "v2/Recipient.xsd"),
            ("Common/v3", "v3/Common.xsd"),
        )
    )
    schema = '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:v2v3">'
    wrapper = f"{schema}{imports}</xs:schema>"
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), base_url=contracts.as_uri() + "/"))


@cache
def v4_schema() -> etree.XMLSchema:
    """far/schema/recipient-v4.xsd."""
    return etree.XMLSchema(etree.parse(str(Path(__file__).resolve().parents[1] / "far/schema/recipient-v4.xsd")))


def envelope(body: str, **namespaces: str) -> bytes:
    """A SOAP 1.1 request with ``body`` (prefixes from ``namespaces``)."""
    declared = "".join(f' xmlns:{prefix}="{uri}"' for prefix, uri in namespaces.items())
    return (
        f'<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"{declared}><S:Body>{body}</S:Body>'
        "</S:Envelope>"
    ).encode()


def body_child(answer: bytes) -> etree._Element:
    """The single child of the SOAP Body."""
    root = etree.fromstring(answer)
    children = [c for c in root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body") if isinstance(c.tag, str)]
    assert len(children) == 1
    return children[0]
