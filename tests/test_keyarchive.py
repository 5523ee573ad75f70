"""The key archive: e-ID-gated release to the holder's new device, rotation, deletion, two-person administration,
rate limits and the hash-chained audit log, over real HTTP with the master key in SoftHSM2."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from accesspoint.keyarchive.app import create_app
from accesspoint.keyarchive.client import ArchiveClient, ArchiveRefusal
from accesspoint.keyarchive.eid import sign_proof
from accesspoint.keyarchive.master import TokenSettings
from accesspoint.keyarchive.service import Limits, client_key_binding
from accesspoint.keyarchive.settings import ArchiveSettings
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.observability import AdminSettings, Observability
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing import services
from accesspoint.testing.holders import eid_certificate, holder_key
from accesspoint.testing.hsm import shared_softhsm
from accesspoint.testing.pki import make_ca
from tests.conftest import REPO

HOLDER = "197802022389"
OTHER = "198112189876"
ANNA, BERTIL = "admin-anna-0123456789", "admin-bertil-0123456789"
SCRAPER = "keyarchive-scraper-0123456789"
OLD_MAIL = b"<Letter>Ditt beslut finns i brevladan.</Letter>"


@dataclass
class Archive:
    url: str
    database: Path
    eid: KeyPair  # the holder's e-ID
    other_eid: KeyPair  # another person's, from the same e-ID CA
    holder_ca: KeyPair


@pytest.fixture(scope="module")
def pki() -> tuple[KeyPair, KeyPair]:
    return make_ca("Test e-ID CA", "p256"), make_ca("Holder key CA")


async def _archive(
    aiohttp_server: Any,
    tmp_path: Path,
    pki: tuple[KeyPair, KeyPair],
    *,
    observability: Observability | None = None,
    **limits: Any,
) -> Archive:
    hsm = shared_softhsm()
    eid_ca, holder_ca = pki
    settings = ArchiveSettings(
        hsm=TokenSettings(hsm.module, "archive", hsm.pin),
        eid_anchors=(eid_ca.certificate,),
        database=f"sqlite+aiosqlite:///{tmp_path / 'archive.db'}",
        master_label=f"master-{uuid.uuid4().hex[:8]}",
        limits=replace(Limits(), **limits),
        tokens=(BearerToken("anna", ANNA, scopes("admin")), BearerToken("bertil", BERTIL, scopes("admin"))),
        observability=observability or Observability(),
    )
    server = await aiohttp_server(create_app(settings))
    return Archive(
        str(server.make_url("")).rstrip("/"),
        tmp_path / "archive.db",
        eid_certificate(eid_ca, HOLDER),
        eid_certificate(eid_ca, OTHER),
        holder_ca,
    )


@pytest.fixture
async def archive(aiohttp_server: Any, tmp_path: Path, pki: tuple[KeyPair, KeyPair]) -> AsyncIterator[Archive]:
    yield await _archive(aiohttp_server, tmp_path, pki)


async def _admin(archive: Archive, token: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(archive.url + path, json=body or {}, headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        return response.status, await response.json(content_type=None)


def _verify_log(database: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "accesspoint", "keyarchive", "verify-log", "--database",
         f"sqlite+aiosqlite:///{database}", *extra],
        cwd=REPO, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    return result.returncode, json.loads(result.stdout)


async def test_new_device_reads_old_mail_and_rotation_keeps_old_keys(archive: Archive) -> None:
    """The holder deposits a key, rotates to a second; a new device gets both released and reads old and new mail."""
    first, second = holder_key(archive.holder_ca, HOLDER, "x25519"), holder_key(archive.holder_ca, HOLDER, "rsa")
    client = ArchiveClient(archive.url, archive.eid)
    await client.deposit(HOLDER, first)
    old_mail = cms.encrypt(OLD_MAIL, [cms.Recipient.from_certificate(first.certificate)])
    await client.deposit(HOLDER, second)  # rotation: the first key stays for old mail
    new_mail = cms.encrypt(b"<Letter>new</Letter>", [cms.Recipient.from_certificate(second.certificate)])

    released = await ArchiveClient(archive.url, archive.eid).release(HOLDER)  # a new device, same e-ID
    assert {cms.key_id(p.certificate) for p in released} == {
        cms.key_id(first.certificate),
        cms.key_id(second.certificate),
    }
    keys = [cms.DecryptionKey.from_key_pair(p) for p in released]
    assert cms.decrypt(old_mail, keys) == OLD_MAIL
    assert cms.decrypt(new_mail, keys) == b"<Letter>new</Letter>"


async def test_release_to_anyone_but_the_holder_is_refused(archive: Archive) -> None:
    """Another person's valid e-ID, an e-ID from an unknown CA and a replayed challenge are each refused (403)."""
    await ArchiveClient(archive.url, archive.eid).deposit(HOLDER, holder_key(archive.holder_ca, HOLDER, "x25519"))
    with pytest.raises(ArchiveRefusal) as refused:
        await ArchiveClient(archive.url, archive.other_eid).release(HOLDER)
    assert refused.value.status == 403
    stranger = eid_certificate(make_ca("Self-made e-ID CA", "p256"), HOLDER)
    with pytest.raises(ArchiveRefusal) as refused:
        await ArchiveClient(archive.url, stranger).release(HOLDER)
    assert refused.value.status == 403
    code, report = _verify_log(archive.database)
    assert code == 0 and report["ok"]


async def test_release_is_bound_to_the_clients_key(archive: Archive) -> None:
    """A proof signed for one client key does not release to another key (a man in the middle swapping it)."""
    await ArchiveClient(archive.url, archive.eid).deposit(HOLDER, holder_key(archive.holder_ca, HOLDER, "x25519"))
    client = ArchiveClient(archive.url, archive.eid)
    challenge = await client.challenge()
    honest = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    attacker = x25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
    proof = sign_proof(archive.eid, "release", HOLDER, challenge, client_key_binding(honest))
    body = {"challenge": challenge, "eid": proof.to_json(), "client_key": base64.b64encode(attacker).decode()}
    with pytest.raises(ArchiveRefusal) as refused:
        await client._post(f"/api/v1/holders/{HOLDER}/releases", body)
    assert refused.value.status == 403


async def test_deletion_on_the_holders_request(archive: Archive) -> None:
    """After the holder asks for deletion, nothing is released any more."""
    client = ArchiveClient(archive.url, archive.eid)
    await client.deposit(HOLDER, holder_key(archive.holder_ca, HOLDER, "x25519"))
    assert await client.delete(HOLDER) == 1
    assert await client.release(HOLDER) == []


async def test_two_person_rule(archive: Archive) -> None:
    """An act approved by its own proposer is refused; a second administrator's approval carries it out."""
    key = holder_key(archive.holder_ca, HOLDER, "x25519")
    await ArchiveClient(archive.url, archive.eid).deposit(HOLDER, key)
    status, act = await _admin(archive, ANNA, "/api/v1/admin/acts", {"action": "export"})
    assert status == 202 and act["state"] == "pending"
    status, problem = await _admin(archive, ANNA, f"/api/v1/admin/acts/{act['id']}/approve")
    assert status == 403 and "two-person" in problem["detail"]
    status, done = await _admin(archive, BERTIL, f"/api/v1/admin/acts/{act['id']}/approve")
    assert status == 200 and done["state"] == "done"
    (exported,) = done["result"]
    secret = key.private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert secret not in base64.b64decode(exported["wrapped"])  # only wrapped under the master key
    status, _ = await _admin(archive, BERTIL, f"/api/v1/admin/acts/{act['id']}/approve")
    assert status == 409


async def test_master_key_rotation_by_two(archive: Archive) -> None:
    """Rotating the master key (two administrators) re-wraps every key; releases go on working."""
    key = holder_key(archive.holder_ca, HOLDER, "x25519")
    await ArchiveClient(archive.url, archive.eid).deposit(HOLDER, key)
    _, act = await _admin(archive, BERTIL, "/api/v1/admin/acts", {"action": "rotate-master-key"})
    status, done = await _admin(archive, ANNA, f"/api/v1/admin/acts/{act['id']}/approve")
    assert status == 200 and done["result"]["rewrapped"] == 1
    assert done["result"]["to"] != done["result"]["from"]
    (released,) = await ArchiveClient(archive.url, archive.eid).release(HOLDER)
    assert cms.key_id(released.certificate) == cms.key_id(key.certificate)


async def test_releases_are_rate_limited(aiohttp_server: Any, tmp_path: Path, pki: tuple[KeyPair, KeyPair]) -> None:
    """Past the limit of releases per holder and window, the archive answers 429 with Retry-After."""
    archive = await _archive(aiohttp_server, tmp_path, pki, releases=2)
    client = ArchiveClient(archive.url, archive.eid)
    await client.deposit(HOLDER, holder_key(archive.holder_ca, HOLDER, "x25519"))
    await client.release(HOLDER)
    await client.release(HOLDER)
    with pytest.raises(ArchiveRefusal) as limited:
        await client.release(HOLDER)
    assert limited.value.status == 429


async def test_audit_log_verifies_and_tampering_is_detected(archive: Archive) -> None:
    """The log verifies; the database refuses an UPDATE; an entry altered behind the triggers' back is named."""
    client = ArchiveClient(archive.url, archive.eid)
    await client.deposit(HOLDER, holder_key(archive.holder_ca, HOLDER, "x25519"))
    await client.release(HOLDER)
    code, report = _verify_log(archive.database)
    assert code == 0 and report["ok"] and report["entries"] >= 3
    head = report["head"]
    with sqlite3.connect(archive.database) as db:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute("UPDATE keyarchive_audit SET actor = 'nobody' WHERE seq = 2")
        # Someone with the database file: drops the trigger and rewrites who the key was released to.
        db.execute("DROP TRIGGER keyarchive_audit_no_update")
        db.execute("UPDATE keyarchive_audit SET detail = replace(detail, 'eid', 'eId') WHERE action = 'release'")
    code, report = _verify_log(archive.database)
    assert code == 1 and not report["ok"]
    assert report["problem"].endswith("was altered (hash mismatch)")
    with sqlite3.connect(archive.database) as db:
        seq = db.execute("SELECT seq FROM keyarchive_audit WHERE action = 'release'").fetchone()[0]
    assert report["broken_at"] == seq
    # Cutting the tail off leaves a valid chain, but not the head published before.
    with sqlite3.connect(archive.database) as db:
        db.execute("DROP TRIGGER keyarchive_audit_no_delete")
        db.execute("DELETE FROM keyarchive_audit WHERE seq >= ?", (seq,))
    code, report = _verify_log(archive.database, "--expect-head", head)
    assert code == 1 and "head differs" in report["problem"]


async def test_metrics_are_served_on_the_admin_listener_only_by_route_template(
    aiohttp_server: Any, tmp_path: Path, pki: tuple[KeyPair, KeyPair]
) -> None:
    """The archive's /metrics answers a metrics token on its admin listener, counting requests by route template
    (no holder id in any label); the public listener has no /metrics."""
    port = services.free_port()
    admin = AdminSettings(port=port, tokens=(BearerToken("prometheus", SCRAPER, scopes("metrics")),))
    archive = await _archive(aiohttp_server, tmp_path, pki, observability=Observability(admin=admin))
    async with aiohttp.ClientSession() as session:
        async with session.post(archive.url + f"/api/v1/holders/{HOLDER}/deletion", json={}) as refused:
            assert refused.status == 400
        async with session.get(archive.url + "/metrics") as public:
            assert public.status == 404
        async with session.get(f"http://127.0.0.1:{port}/metrics") as anonymous:
            assert anonymous.status == 401
        headers = {"Authorization": f"Bearer {SCRAPER}"}
        async with session.get(f"http://127.0.0.1:{port}/metrics", headers=headers) as scraped:
            assert scraped.status == 200
            text = await scraped.text()
    labels = 'method="POST",route="/api/v1/holders/{holder}/deletion",status="400"'
    assert f"http_requests_total{{{labels}}} 1.0" in text and HOLDER not in text
