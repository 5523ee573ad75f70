"""End-to-end encryption over the federation's processes: the sender's access point encrypts to the holder's key
from FaR, routers and operators keep ciphertext only (also after the holder moves her mailbox to another operator),
the holder's new device gets its keys from the key archive (SoftHSM2) and reads old and new mail at her new
operator; the sender's choice without a key is followed and stated."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from accesspoint import demo_federation as fed
from accesspoint.demo_common import Child, free_port
from accesspoint.keyarchive.client import ArchiveClient
from accesspoint.keys_cli import generate_keys
from accesspoint.security import cms
from accesspoint.security.keys import KeyPair
from accesspoint.testing.holders import eid_certificate, holder_key, write_key_pair
from accesspoint.testing.hsm import shared_softhsm
from accesspoint.testing.pki import make_ca
from tests.cli import as_process, in_process

MAILBOX_TOKEN = "alice-mailbox-token-0123456789"
OP1, OP2 = fed.OPERATORS


def _letter(message_id: str, recipient: str, marker: str, **encrypt: Any) -> dict[str, Any]:
    """The demo's SBD letter with ``marker`` as its text, asking for encryption to the holder."""
    letter = fed.Letter(message_id, recipient, fed.AGENCY, "delivered-to-mailbox", "e2e")
    document = fed.submission(letter)
    sbd = fed.letter_document(letter).replace(b"Ditt beslut finns i brevladan.", marker.encode())
    document["payloads"][0]["data"] = base64.b64encode(sbd).decode()
    document["encrypt_to_holder"] = {"holder": recipient, **encrypt}
    return document


def _found_anywhere(folder: Path, marker: str) -> list[str]:
    """Every file under ``folder`` holding ``marker`` (databases, WAL files, payload and evidence files, logs)."""
    needle = marker.encode()
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _moved(federation: fed.Federation, timeout: float = 120) -> dict[str, Any]:
    """Alice opens a mailbox at operator 2 (switch now): the move as operator 1 reports it once it is done."""
    body = {
        "holder": fed.ALICE,
        "agreement_text": fed.HOLDER_TEXT,
        "signatures": federation.signed(fed.HOLDER_TEXT, fed.ALICE),
    }
    code, opened = fed._operator_api(federation, "op2", "POST", "/api/v1/holders", body)
    assert code == 202 and opened["state"] == "moving-in", opened
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        move = fed._operator_api(federation, "op1", "GET", f"/api/v1/holders/{fed.ALICE}")[1].get("move") or {}
        if move.get("state") == "done" and not fed._letters(federation, "op1", fed.ALICE):
            return dict(move)
        time.sleep(0.25)
    raise AssertionError(f"Alice's move to operator 2: not done within {timeout:.0f} s")


def _cli(*args: str, process: bool = False) -> tuple[int, dict[str, Any]]:
    """``accesspoint ARGS`` through ``main`` here, or as a process (``tests/cli.py``)."""
    done = (as_process if process else in_process)(*args)
    return done.code, done.document


def _archive(folder: Path, eid_ca: KeyPair) -> Child:
    folder.mkdir()
    hsm = shared_softhsm()
    (folder / "eid-ca.pem").write_bytes(eid_ca.certificate.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    (folder / "archive.toml").write_text(
        f'[keyarchive]\ndatabase = "sqlite+aiosqlite:///archive.db"\nport = {port}\neid_anchors = ["eid-ca.pem"]\n\n'
        f'[keyarchive.hsm]\nmodule = "{hsm.module}"\ntoken = "archive"\npin_env = "ARCHIVE_PIN"\n'
        f'master_label = "fed-{uuid.uuid4().hex[:8]}"\n'
    )
    return Child("keyarchive", folder, port, ["keyarchive", "serve", "--config", str(folder / "archive.toml")])


@pytest.mark.timeout(300)
def test_letters_encrypted_at_the_sender_reach_only_the_holder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Alice's letters are ciphertext in every store of the federation, also after she moved her mailbox to operator
    2, and the old letters and a new one open on her new device, fetched from operator 2, with the keys the archive
    released to it (the key she had before the rotation too); Bertil has no key, so a letter to him is refused or
    goes hop-by-hop, as the sender chose, and says so."""
    monkeypatch.setenv("ARCHIVE_PIN", shared_softhsm().pin)
    eid_ca, holder_ca = make_ca("Test e-ID CA", "p256"), make_ca("Holder key CA")
    alice_eid = eid_certificate(eid_ca, fed.ALICE)
    pki = generate_keys(tmp_path / "keys", fed.PARTY_IDS, days=1)
    federation = fed.build(tmp_path, pki)
    settings_file = federation.nordic.folder / "server.yaml"
    settings = json.loads(settings_file.read_text())
    settings["holder_keys"] = {"far": federation.far.url, "token": fed.FAR_TOKEN}
    settings_file.write_text(json.dumps(settings))
    for operator in ("op1", "op2"):  # Alice's mailbox token, at her operator and at the one she moves to
        with (federation.operators[operator].folder / "operator.toml").open("a") as toml:
            toml.write(f'\n[[operator.tokens]]\ntoken = "{MAILBOX_TOKEN}"\nrecipients = ["{fed.ALICE}"]\n')
    archive = _archive(tmp_path / "archive", eid_ca)
    markers = {name: f"Hemligt beslut {name} {uuid.uuid4().hex}" for name in ("first", "second", "bertil", "after")}
    try:
        fed.start(federation, pki)
        archive.start()
        archive.wait_ready()
        client = ArchiveClient(archive.url, alice_eid)

        def new_key(kind: str) -> KeyPair:
            """Alice's client makes a key; her operator registers it in FaR; her client deposits it."""
            pair = holder_key(holder_ca, fed.ALICE, kind)  # type: ignore[arg-type]
            pem = pair.certificate.public_bytes(serialization.Encoding.PEM).decode()
            code, answer = fed._call(
                f"{federation.far.url}/api/v1/holder-keys/{fed.ALICE}", fed.FAR_TOKEN, "PUT", {"certificate": pem}
            )
            assert code == 201, answer
            asyncio.run(client.deposit(fed.ALICE, pair))
            return pair

        first = new_key("x25519")
        code, answer = federation.nordic.api(
            "POST", "/api/v1/messages", _letter("e2e-1@nordic", fed.ALICE, markers["first"])
        )
        assert code == 202, answer
        second = new_key("rsa")  # rotation: FaR publishes the new key, the archive keeps both
        code, answer = federation.nordic.api(
            "POST", "/api/v1/messages", _letter("e2e-2@nordic", fed.ALICE, markers["second"])
        )
        assert code == 202, answer

        for message_id, key in (("e2e-1@nordic", first), ("e2e-2@nordic", second)):
            done = federation.nordic.wait(message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")
            assert done["end_to_end"]["status"] == "delivered-to-mailbox", done["end_to_end"]
            (payload,) = done["payloads"]
            assert payload["properties"]["ContentEncryption"] == "end-to-end"
            assert payload["properties"]["HolderKeyId"] == cms.key_id(key.certificate)

        # Bertil has no key: refused by default, or hop-by-hop when the sender says so (and the status says it).
        code, refused = federation.nordic.api("POST", "/api/v1/messages", _letter("e2e-3@nordic", fed.BERTIL, "x"))
        assert code == 422 and "has no encryption key" in refused["detail"]
        plain = _letter("e2e-4@nordic", fed.BERTIL, markers["bertil"], without_key="hop-by-hop")
        assert federation.nordic.api("POST", "/api/v1/messages", plain)[0] == 202
        done = federation.nordic.wait("e2e-4@nordic", lambda d: "end_to_end" in d, what="end-to-end receipt")
        assert done["end_to_end"]["status"] == "delivered-to-mailbox"
        assert done["payloads"][0]["properties"]["ContentEncryption"] == "hop-by-hop"

        # Every store: the sender's and the router's access points, the operators' access points and mailboxes.
        assert _found_anywhere(tmp_path, markers["first"]) == []
        assert _found_anywhere(tmp_path, markers["second"]) == []
        assert any("mailbox-op2" in path for path in _found_anywhere(tmp_path, markers["bertil"]))  # the scan sees

        # Alice moves to operator 2 (portability): her letters travel as they are, ciphertext, in the signed
        # archive; operator 1 keeps none, and operator 2's store holds no plaintext either.
        started = time.monotonic()
        move = _moved(federation)
        sys.stdout.write(f"\nAlice's move to operator 2 (2 encrypted letters): {time.monotonic() - started:.1f} s\n")
        assert [b["state"] for b in move["batches"] if b["side"] == "export"] == ["confirmed"], move
        moved = {x["origin"]: x["imported_from"] for x in fed._letters(federation, "op2", fed.ALICE)}
        assert moved == {"fwd-e2e-1@nordic": f"16{OP1.orgnr}", "fwd-e2e-2@nordic": f"16{OP1.orgnr}"}, moved
        code, answer = federation.nordic.api(
            "POST", "/api/v1/messages", _letter("e2e-5@nordic", fed.ALICE, markers["after"])
        )
        assert code == 202, answer
        done = federation.nordic.wait("e2e-5@nordic", lambda d: "end_to_end" in d, what="end-to-end receipt")
        assert done["end_to_end"]["operator"]["id"] == f"16{OP2.orgnr}", done["end_to_end"]
        assert done["payloads"][0]["properties"]["HolderKeyId"] == cms.key_id(second.certificate)
        for name in ("first", "second", "after"):
            assert _found_anywhere(tmp_path, markers[name]) == [], name

        # Operator 2's mailbox API serves the old letters and the new one as ciphertext with the key id; save what
        # Alice's device downloads.
        mailbox = f"{federation.operators['op2'].url}/api/v1/mailboxes/{fed.ALICE}/messages"
        code, listed = fed._call(mailbox, MAILBOX_TOKEN)
        assert code == 200 and len(listed["messages"]) == 3, listed
        letters = []
        for item in listed["messages"]:
            code, letter = fed._call(f"{mailbox}/{item['id']}", MAILBOX_TOKEN)
            body = base64.b64decode(letter["body"])
            assert b"EncryptedContent" in body and b"keyId=" in body
            path = tmp_path / f"alice-{item['id']}.json"
            path.write_text(json.dumps(letter))
            letters.append(path)

        # Alice's new device: e-ID; the archive releases both keys wrapped to a key the device made.
        eid_key, eid_cert = write_key_pair(alice_eid, tmp_path / "device", "eid")
        code, released = _cli("keyarchive", "release", fed.ALICE, "--archive", archive.url, "--eid-key", str(eid_key),
                              "--eid-cert", str(eid_cert), "--out", str(tmp_path / "device" / "keys"),
                              process=True)  # fmt: skip
        assert code == 0, released
        assert {k["key_id"] for k in released["keys"]} == {
            cms.key_id(first.certificate),
            cms.key_id(second.certificate),
        }
    finally:
        archive.stop()
        codes = fed.stop(federation)
    assert set(codes.values()) == {0}, codes

    key_args = [arg for k in released["keys"] for arg in ("--key", k["key"], "--cert", k["certificate"])]
    opened = set()
    for index, path in enumerate(letters):
        out = path.with_suffix(".xml")
        code, answer = _cli("mailbox", "decrypt", str(path), *key_args, "--out", str(out), process=index == 0)
        assert code == 0, answer
        opened.add(next(m for m in ("first", "second", "after") if markers[m].encode() in out.read_bytes()))
    assert opened == {"first", "second", "after"}
    code, report = _cli("keyarchive", "verify-log", "--config", str(archive.folder / "archive.toml"))
    assert code == 0 and report["ok"] and report["entries"] >= 4, report
