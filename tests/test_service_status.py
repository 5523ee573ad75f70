"""FaR's, the SMP's and the operator's GET /status on their admin listeners: what each one's operators need, for a
token with the status scope only, never on the service's public address."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from accesspoint.servicekit.observability import AdminSettings, Observability
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing import services
from accesspoint.testing.smp import metadata, publish
from accesspoint.testing.smp import settings as smp_settings
from far.app import create_app as create_far
from far.settings import FarSettings
from operators.service import Operator
from operators.settings import AccessPointLink, OperatorSettings
from smp.server import serve as serve_smp
from tests.test_far_support import BILLO, KIVRA, NOW, make_service, seed_people
from tests.test_operators_support import INTERMEDIARY, OPERATOR, PERSON, SENDERS_CA

STATUS = "status-reader-0123456789"
SCRAPER = "prometheus-scraper-0123456789"
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def _admin() -> Observability:
    tokens = (BearerToken("status", STATUS, scopes("status")), BearerToken("prometheus", SCRAPER, scopes("metrics")))
    return Observability(admin=AdminSettings(port=services.free_port(), tokens=tokens))


async def _status(observability: Observability, token: str | None = STATUS) -> tuple[int, Any]:
    assert observability.admin is not None
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    url = f"http://127.0.0.1:{observability.admin.port}/status"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        return answer.status, await answer.json(content_type=None)


async def test_far_status_counts_recipients_operators_and_senders_and_tells_the_last_write(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    """FaR's /status gives recipients by status and pending, each operator with its recipients, senders by status,
    the last audited write and a reachable database (and says when it is not); 401 without a token, 403 for a
    metrics token, 404 on the API address."""
    far = await make_service(tmp_path / "far.db")
    await seed_people(far)
    observability = _admin()
    settings = FarSettings(tokens=(BearerToken("r", "reader-token-0123456789", scopes("read")),),
                           observability=observability)  # fmt: skip
    client = await aiohttp_client(create_far(settings, service=far))
    status, document = await _status(observability)
    assert status == 200, document
    assert (document["service"], document["ok"], document["database"]) == ("far", True, "ok")
    assert document["recipients"] == {"count": 8, "by_status": {"secure": 5, "anonymous": 1, "none": 2}, "pending": 2}
    served = {item["id"]: item["recipients"] for item in document["operators"]["items"]}
    assert document["operators"]["count"] == 2 and served == {KIVRA.id: 4, BILLO.id: 2}
    assert document["senders"] == {"count": 0, "by_status": {}}
    assert document["last_write"] == NOW.isoformat()
    assert (await _status(observability, None))[0] == 401
    assert (await _status(observability, SCRAPER))[0] == 403
    answer = await client.get("/status", headers={"Authorization": f"Bearer {STATUS}"})
    assert answer.status == 404
    await far.engine.dispose()
    for leftover in tmp_path.glob("far.db*"):  # the database gone: its tables are not there to read
        leftover.unlink()
    status, document = await _status(observability)
    assert (status, document["ok"]) == (200, False) and document["database"].startswith("unavailable")


async def test_smp_status_counts_the_published_participants_and_dates_the_signing_certificate(tmp_path: Path) -> None:
    """The SMP's /status gives the participants and ServiceMetadata it publishes and its signing certificate's
    not-after; its publishing address has no /status."""
    port = services.free_port()
    settings = dataclasses.replace(smp_settings(tmp_path, port), observability=_admin())
    running, store = await serve_smp(settings)
    try:
        base = f"http://127.0.0.1:{port}"
        status, document = await _status(settings.observability)
        assert status == 200 and document["published"] == {"participants": 0, "service_metadata": 0}
        await publish(f"{base}/oasis", metadata("https://ap.example/as4"))
        status, document = await _status(settings.observability)
        assert (document["service"], document["ok"]) == ("smp", True)
        assert document["published"] == {"participants": 1, "service_metadata": 1}
        (signing,) = [c for c in document["certificates"] if c["use"] == "SMP signing"]
        assert signing["not_after"] == settings.signing.certificate.not_valid_after_utc.isoformat()
        assert (await _status(settings.observability, SCRAPER))[0] == 403
        async with aiohttp.ClientSession() as http, http.get(f"{base}/status") as answer:
            # The publishing address reads /status as a participant id (and refuses it): no status there.
            assert answer.status >= 400 and "published" not in await answer.text()
    finally:
        await running.stop()
        await store.close()


async def test_operator_status_tells_mailboxes_pending_answers_and_certificate_dates(
    aiohttp_client: Client, tmp_path: Path
) -> None:
    """The operator's /status gives its mailboxes, the handled deliveries still waiting for their answer with the
    oldest, when the last answer was sent for, and its answer-signing certificate's not-after."""
    observability = _admin()
    settings = OperatorSettings(
        id="165568402266",
        name="Kivra",
        keys=OPERATOR,
        access_point=AccessPointLink(
            "http://127.0.0.1:9", "access-point-token-0123", "webhook-secret-0123456", poll_interval=timedelta(0)
        ),
        database=f"sqlite+aiosqlite:///{tmp_path / 'mailbox.db'}",
        storage=tmp_path / "mail",
        mailboxes=(PERSON, "197802022389"),
        intermediaries=(INTERMEDIARY.certificate,),
        sender_anchors=(SENDERS_CA.certificate,),
        observability=observability,
    )
    operator = Operator(settings, clock=lambda: NOW)
    client = await aiohttp_client(operator.application())
    status, document = await _status(observability)
    assert status == 200, document
    assert (document["service"], document["ok"]) == ("operator", True)
    assert document["mailboxes"] == {"count": 2, "by_state": {"active": 2}}
    assert document["answers_pending"] == {"count": 0, "oldest": None} and document["last_answer_sent"] is None
    first, later = NOW - timedelta(minutes=5), NOW - timedelta(minutes=1)
    await operator.store.reject("old@router", "no mailbox", now=first)
    await operator.store.reject("new@router", "no mailbox", now=later)
    await operator.store.replied("new@router", "reply-new@op", [])
    status, document = await _status(observability)
    assert document["answers_pending"] == {"count": 1, "oldest": first.isoformat()}
    assert document["last_answer_sent"] == later.isoformat()
    assert document["deliveries_in_progress"] == 0
    (signing,) = [c for c in document["certificates"] if c["use"] == "our answer-signing key"]
    assert signing["not_after"] == OPERATOR.certificate.not_valid_after_utc.isoformat()
    assert {c["use"] for c in document["certificates"]} >= {"sender anchor", "intermediary"}
    assert (await _status(observability, SCRAPER))[0] == 403
    assert (await client.get("/status", headers={"Authorization": f"Bearer {STATUS}"})).status == 404
