"""Helpers shared by the FaR tests (no tests here): a service on a SQLite file, the Recipient v3 schema."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from lxml import etree

from far.identifiers import Policy
from far.model import AccountStatus, create_engine, upgrade_schema
from far.service import FarService, Operator
from tests.conftest import interop_path

SENDER = "2021005448"  # Skatteverket's organisationsnummer: a valid check digit
OTHER_SENDER = "2120000142"
KIVRA = Operator(
    "5568402266",
    "Kivra",
    "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007:5568402266",
    "https://as4.kivra.example/as4",
    "https://mm.kivra.example/service/v3",
    "https://www.kivra.com",
)
BILLO = Operator("5567807507", "Billo", "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007:5567807507", None)
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def make_service(path: Path | str, *, policy: Policy | None = None) -> FarService:
    """A FarService on a fresh SQLite file (or database URL) with Kivra and Billo as operators."""
    engine = create_engine(path if isinstance(path, str) else f"sqlite+aiosqlite:///{path}")
    await upgrade_schema(engine)
    service = FarService(engine, policy=policy or Policy(), now=lambda: NOW)
    for operator in (KIVRA, BILLO):
        await service.put_operator(operator, actor="test")
    return service


async def seed_people(far: FarService) -> None:
    """One recipient for each reachability reason (see test_far_service)."""
    for rid, status, pending, operator in (
        ("197802022389", AccountStatus.SECURE, False, KIVRA.id),  # reachable at Kivra
        ("198112189876", AccountStatus.SECURE, False, BILLO.id),  # reachable, endpoint by discovery
        ("194004048569", AccountStatus.ANONYMOUS, False, KIVRA.id),
        ("195806142377", AccountStatus.NONE, True, None),  # registration pending
        ("196408233234", AccountStatus.NONE, False, None),  # had a mailbox, closed it
        ("201112192396", AccountStatus.SECURE, True, KIVRA.id),  # pending change, still reachable
        ("165568402266", AccountStatus.SECURE, False, BILLO.id),  # an organisation (Kivra itself, at Billo)
    ):
        await far.put_recipient(
            rid, status=status, pending=pending, operator_id=operator, actor="test", last_registration=NOW
        )
    await far.put_recipient("199001302380", status=AccountStatus.SECURE, operator_id=KIVRA.id, actor="test")
    await far.refuse_sender("199001302380", SENDER, actor="test")


@cache
def recipient_schema() -> etree.XMLSchema:
    """The Recipient v3 schema (and Common v3 for applicationFault) from ../shared/interop/minameddelanden."""
    contracts = interop_path("minameddelanden/contracts/schema")
    wrapper = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:far:test:all">'
        '<xs:import namespace="http://minameddelanden.gov.se/schema/Recipient/v3" schemaLocation="v3/Recipient.xsd"/>'
        '<xs:import namespace="http://minameddelanden.gov.se/schema/Common/v3" schemaLocation="v3/Common.xsd"/>'
        "</xs:schema>"
    )
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), base_url=contracts.as_uri() + "/"))


def soap_body_child(envelope: bytes) -> etree._Element:
    """The single child of a SOAP 1.1 Body."""
    root = etree.fromstring(envelope)
    body = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body")
    assert body is not None
    children = [c for c in body if isinstance(c.tag, str)]
    assert len(children) == 1
    return children[0]
