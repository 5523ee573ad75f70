"""FaR's REST API over real HTTP: bearer tokens and scopes, CRUD, the reachable query, problem bodies on 4xx."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from accesspoint.servicekit.tokens import BearerToken, scopes
from far.app import create_app
from far.service import FarService, Reachability, read_routes_answer
from far.settings import FarSettings
from tests.test_far_support import KIVRA, SENDER, make_service, seed_people

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
SETTINGS = FarSettings(
    tokens=(BearerToken("admin", ADMIN, scopes("read", "write")), BearerToken("reader", READER, scopes("read")))
)
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(aiohttp_client: Client, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    far: FarService = await make_service(tmp_path / "far.db")
    await seed_people(far)
    yield await aiohttp_client(create_app(SETTINGS, service=far))
    await far.engine.dispose()


def auth(token: str = ADMIN) -> dict[str, str]:
    """The Authorization header for ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def problem(response: Any, status: int, kind: str | None = None) -> dict[str, Any]:
    """Assert an RFC 9457 problem answer with ``status`` (of type ``kind``, else about:blank); return its body."""
    assert response.status == status
    assert response.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, Any] = await response.json(content_type=None)
    expected = "about:blank" if kind is None else f"urn:accesspoint:problem:{kind}"
    assert body["status"] == status and body["title"] and body["detail"] and body["type"] == expected
    return body


async def test_reachable_query(client: TestClient[Any, Any]) -> None:
    """POST /api/v1/reachable answers each recipient with reason, operator and endpoint."""
    response = await client.post(
        "/api/v1/reachable",
        json={"sender": SENDER, "recipients": ["197802022389", "199001302380", "ES/SE/1"]},
        headers=auth(READER),
    )
    assert response.status == 200
    results = (await response.json())["results"]
    assert [(r["recipient"], r["reachable"], r["reason"]) for r in results] == [
        ("197802022389", True, None),
        ("199001302380", False, "sender-refused"),
        ("ES/SE/1", False, "no-mailbox"),
    ]
    assert results[0]["endpoint"] == KIVRA.endpoint and results[0]["operator"]["id"] == KIVRA.id


async def test_the_routes_answer_routes_every_recipient_as_the_full_answer_does(client: TestClient[Any, Any]) -> None:
    """``"answer": "routes"`` names each operator once and reads back to the full answer's routing fields."""
    recipients = ["197802022389", "199001302380", "ES/SE/1", "not-a-person", "197802022389"]
    asked = {"sender": SENDER, "recipients": recipients}
    full = await (await client.post("/api/v1/reachable", json=asked, headers=auth(READER))).json()
    response = await client.post("/api/v1/reachable", json={**asked, "answer": "routes"}, headers=auth(READER))
    assert response.status == 200
    routes = await response.json()
    assert routes["results"] == [0, "sender-refused", "no-mailbox", "invalid-identifier", 0]
    assert [o["id"] for o in routes["operators"]] == [KIVRA.id]

    def routed(answers: list[Reachability]) -> list[tuple[Any, ...]]:
        return [(a.recipient, a.reachable, a.reason, a.operator if a.reachable else None, a.endpoint) for a in answers]

    expected = [Reachability.from_json(item) for item in full["results"]]
    assert routed(read_routes_answer(recipients, routes)) == routed(expected)
    with pytest.raises(IndexError):
        read_routes_answer(recipients, {**routes, "results": [1, *routes["results"][1:]]})


async def test_recipient_crud_and_eidas_in_the_path(client: TestClient[Any, Any]) -> None:
    """An eIDAS recipient is created, read, refused a sender, audited and deleted through its encoded id."""
    path = "/api/v1/recipients/ES%2FSE%2F99999142H"
    body = {"status": "secure", "operator": KIVRA.id, "last_registration": "2026-01-02T03:04:05+01:00"}
    created = await client.put(path, json=body, headers=auth())
    assert created.status == 201
    assert (await created.json())["kind"] == "eidas"
    assert (await client.put(path, json=body, headers=auth())).status == 200
    got = await (await client.get(path, headers=auth(READER))).json()
    assert got["last_registration"] == "2026-01-02T02:04:05+00:00"
    assert (await client.put(path + f"/refusals/{SENDER}", headers=auth())).status == 201
    refusals = await (await client.get(path + "/refusals", headers=auth())).json()
    assert [r["sender"] for r in refusals["refused"]] == [f"0007:{SENDER}"]  # the sender as a party id
    trail = await (await client.get("/api/v1/audit/ES%2FSE%2F99999142H", headers=auth())).json()
    assert [c["action"] for c in trail["changes"]] == ["update", "create"]
    assert all(c["actor"] == "admin" for c in trail["changes"])
    assert (await client.delete(path + f"/refusals/{SENDER}", headers=auth())).status == 204
    assert (await client.delete(path, headers=auth())).status == 204
    await problem(await client.get(path, headers=auth()), 404)


async def test_operators(client: TestClient[Any, Any]) -> None:
    """Operators are listed, created with an endpoint or discovery, and protected while in use."""
    listed = await (await client.get("/api/v1/operators", headers=auth())).json()
    assert {o["id"] for o in listed["operators"]} == {"5568402266", "5567807507"}
    body = {"name": "Min myndighetspost", "party_id": "urn:test:mmp", "endpoint": "discovery"}
    created = await client.put("/api/v1/operators/2021005448", json=body, headers=auth())
    assert created.status == 201
    assert (await created.json())["endpoint"] == "discovery"
    assert (await client.delete("/api/v1/operators/2021005448", headers=auth())).status == 204
    await problem(await client.delete(f"/api/v1/operators/{KIVRA.id}", headers=auth()), 409)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "/api/v1/reachable", {"sender": "123", "recipients": []}, 400, "sender"),
        ("POST", "/api/v1/reachable", {"sender": SENDER}, 400, "recipients"),
        ("POST", "/api/v1/reachable", {"sender": SENDER, "recipients": [], "answer": "short"}, 400, "answer"),
        ("POST", "/api/v1/reachable", {"sender": SENDER, "recipients": [1]}, 400, "recipients"),
        ("POST", "/api/v1/reachable", {"sender": SENDER, "recipients": ["197802022389"] * 1001}, 400, "recipients"),
        ("POST", "/api/v1/reachable", [1, 2], 400, None),
        ("PUT", "/api/v1/recipients/197802022388", {"status": "secure", "operator": KIVRA.id}, 400, "recipient"),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "gold"}, 400, "status"),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "secure"}, 400, "operator"),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "none", "colour": "red"}, 400, "colour"),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "none", "pending": "yes"}, 400, "pending"),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "none", "last_registration": "soon"}, 400, None),
        ("PUT", "/api/v1/recipients/197802022389", {"status": "secure", "operator": "2021005448"}, 400, "operator"),
        ("PUT", "/api/v1/operators/2021005448", {"name": "x", "party_id": "p", "endpoint": "ftp://x"}, 400, None),
        ("PUT", "/api/v1/operators/2021005449", {"name": "x", "party_id": "p", "endpoint": "discovery"}, 400, "id"),
        ("PUT", "/api/v1/operators/2021005448", {"name": "\x07", "party_id": "p", "endpoint": "discovery"}, 400, None),
        ("GET", "/api/v1/recipients/191001012382", None, 404, None),
        ("DELETE", "/api/v1/recipients/197802022389/refusals/2120000142", None, 404, None),
        ("GET", "/api/v1/nowhere", None, 404, None),
    ],
)
async def test_bad_input_gets_a_problem_body(
    client: TestClient[Any, Any], method: str, path: str, body: Any, status: int, field: str | None
) -> None:
    """Each bad request gets a 4xx problem document naming the offending field where there is one."""
    response = await client.request(method, path, json=body, headers=auth())
    answer = await problem(response, status)
    if field is not None:
        assert answer["field"] == field


async def test_body_that_is_not_json(client: TestClient[Any, Any]) -> None:
    """A body that is not JSON is a 400 problem."""
    response = await client.post("/api/v1/reachable", data=b"{not json", headers=auth())
    await problem(response, 400)


@pytest.mark.parametrize(
    ("header", "challenge"),
    [
        (None, 'Bearer realm="far"'),
        (ADMIN, 'Bearer realm="far"'),  # a bare token, without the scheme
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l", 'Bearer realm="far"'),
        (
            "Bearer wrong-token-0123456789",
            'Bearer realm="far", error="invalid_token", error_description="unknown token"',
        ),
    ],
)
async def test_missing_or_wrong_token_is_401(client: TestClient[Any, Any], header: str | None, challenge: str) -> None:
    """Without a valid bearer token the API answers 401 with WWW-Authenticate (invalid_token for a wrong one)."""
    headers = {} if header is None else {"Authorization": header}
    response = await client.get("/api/v1/operators", headers=headers)
    await problem(response, 401, "unauthorised")
    assert response.headers["WWW-Authenticate"] == challenge


async def test_the_scheme_is_case_insensitive(client: TestClient[Any, Any]) -> None:
    """bearer and BEARER are the Bearer scheme too."""
    for scheme in ("bearer", "BEARER"):
        response = await client.get("/api/v1/operators", headers={"Authorization": f"{scheme} {READER}"})
        assert response.status == 200


async def test_read_token_cannot_write(client: TestClient[Any, Any]) -> None:
    """A token with the read scope only may query but not change anything."""
    response = await client.delete("/api/v1/recipients/197802022389", headers=auth(READER))
    await problem(response, 403, "forbidden")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="far", error="insufficient_scope", scope="write"'
