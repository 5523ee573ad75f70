"""Holder encryption keys in FaR: operator-scoped registration, audit, publication over REST and SOAP, refusals."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.xml import string_value
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing.holders import holder_key, signing_holder_key
from accesspoint.testing.pki import issue, make_ca
from far.app import create_app
from far.holder_keys_api import NAMESPACE
from far.service import FarService
from far.settings import FarSettings
from tests.test_far_rest import problem
from tests.test_far_support import BILLO, KIVRA, SENDER, make_service, seed_people

HOLDER = "197802022389"  # a Kivra holder (test_far_support.seed_people)
KIVRA_TOKEN = "kivra-writes-0123456789"
BILLO_TOKEN = "billo-writes-0123456789"
READER = "reader-token-0123456789"
SETTINGS = FarSettings(
    tokens=(
        BearerToken("kivra", KIVRA_TOKEN, scopes(f"write:operator={KIVRA.id}", "read")),
        BearerToken("billo", BILLO_TOKEN, scopes(f"write:operator={BILLO.id}", "read")),
        BearerToken("reader", READER, scopes("read")),
    )
)
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def client(aiohttp_client: Client, tmp_path: Path) -> AsyncIterator[TestClient[Any, Any]]:
    far: FarService = await make_service(tmp_path / "far.db")
    await seed_people(far)
    yield await aiohttp_client(create_app(SETTINGS, service=far))
    await far.engine.dispose()


@pytest.fixture(scope="module")
def ca() -> KeyPair:
    return make_ca("Holder key CA")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _pem(pair: KeyPair) -> str:
    return pair.certificate.public_bytes(serialization.Encoding.PEM).decode()


async def _register(client: TestClient[Any, Any], pair: KeyPair, token: str = KIVRA_TOKEN) -> Any:
    return await client.put(f"/api/v1/holder-keys/{HOLDER}", json={"certificate": _pem(pair)}, headers=_auth(token))


async def test_operator_registers_and_reachability_publishes(client: TestClient[Any, Any], ca: KeyPair) -> None:
    """The holder's operator registers an X25519 key; /reachable then names its key id and certificate."""
    key = holder_key(ca, HOLDER, "x25519")
    created = await _register(client, key)
    assert created.status == 201
    assert (await created.json())["state"] == "current"
    answer = await client.post(
        "/api/v1/reachable", json={"sender": SENDER, "recipients": [HOLDER, "197001011234"]}, headers=_auth(READER)
    )
    first, second = (await answer.json())["results"]
    assert first["encryption_key"]["key_id"] == cms.key_id(key.certificate)
    assert first["encryption_key"]["key_type"] == "x25519"
    assert first["encryption_key"]["certificate"] == _pem(key)
    assert second["encryption_key"] is None  # no key (and not reachable): said so


async def test_rotation_keeps_the_previous_key(client: TestClient[Any, Any], ca: KeyPair) -> None:
    """A newer key becomes current and is published; the older one stays listed as previous for old mail."""
    old, new = holder_key(ca, HOLDER, "rsa"), holder_key(ca, HOLDER, "x25519")
    assert (await _register(client, old)).status == 201
    assert (await _register(client, new)).status == 201
    listed = (await (await client.get(f"/api/v1/holder-keys/{HOLDER}", headers=_auth(READER))).json())["keys"]
    assert [(k["key_id"], k["state"]) for k in listed] == [
        (cms.key_id(new.certificate), "current"),
        (cms.key_id(old.certificate), "previous"),
    ]
    current = await client.post("/api/v1/holder-keys/current", json={"recipients": [HOLDER]}, headers=_auth(READER))
    assert (await current.json())["results"][0]["encryption_key"]["key_id"] == cms.key_id(new.certificate)


async def test_another_operator_is_refused_and_audited(client: TestClient[Any, Any], ca: KeyPair) -> None:
    """Billo cannot register a key for Kivra's holder: 403, nothing stored, the attempt in the audit trail."""
    refused = await _register(client, holder_key(ca, HOLDER, "x25519"), BILLO_TOKEN)
    await problem(refused, 403, "forbidden")
    listed = await (await client.get(f"/api/v1/holder-keys/{HOLDER}", headers=_auth(READER))).json()
    assert listed["keys"] == []
    trail = await (await client.get(f"/api/v1/audit/{HOLDER}", headers=_auth(READER))).json()
    refusal = next(c for c in trail["changes"] if c["action"] == "refuse")
    assert refusal["actor"] == "billo" and refusal["entity"] == "holder-key"


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda ca: issue(ca, "signer", "ed25519"), "key-type"),
        (lambda ca: signing_holder_key(ca, HOLDER), "key-usage"),
        (lambda ca: holder_key(ca, HOLDER, "x25519", not_after=datetime(2025, 1, 1, tzinfo=UTC)), "expired"),
    ],
    ids=["wrong-type", "wrong-usage", "expired"],
)
async def test_bad_certificates_are_refused(
    client: TestClient[Any, Any], ca: KeyPair, make: Callable[[KeyPair], KeyPair], rule: str
) -> None:
    """A certificate of the wrong type or usage, or an expired one, is a 400 naming the field and the rule."""
    body = await problem(await _register(client, make(ca)), 400)
    assert body["field"] == "certificate" and f"({rule})" in body["detail"]


async def test_revoked_key_is_not_published(client: TestClient[Any, Any], ca: KeyPair) -> None:
    """A withdrawn key is no longer the holder's key: reachability says the holder has none."""
    key = holder_key(ca, HOLDER, "rsa")
    await _register(client, key)
    gone = await client.delete(
        f"/api/v1/holder-keys/{HOLDER}/{cms.key_id(key.certificate)}", headers=_auth(KIVRA_TOKEN)
    )
    assert gone.status == 204
    current = await client.post("/api/v1/holder-keys/current", json={"recipients": [HOLDER]}, headers=_auth(READER))
    assert (await current.json())["results"][0]["encryption_key"] is None


async def test_soap_operation_beside_recipient_v3(client: TestClient[Any, Any], ca: KeyPair) -> None:
    """getEncryptionKeys answers each recipient in order with HasKey and, when true, the key and certificate."""
    key = holder_key(ca, HOLDER, "x25519")
    await _register(client, key)
    request = (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        f'<hk:getEncryptionKeys xmlns:hk="{NAMESPACE}"><hk:recipientId>{HOLDER}</hk:recipientId>'
        "<hk:recipientId>197001011234</hk:recipientId></hk:getEncryptionKeys></S:Body></S:Envelope>"
    )
    response = await client.post("/HolderKeys/v1", data=request, headers={"Content-Type": "text/xml"})
    assert response.status == 200
    tree = etree.fromstring(await response.read())
    returns = tree.findall(f".//{{{NAMESPACE}}}return")

    def value(element: etree._Element, name: str) -> str:
        found = element.find(f".//{{{NAMESPACE}}}{name}")
        assert found is not None, name
        return string_value(found)

    assert [value(r, "HasKey") for r in returns] == ["true", "false"]
    certificate = value(returns[0], "Certificate")
    assert base64.b64decode(certificate) == key.certificate.public_bytes(serialization.Encoding.DER)
    assert value(returns[0], "KeyId") == cms.key_id(key.certificate)


async def test_soap_unknown_operation_is_a_fault(client: TestClient[Any, Any]) -> None:
    """Another operation on the holder key endpoint is fault 1002."""
    request = (
        '<S:Envelope xmlns:S="http://schemas.xmlsoap.org/soap/envelope/"><S:Body>'
        f'<hk:deleteEverything xmlns:hk="{NAMESPACE}"/></S:Body></S:Envelope>'
    )
    response = await client.post("/HolderKeys/v1", data=request, headers={"Content-Type": "text/xml"})
    assert response.status == 500
    assert b"<c:ErrorCode>1002</c:ErrorCode>" in await response.read()
