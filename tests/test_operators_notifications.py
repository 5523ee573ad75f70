"""Holders told that mail arrived, never what it says (e-mail through a real SMTP server, SMS and push recorded),
as their settings say; a company's contacts only while FaR says they may view its mailbox; and erasure — on the
holder's signed request and by the retention rule for closed mailboxes — audited, files and all."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from accesspoint.testing.mailboxes import deliver_letter
from accesspoint.testing.smtp import SmtpServer, smtp_server
from operators.letters import Letter
from operators.service import Operator
from operators.settings import Notifications
from tests.test_far_holders_support import (
    ADULT,
    COMPANY,
    EID,
    ORGNR,
    OTHER_ADULT,
    SIGNER_1,
    SIGNER_2,
    TEXT,
    running_far,
)
from tests.test_far_support import NOW
from tests.test_operators_holders_support import Desk, operator_settings
from tests.test_operators_support import INTERMEDIARY, SENDERS_CA, sealed, secure_delivery

Client = Callable[..., Awaitable[TestClient[Any, Any]]]
Server = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """aiosmtpd on loopback."""
    with smtp_server() as server:
        yield server


@dataclass
class Clock:
    """A clock the test moves."""

    now: Any = NOW

    def __call__(self) -> Any:
        return self.now


@pytest.fixture
async def desk(
    aiohttp_client: Client, aiohttp_server: Server, tmp_path: Path, smtp: SmtpServer
) -> AsyncIterator[tuple[Desk, Clock]]:
    """FaR and Kivra's operator with SMTP and recorded SMS and push."""
    async for far in running_far(aiohttp_client, aiohttp_server, tmp_path):
        settings = operator_settings(
            far,
            tmp_path,
            notifications=Notifications(
                smtp.host, smtp.port, "brevlada@kivra.example", tmp_path / "sms.jsonl", tmp_path / "push.jsonl"
            ),
            closed_retention=timedelta(days=30),
            intermediaries=(INTERMEDIARY.certificate,),
            sender_anchors=(SENDERS_CA.certificate,),
        )
        clock = Clock()
        operator = Operator(settings, clock=clock)
        yield Desk(far, await aiohttp_client(operator.application()), operator), clock


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def _letter(desk: Desk, holder: str, origin: str) -> Letter:
    letter = await deliver_letter(desk.operator, origin, [("d@x", "application/xml", sealed(secure_delivery(holder)))])
    assert desk.operator.notifier is not None
    await desk.operator.notifier.mail_arrived(letter)
    return letter


async def test_a_holder_is_notified_on_each_channel_without_the_content(
    desk: tuple[Desk, Clock], smtp: SmtpServer, tmp_path: Path
) -> None:
    """E-mail, SMS and push each say that mail arrived; none names the sender, the subject or the body; a switched
    off channel stays silent."""
    d, _clock = desk
    assert (await d.open(ADULT))[0] == 201
    token = await d.login(ADULT)
    contacts = {"email": "alice@example.se", "sms": "+46701234567", "push": "device-token-1"}
    assert (await d.call("PUT", f"/api/v1/holders/{ADULT}/contacts", contacts, token))[0] == 200
    await _letter(d, ADULT, "first@router")
    (mail,) = smtp.bag.to("alice@example.se")
    text = mail.get_content() + mail["Subject"]
    assert "Ny digital post" in mail["Subject"] and ADULT in text
    for secret in ("Beslut om skatt", "Ditt beslut", "Skatteverket", "beslut.pdf"):
        assert secret not in text
    (sms,) = _records(tmp_path / "sms.jsonl")
    (push,) = _records(tmp_path / "push.jsonl")
    assert sms["to"] == "+46701234567" and push["to"] == "device-token-1"
    assert all("Beslut" not in r["text"] for r in (sms, push))
    off = {"sms": {"address": "+46701234567", "enabled": False}}
    assert (await d.call("PUT", f"/api/v1/holders/{ADULT}/contacts", off, token))[0] == 200
    await _letter(d, ADULT, "second@router")
    assert len(smtp.bag.to("alice@example.se")) == 2
    assert len(_records(tmp_path / "sms.jsonl")) == 1 and len(_records(tmp_path / "push.jsonl")) == 2


async def test_a_former_signatory_stops_being_notified(desk: tuple[Desk, Clock], smtp: SmtpServer) -> None:
    """A signatory's contact for the company mailbox is notified until the business register says otherwise."""
    d, _clock = desk
    assert (await d.open(COMPANY, SIGNER_1, SIGNER_2))[0] == 201
    token = await d.login(SIGNER_1)
    assert (await d.call("PUT", f"/api/v1/holders/{COMPANY}/contacts", {"email": "stina@ex.se"}, token))[0] == 200
    await _letter(d, COMPANY, "company-1@router")
    assert len(smtp.bag.to("stina@ex.se")) == 1
    await d.far.change_company(
        ORGNR,
        {
            "name": "Exempel AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas var för sig av ledamöterna",
            "signatories": [{"id": SIGNER_2, "name": "Sven Styrelse"}, {"id": OTHER_ADULT, "name": "Nya Nisse"}],
        },
    )
    newcomer = await d.login(OTHER_ADULT)
    assert (await d.call("PUT", f"/api/v1/holders/{COMPANY}/contacts", {"email": "nisse@ex.se"}, newcomer))[0] == 200
    await _letter(d, COMPANY, "company-2@router")
    assert len(smtp.bag.to("stina@ex.se")) == 1 and len(smtp.bag.to("nisse@ex.se")) == 1


async def test_erasure_on_request_removes_letters_and_files(desk: tuple[Desk, Clock]) -> None:
    """The holder's signed request erases every letter, mail and file; another person's signature is refused."""
    d, _clock = desk
    assert (await d.open(ADULT))[0] == 201
    letter = await _letter(d, ADULT, "to-erase@router")
    stranger = {"agreement_text": TEXT, "signatures": [EID.sign(TEXT, OTHER_ADULT, at=NOW).to_json()]}
    status, body = await d.call("DELETE", f"/api/v1/holders/{ADULT}/mail", stranger)
    assert status == 422 and body["code"] == "identity"
    assert d.operator.files.folder(letter.uid).exists()
    request = {"agreement_text": TEXT, "signatures": [EID.sign(TEXT, ADULT, at=NOW).to_json()]}
    status, body = await d.call("DELETE", f"/api/v1/holders/{ADULT}/mail", request)
    assert status == 200 and body["erased_letters"] == 1
    assert await d.operator.store.letters_of(ADULT) == [] and await d.operator.store.list(ADULT) == []
    assert not d.operator.files.folder(letter.uid).exists()
    (erased,) = [a for a in await d.operator.store.audit_trail(ADULT) if a["action"] == "erase"]
    assert erased["actor"] == f"person:{ADULT}" and erased["detail"]["letters"] == 1


async def test_a_closed_mailbox_is_erased_when_its_retention_runs_out(desk: tuple[Desk, Clock]) -> None:
    """Closed today, its mail is kept for 30 days and erased by the next sweep after; an open one is never."""
    d, clock = desk
    assert (await d.open(ADULT))[0] == 201
    assert (await d.open(OTHER_ADULT))[0] == 201
    closing = await _letter(d, ADULT, "closing@router")
    await _letter(d, OTHER_ADULT, "keeps@router")
    request = {"agreement_text": TEXT, "signatures": [EID.sign(TEXT, ADULT, at=NOW).to_json()]}
    assert (await d.call("DELETE", f"/api/v1/holders/{ADULT}", request))[0] == 200
    clock.now = NOW + timedelta(days=29)
    assert await d.operator.retention.sweep() == []
    clock.now = NOW + timedelta(days=31)
    assert await d.operator.retention.sweep() == [ADULT]
    assert await d.operator.store.letters_of(ADULT) == [] and not d.operator.files.folder(closing.uid).exists()
    assert len(await d.operator.store.letters_of(OTHER_ADULT)) == 1
    (erased,) = [a for a in await d.operator.store.audit_trail(ADULT) if a["action"] == "retention-erase"]
    assert erased["actor"] == "retention" and erased["detail"]["letters"] == 1
