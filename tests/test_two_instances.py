"""Whole messages round-trip between two access points configured independently, each in its own process.

Each side has its own PKI and sees only its own key files plus what the other side would publish (the sender's
CA, the receiver's encryption and receipt-signing certificates). The sender runs ``PEER_SCRIPT send`` in a
subprocess and writes an HTTP dump; the receiver checks it with ``accesspoint verify`` (its decryption key, the
sender's CA as the only trust), then signs a receipt in another subprocess; the sender checks that receipt
against the references it signed, again in a process of its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from accesspoint.security.keys import KeyPair
from accesspoint.testing.pki import KeyType, issue, make_ca
from tests.cli import in_process
from tests.conftest import REPO

PASSWORD = "s3cret-pw"
AT = "2026-11-30T10:00:00Z"

# The peers' program: only public API, only the files named in its own configuration.
PEER_SCRIPT = r"""
import json, sys, uuid
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.httpdump import split_http_dump
from accesspoint.core.message import read_message
from accesspoint.core.model import (
    CollaborationInfo, MessageInfo, Party, PartyId, PartyInfo, ReferenceEcho, Service, Transform, UserMessage,
)
from accesspoint.core.signals import build_receipt
from accesspoint.security.algorithms import KeyAgreement, NamedCurve, SignatureAlgorithm
from accesspoint.security.inbound import open_message
from accesspoint.security.keys import load_certificates, load_key_pair
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.receipts import sign_signal, verify_receipt


def policy(profile, trust=TrustSettings()):
    if profile == "1.15":
        return SecurityPolicy.edelivery_1_15(trust=trust)
    if profile == "2.0":
        return SecurityPolicy.edelivery_2_0(trust=trust)
    return SecurityPolicy.edelivery_2_0(
        signature_algorithm=SignatureAlgorithm.ECDSA_SHA256,
        key_agreement=KeyAgreement.ECDH_ES,
        key_agreement_curve=NamedCurve.SECP256R1,
        trust=trust,
    )


def key(config, name):
    password = config.get(name + "_password")
    return load_key_pair(config[name], None if password is None else password.encode())


def new_id():
    return f"_{uuid.uuid4().hex}"


def send(config):
    ap = "urn:fdc:peppol.eu:2017:identifiers:ap"
    message = UserMessage(
        message_info=MessageInfo(config["message_id"], datetime.fromisoformat(config["now"])),
        party_info=PartyInfo(
            Party((PartyId(config["from"], ap),), "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"),
            Party((PartyId(config["to"], ap),), "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"),
        ),
        collaboration_info=CollaborationInfo(Service("urn:example:service"), "Deliver", config["message_id"]),
    )
    payloads = [
        Payload(p["content_id"], p["mime_type"], lambda f=p["file"]: [Path(f).read_bytes()], compress=p["compress"])
        for p in config["payloads"]
    ]
    (recipient,) = load_certificates(config["recipient_certificate"])
    secured = secure_message(
        message, payloads, policy(config["profile"]), signing_key=key(config, "signing_key"),
        recipient_certificate=recipient, new_id=new_id,
    )
    head = f"POST /as4 HTTP/1.1\r\nContent-Type: {secured.packed.content_type}\r\n\r\n".encode()
    Path(config["dump"]).write_bytes(head + secured.packed.to_bytes())
    sent = {"message_id": message.message_id, "references": [asdict(r) for r in secured.references]}
    Path(config["sent"]).write_text(json.dumps(sent))


def receipt(config):
    dump = split_http_dump(Path(config["dump"]).read_bytes())
    received = read_message(dump.header("content-type"), dump.body)
    trust = TrustSettings(anchors=tuple(load_certificates(config["trust"])), revocation=RevocationMode.OFF)
    rules = policy(config["profile"], trust)
    opened = open_message(
        received, rules, at=datetime.fromisoformat(config["now"]), keys=(key(config, "decryption_key"),)
    )
    user = received.parsed.header
    now = datetime.fromisoformat(config["now"])
    signal = build_receipt(user, opened.signature.echoes, message_id=new_id()[1:] + "@receiver", now=now)
    Path(config["receipt"]).write_bytes(sign_signal(signal, key(config, "signing_key"), rules, new_id=new_id))


def check_receipt(config):
    sent = json.loads(Path(config["sent"]).read_text())
    references = [
        ReferenceEcho(r["uri"], r["digest_method"], r["digest_value"], tuple(
            Transform(t["algorithm"], None if t["inclusive_prefixes"] is None else tuple(t["inclusive_prefixes"]))
            for t in r["transforms"]
        ))
        for r in sent["references"]
    ]
    try:
        verified = verify_receipt(
            parse_envelope(Path(config["receipt"]).read_bytes()), policy(config["profile"]),
            sent_message_id=sent["message_id"], sent_references=references,
            partner_certificates=load_certificates(config["partner_certificate"]),
        )
    except EbmsError as exc:
        print(json.dumps({"ok": False, "code": exc.code, "reason": exc.log_detail or exc.detail}))
        sys.exit(1)
    print(json.dumps({
        "ok": True,
        "ref_to_message_id": verified.signal.message_info.ref_to_message_id,
        "references": len(verified.receipt.references),
        "signer": verified.signature.signer.certificate.subject.rfc4514_string(),
    }))


MODES = {"send": send, "receipt": receipt, "check-receipt": check_receipt}
MODES[sys.argv[1]](json.loads(Path(sys.argv[2]).read_text()))
"""


@dataclass(frozen=True, slots=True)
class Profile:
    """Key types of one profile: the sender's signing key, the receiver's decryption and receipt-signing keys."""

    name: str
    signing: KeyType
    decryption: KeyType
    attachments: int


PROFILES = [
    Profile("1.15", "rsa", "rsa", 33),
    Profile("2.0", "ed25519", "x25519", 3),
    Profile("ecdh-es-p256", "p256", "p256", 4),
]


def _run(*args: str) -> tuple[int, dict[str, Any], str]:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)
    try:
        document = json.loads(result.stdout) if result.stdout.strip() else {}
    except json.JSONDecodeError:
        document = {"unparsable stdout": result.stdout}
    return result.returncode, document, result.stderr[-3000:]


def _peer(script: Path, mode: str, config: dict[str, Any], path: Path) -> tuple[int, dict[str, Any], str]:
    path.write_text(json.dumps(config))
    return _run(str(script), mode, str(path))


def _verify(*args: str, process: bool = True) -> tuple[int, dict[str, Any], str]:
    """``accesspoint verify`` as a process (the exchanges), or through the CLI's main here (the refusals)."""
    if process:
        return _run("-m", "accesspoint", "verify", *args, "--at", AT, "--no-revocation")
    done = in_process("verify", *args, "--at", AT, "--no-revocation")
    return done.code, done.document, done.stderr[-3000:]


def _write_key(directory: Path, name: str, keys: KeyPair) -> Path:
    """PKCS#12 where it can hold the key, an encrypted PEM (key, then certificate and chain) for X25519."""
    encryption = serialization.BestAvailableEncryption(PASSWORD.encode())
    try:
        data = pkcs12.serialize_key_and_certificates(
            name.encode(), keys.private_key, keys.certificate, list(keys.chain), encryption
        )
        path = directory / f"{name}.p12"
    except TypeError:
        pem = keys.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        data = pem + b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (keys.certificate, *keys.chain))
        path = directory / f"{name}.pem"
    path.write_bytes(data)
    return path


def _write_certificate(path: Path, keys: KeyPair) -> Path:
    path.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    return path


def _payloads(directory: Path, count: int) -> list[dict[str, Any]]:
    """Original payloads with their digests: XML to compress, random bytes sent as they are, random bytes gzipped."""
    made = []
    for index in range(count):
        kind = index % 3
        if kind == 0:
            data, mime, compress = f"<Invoice n='{index}'>{'line ' * 200}</Invoice>".encode(), "application/xml", True
        elif kind == 1:
            data, mime, compress = os.urandom(3000 + index), "application/pdf", False
        else:
            data, mime, compress = os.urandom(40_000) + b"tail", "application/octet-stream", True
        path = directory / f"payload-{index}.bin"
        path.write_bytes(data)
        made.append(
            {
                "content_id": f"part-{index}@sender.example",
                "mime_type": mime,
                "compress": compress,
                "file": str(path),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return made


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one exchange left behind: the files of both sides and each step's exit code and output."""

    profile: Profile
    sender_dir: Path
    receiver_dir: Path
    payloads: list[dict[str, Any]]
    dump: Path
    sender_ca: Path
    decryption_key: Path
    steps: dict[str, tuple[int, dict[str, Any], str]]


def _exchange(root: Path, script: Path, profile: Profile) -> Exchange:
    sender_dir, receiver_dir = root / "sender", root / "receiver"
    sender_dir.mkdir(parents=True)
    receiver_dir.mkdir(parents=True)
    # Two independent PKIs: neither side shares a key or a CA with the other.
    sender_ca = make_ca("Sender Federation CA", profile.signing)
    receiver_ca = make_ca("Receiver Federation CA", profile.signing)
    sender_signing = issue(sender_ca, "PTE000001", profile.signing)
    receiver_signing = issue(receiver_ca, "PTE000002", profile.signing)
    receiver_decryption = (
        receiver_signing if profile.decryption == "rsa" else issue(receiver_ca, "PTE000002", profile.decryption)
    )
    # What each side publishes to the other.
    sender_ca_file = _write_certificate(receiver_dir / "partner-ca.pem", sender_ca)
    recipient_cert = _write_certificate(sender_dir / "partner-encryption.pem", receiver_decryption)
    partner_signing = _write_certificate(sender_dir / "partner-signing.pem", receiver_signing)
    signing_key = _write_key(sender_dir, "signing", sender_signing)
    decryption_key = _write_key(receiver_dir, "decryption", receiver_decryption)
    receipt_key = _write_key(receiver_dir, "receipt-signing", receiver_signing)
    payloads = _payloads(sender_dir, profile.attachments)
    dump, sent, receipt = sender_dir / "outgoing.http", sender_dir / "sent.json", receiver_dir / "receipt.xml"
    # The receiver gets its own copy of the dump, as if from the wire.
    received = receiver_dir / "incoming.http"
    common = {"profile": profile.name, "now": AT}
    steps = {}
    steps["send"] = _peer(
        script,
        "send",
        common
        | {
            "message_id": f"{profile.name}-msg@sender.example",
            "from": "PTE000001",
            "to": "PTE000002",
            "payloads": [{k: p[k] for k in ("content_id", "mime_type", "compress", "file")} for p in payloads],
            "signing_key": str(signing_key),
            "signing_key_password": PASSWORD,
            "recipient_certificate": str(recipient_cert),
            "dump": str(dump),
            "sent": str(sent),
        },
        sender_dir / "send.json",
    )
    if steps["send"][0] == 0:
        received.write_bytes(dump.read_bytes())
        steps["verify"] = _verify(
            str(received), "--trust", str(sender_ca_file), "--key", str(decryption_key), "--password", PASSWORD
        )
        steps["receipt"] = _peer(
            script,
            "receipt",
            common
            | {
                "dump": str(received),
                "trust": str(sender_ca_file),
                "decryption_key": str(decryption_key),
                "decryption_key_password": PASSWORD,
                "signing_key": str(receipt_key),
                "signing_key_password": PASSWORD,
                "receipt": str(receipt),
            },
            receiver_dir / "receipt.json",
        )
        steps["check-receipt"] = _peer(
            script,
            "check-receipt",
            common | {"sent": str(sent), "receipt": str(receipt), "partner_certificate": str(partner_signing)},
            sender_dir / "check.json",
        )
    return Exchange(profile, sender_dir, receiver_dir, payloads, received, sender_ca_file, decryption_key, steps)


@pytest.fixture(scope="module")
def exchanges(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exchange]:
    """One exchange per profile, the three run side by side (each step is its own interpreter)."""
    root = tmp_path_factory.mktemp("two-instances")
    script = root / "peer.py"
    script.write_text(PEER_SCRIPT)
    with ThreadPoolExecutor(max_workers=len(PROFILES)) as pool:
        done = pool.map(lambda p: _exchange(root / p.name, script, p), PROFILES)
        return {exchange.profile.name: exchange for exchange in done}


def _step(exchange: Exchange, name: str) -> dict[str, Any]:
    code, document, stderr = exchange.steps[name]
    assert code == 0, (name, document, stderr)
    return document


NAMES = [p.name for p in PROFILES]


@pytest.mark.parametrize("profile", NAMES)
def test_receiver_verifies_and_decrypts_every_attachment_of_the_independent_sender(
    profile: str, exchanges: dict[str, Exchange]
) -> None:
    """With only its own key and the sender's CA, the receiver verifies the message and gets every payload back."""
    exchange = exchanges[profile]
    _step(exchange, "send")
    report = _step(exchange, "verify")
    assert report["ok"] is True and report["complete"] is True
    assert report["signer"]["subject"].startswith("CN=PTE000001,")
    assert report["trust"]["pinned"] is False
    assert report["trust"]["path"][-1].startswith("CN=Sender Federation CA")
    got = {p["content_id"]: (p["size"], p["sha256"], p["encrypted"]) for p in report["payloads"]}
    assert got == {p["content_id"]: (p["size"], p["sha256"], True) for p in exchange.payloads}
    assert len(got) == exchange.profile.attachments
    assert all(r["result"] == "valid" for r in report["references"])
    assert len(report["references"]) == exchange.profile.attachments + 2  # eb:Messaging, the Body, each part


@pytest.mark.parametrize("profile", NAMES)
def test_sender_accepts_the_receivers_signed_receipt_for_what_it_sent(
    profile: str, exchanges: dict[str, Exchange]
) -> None:
    """The receipt the receiver signs in its process proves delivery to the sender in the sender's process."""
    exchange = exchanges[profile]
    _step(exchange, "receipt")
    checked = _step(exchange, "check-receipt")
    sent = json.loads((exchange.sender_dir / "sent.json").read_text())
    assert checked["ok"] is True
    assert checked["ref_to_message_id"] == sent["message_id"]
    assert checked["references"] == len(sent["references"]) == exchange.profile.attachments + 2
    assert checked["signer"].startswith("CN=PTE000002,")


def test_receipt_for_other_references_is_refused_by_the_sender(exchanges: dict[str, Exchange]) -> None:
    """The sender refuses the receipt (EBMS:0302) when its records of what it signed differ by one digest."""
    exchange = exchanges["1.15"]
    sent = json.loads((exchange.sender_dir / "sent.json").read_text())
    sent["references"][0]["digest_value"] = "AAAA" + sent["references"][0]["digest_value"][4:]
    altered = exchange.sender_dir / "sent-altered.json"
    altered.write_text(json.dumps(sent))
    config = {
        "profile": "1.15",
        "sent": str(altered),
        "receipt": str(exchange.receiver_dir / "receipt.xml"),
        "partner_certificate": str(exchange.sender_dir / "partner-signing.pem"),
    }
    code, document, stderr = _peer(
        exchange.sender_dir.parent.parent / "peer.py",
        "check-receipt",
        config,
        exchange.sender_dir / "check-altered.json",
    )
    assert code == 1, (document, stderr)
    assert document["code"] == "EBMS:0302"


def test_receiver_trusting_another_ca_refuses_the_message_with_0101(
    exchanges: dict[str, Exchange], tmp_path: Path
) -> None:
    """A receiver whose only anchor is a CA of the same name but another key refuses the sender: EBMS:0101."""
    exchange = exchanges["2.0"]
    impostor = _write_certificate(tmp_path / "other-ca.pem", make_ca("Sender Federation CA", "ed25519"))
    keys = ("--key", str(exchange.decryption_key), "--password", PASSWORD)
    code, report, stderr = _verify(str(exchange.dump), "--trust", str(impostor), *keys, process=False)
    assert code == 1, (report, stderr)
    assert report["error"]["code"] == "EBMS:0101"
    assert report["trust_failure"] == "untrusted-issuer"


def _flip_attachment_byte(dump: bytes, content_id: str) -> bytes:
    """The dump with one byte of that attachment's body (its ciphertext) inverted."""
    header = dump.index(f"<{content_id}>".encode())
    start = dump.index(b"\r\n\r\n", header) + 4
    position = start + 64
    return dump[:position] + bytes([dump[position] ^ 0xFF]) + dump[position + 1 :]


@pytest.mark.parametrize("profile", NAMES)
def test_tampered_attachment_byte_is_refused_with_0102(
    profile: str, exchanges: dict[str, Exchange], tmp_path: Path
) -> None:
    """One altered ciphertext byte fails AES-GCM's tag before any digest is compared: EBMS:0102, exit 1."""
    exchange = exchanges[profile]
    tampered = tmp_path / "tampered.http"
    tampered.write_bytes(_flip_attachment_byte(exchange.dump.read_bytes(), exchange.payloads[2]["content_id"]))
    keys = ("--key", str(exchange.decryption_key), "--password", PASSWORD)
    code, report, stderr = _verify(str(tampered), "--trust", str(exchange.sender_ca), *keys, process=False)
    assert code == 1, (report, stderr)
    assert report["error"]["code"] == "EBMS:0102"
    assert "tag" in report["error"]["reason"]
