"""``make demo``: two access points on this machine exchange signed, encrypted AS4 messages with receipts.

What happens, in order:

1. ``accesspoint keys generate``'s recipe writes a development CA and, for two parties, certificates for
   eDelivery AS4 1.15 (RSA-2048) and 2.0 (Ed25519 signing, X25519 encryption) into a temporary folder.
2. Each access point runs as its own ``python -m accesspoint serve --config server.yaml`` process on loopback,
   with one P-Mode file that holds a 1.15 and a 2.0 agreement between the two.
3. Sweden's backend submits a letter under each profile through the REST API; Sweden's access point signs,
   encrypts and sends it; Norway's opens it, stores it and answers with a signed receipt.
4. The demo then checks, on its own and from the stored non-repudiation evidence, what each step proves: the
   signature over the message Norway received, its signer's certificate against the CA, the algorithms on
   the wire, the receipt Sweden kept (signed by Norway, echoing the digests Sweden signed), and the payload's
   SHA-256 on both sides.
5. Both processes are stopped; the temporary folder is removed. Exit 0, or 1 with the reason on stderr.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from accesspoint import demo_federation
from accesspoint.core.envelope import ParsedEnvelope, parse_envelope
from accesspoint.core.errors import EbmsError
from accesspoint.core.namespaces import NS
from accesspoint.demo_common import Child, DemoFailure, free_port, key_files, say
from accesspoint.keys_cli import DevelopmentPki, Issued, PartyKeys, generate_keys
from accesspoint.msh.config import load_config
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.receipts import verify_receipt
from accesspoint.security.signing import verify_signature
from accesspoint.security.trust import CertificateUsage, validate_certificate
from accesspoint.store import Direction, EvidenceKind, MessageStore
from pmode import load_pmodes

UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
SERVICE = {"value": "urn:example:service:letters", "type": "urn:example:service-type"}
PARTIES = {"sweden": "AP-SE-0001", "norway": "AP-NO-0002"}
SENDER, RECEIVER = "sweden", "norway"
DELIVERY_TIMEOUT = 20.0
LETTER = (
    b"<?xml version='1.0' encoding='UTF-8'?>\n"
    b"<Letter xmlns='urn:example:digitalpost'><To>198112289874</To>"
    b"<Subject>Your parking permit</Subject><Body>Granted until 2027-11-30.</Body></Letter>\n"
)


def _step(label: str, text: str) -> None:
    """One step of an exchange: a label in a column, then what happened and what it proves."""
    say(f"   {label:10} {text}", indent=14)


def _short(uri: str) -> str:
    """The readable tail of an algorithm URI (``…#rsa-sha256`` -> ``rsa-sha256``)."""
    return uri.rsplit("#", 1)[-1]


def _cn(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return f"CN={names[0].value!s}" if names else certificate.subject.rfc4514_string()


@dataclass(frozen=True, slots=True)
class Profile:
    """One agreement of the demo: the eDelivery AS4 profile and its security settings."""

    label: str  # "1.15" or "2.0"
    keys: str  # in a few words, for the reader
    network: str
    security: dict[str, Any]

    def signing(self, keys: PartyKeys) -> Issued:
        """A party's signing certificate under this profile."""
        return keys.rsa if self.label == "1.15" else keys.ed25519

    @property
    def pmode_id(self) -> str:
        return f"letters-{self.label}"

    def party(self, name: str) -> str:
        """The P-Mode party name of an access point under this profile (one PartyId, two sets of keys)."""
        return f"{name}-{self.label}"


PROFILES = (
    Profile("1.15", "RSA", "edelivery-1.15", {"signature_algorithm": "rsa-sha256", "token_reference": "bst-x509v3"}),
    Profile(
        "2.0",
        "Ed25519 + X25519",
        "edelivery-2.0",
        {"signature_algorithm": "ed25519", "key_agreement": "x25519", "token_reference": "bst-pkipath"},
    ),
)


def pmode_document(own: str, pki: DevelopmentPki, endpoints: dict[str, str]) -> dict[str, Any]:
    """The P-Modes of one side: a 1.15 and a 2.0 agreement, Sweden sending letters to Norway under each.

    Both sides load the same agreements; only ``self`` differs. A party appears once per profile because a
    P-Mode party has one signing (and one encryption) certificate: RSA for 1.15, Ed25519 + X25519 for 2.0.
    """
    parties: dict[str, Any] = {}
    for name, keys in pki.parties.items():
        for profile in PROFILES:
            party = {
                "party_ids": [{"value": keys.party_id, "type": UNREGISTERED}],
                "signing_certificate": str(profile.signing(keys).certificate_path),
                "endpoint": endpoints[name],
            }
            if profile.label == "2.0":
                party["encryption_certificate"] = str(keys.x25519.certificate_path)
            parties[profile.party(name)] = party
    trust = {"anchors": [str(pki.ca.certificate_path)], "pin_partner": True, "revocation": "off"}
    pmodes = [
        {
            "id": profile.pmode_id,
            "network": profile.network,
            # The agreement tells the two P-Modes apart: same parties, service and action.
            "agreement": {"value": f"urn:example:agreement:letters-{profile.label}", "type": "urn:example:agreement"},
            "initiator": {"party": profile.party(SENDER)},
            "responder": {"party": profile.party(RECEIVER)},
            "legs": [
                {
                    "service": SERVICE,
                    "action": "Deliver",
                    "properties": ["originalSender", "finalRecipient"],
                    "security": {**profile.security, "trust": trust},
                    "reception_awareness": {"retries": 2, "backoff_base": "500ms", "backoff_max": "2s", "jitter": 0.0},
                }
            ],
        }
        for profile in PROFILES
    ]
    return {"version": 1, "self": [profile.party(own) for profile in PROFILES], "parties": parties, "pmodes": pmodes}


class AccessPoint(Child):
    """One ``accesspoint serve`` process with its own settings, P-Modes, database and files."""

    def __init__(self, name: str, folder: Path, pki: DevelopmentPki, ports: dict[str, int]) -> None:
        self.keys: PartyKeys = pki.parties[name]
        self.token = secrets.token_urlsafe(24)
        folder.mkdir(parents=True)
        endpoints = {party: f"http://127.0.0.1:{port}/as4" for party, port in ports.items()}
        document = pmode_document(name, pki, endpoints)
        (folder / "pmodes.yaml").write_text(json.dumps(document, indent=2))  # JSON is YAML
        settings = {
            "listen": {"host": "127.0.0.1", "port": ports[name]},
            "pmodes": "pmodes.yaml",
            "storage": "data",
            "instance": name,
            "revocation": False,  # the development CA publishes no CRL or OCSP
            "api_tokens": [self.token],
            "send": {"timeout": "10s", "lease": "30s"},
            "keys": {
                # One RSA key (1.15 signs and decrypts with it) and one Ed25519 key: the P-Mode picks.
                "signing": [key_files(self.keys.rsa), key_files(self.keys.ed25519)],
                "decryption": [key_files(self.keys.x25519)],
            },
        }
        (folder / "server.yaml").write_text(json.dumps(settings, indent=2))
        super().__init__(name, folder, ports[name], ["serve", "--config", str(folder / "server.yaml")])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        """Call the backend REST API: (HTTP status, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)  # noqa: S310 (loopback)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http on loopback)
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def wait_state(self, message_id: str, direction: str, states: set[str]) -> dict[str, Any]:
        """Poll the message's status until it reaches one of ``states``."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        document: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status, document = self.api("GET", f"/api/v1/messages/{message_id}?direction={direction}")
            if status == 200 and document["state"] in states:
                return document
            time.sleep(0.05)
        raise DemoFailure(f"{message_id} never reached {'/'.join(sorted(states))} at {self.name}: {document}")

    async def evidence(self, message_id: str, direction: Direction, kind: EvidenceKind) -> bytes:
        """The bytes of a piece of evidence this access point kept (read from its store, as an auditor would)."""
        config = load_config(self.folder / "server.yaml")
        store = await MessageStore.open(config.database_url, config.storage / "files", migrate=False)
        try:
            found = await store.evidence(direction, message_id, kind)
            if not found:
                raise DemoFailure(f"{self.name} kept no {kind} for {message_id}")
            return b"".join([chunk async for chunk in store.read(found[-1])])
        finally:
            await store.close()


# ------------------------------------------------------------------------------------------- the exchange


def _algorithm(parent: Any, tag: str) -> str:
    element = None if parent is None else parent.find(f".//{tag}")
    return "?" if element is None else _short(element.get("Algorithm", "?"))


def _encryption(parsed: ParsedEnvelope, recipient: str) -> str:
    """How the payload was encrypted, as named in the message's WS-Security header."""
    data = next(parsed.envelope.iter(f"{{{NS.XENC}}}EncryptedData"), None)
    key = next(parsed.envelope.iter(f"{{{NS.XENC}}}EncryptedKey"), None)
    content = _algorithm(data, f"{{{NS.XENC}}}EncryptionMethod")
    wrap = "?" if key is None else _algorithm(key, f"{{{NS.XENC}}}EncryptionMethod")
    agreement = None if key is None else key.find(f".//{{{NS.XENC}}}AgreementMethod")
    if agreement is None:
        return f"{content}; its key encrypted with {wrap} to {recipient}'s RSA certificate"
    derivation = _algorithm(agreement, f"{{{NS.XENC11}}}KeyDerivationMethod")
    return (
        f"{content}; its key wrapped with {wrap} under a key agreed by {_short(agreement.get('Algorithm', '?'))} "
        f"+ {derivation} with {recipient}'s X25519 certificate"
    )


def _submit(sender: AccessPoint, profile: Profile, message_id: str) -> None:
    status, submitted = sender.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": profile.pmode_id,
            "message_id": message_id,
            "properties": {"originalSender": "urn:example:agency:transportstyrelsen", "finalRecipient": "198112289874"},
            "payloads": [
                {
                    "content_id": "letter@sweden",
                    "mime_type": "application/xml",
                    "data": base64.b64encode(LETTER).decode(),
                }
            ],
        },
    )
    if status != 202:
        raise DemoFailure(f"{sender.name} refused the submission (HTTP {status}): {submitted}")


def exchange(number: int, profile: Profile, sender: AccessPoint, receiver: AccessPoint, pki: DevelopmentPki) -> None:
    """Send one letter under ``profile``, then show what each step proves, checked from the stored evidence."""
    message_id = f"letter-{profile.label}-{secrets.token_hex(4)}@{sender.name}.example"
    sha = hashlib.sha256(LETTER).hexdigest()
    to, by = receiver.keys.party_id, sender.keys.party_id
    say(
        f"{number}. eDelivery AS4 {profile.label} ({profile.keys}): "
        f"{sender.name} ({by}) sends a letter to {receiver.name} ({to})"
    )
    started = time.monotonic()
    _submit(sender, profile, message_id)
    _step(
        "submitted",
        f"{sender.name}'s backend hands over letter.xml ({len(LETTER)} B) through the REST API as {message_id}",
    )
    sent = sender.wait_state(message_id, "out", {"delivered", "failed"})
    if sent["state"] != "delivered":
        raise DemoFailure(f"{profile.label}: {message_id} failed at {sender.name}: {sent['last_error']}")
    received = receiver.wait_state(message_id, "in", {"received"})
    _step(
        "delivered",
        f"{sender.name}'s access point signed, encrypted and POSTed it to {receiver.name}, which "
        f"answered with a signed receipt ({time.monotonic() - started:.2f} s)",
    )

    # Checked again here, from the copy Norway keeps as evidence: the signature, its signer and the encryption.
    pmode = load_pmodes(receiver.folder / "pmodes.yaml").get(profile.pmode_id)
    assert pmode is not None
    policy = pmode.legs[0].security
    parsed = parse_envelope(asyncio.run(receiver.evidence(message_id, Direction.IN, EvidenceKind.RAW_MESSAGE)))
    cids = frozenset(p["content_id"] for p in received["payloads"])
    # The attachment arrived encrypted; its digest was checked by the receiver after decryption.
    signature = verify_signature(parsed, {}, policy, skip_attachments=cids, require_coverage=False)
    signer = signature.signer.certificate
    trust = TrustSettings(anchors=(pki.ca.certificate,), revocation=RevocationMode.OFF)
    validate_certificate(signer, signature.signer.chain, trust, at=datetime.now(UTC), usage=CertificateUsage.SIGNATURE)
    _step(
        "signed",
        f"by {_cn(signer)} with {_short(signature.signature_algorithm)}, certificate sent as "
        f"{signature.signer.reference}; re-checked here on {receiver.name}'s stored copy: the signature is valid "
        f"and the certificate chains to the CA -> the message comes from {by} and its header is unaltered",
    )
    _step("encrypted", f"with {_encryption(parsed, to)} -> only {receiver.name} could read the letter")

    # The receipt Sweden kept: signed by Norway and echoing exactly the digests Sweden signed.
    receipt = asyncio.run(sender.evidence(message_id, Direction.OUT, EvidenceKind.PARTNER_RECEIPT))
    verified = verify_receipt(
        parse_envelope(receipt),
        policy,
        sent_message_id=message_id,
        sent_references=(*signature.echoes, *signature.unchecked),
        partner_certificates=[profile.signing(receiver.keys).certificate],
    )
    assert verified.signature is not None  # the policy requires signed receipts
    _step(
        "receipt",
        f"verified: signed by {_cn(verified.signature.signer.certificate)} with "
        f"{_short(verified.signature.signature_algorithm)}, it echoes the {len(verified.receipt.references)} digests "
        f"{sender.name} signed -> {receiver.name} cannot deny having received exactly this message",
    )
    (part,) = received["payloads"]
    out_sha = {p["sha256"] for p in sent["payloads"]}
    if part["sha256"] != sha or out_sha != {sha}:
        raise DemoFailure(f"{profile.label}: payload SHA-256 differs: sent {out_sha}, received {part['sha256']}")
    _step("payload", f"SHA-256 at {sender.name} = at {receiver.name} = {sha[:24]}… -> the letter arrived intact")
    say(f"   OK eDelivery AS4 {profile.label}: delivered, receipt verified, payload SHA-256 equal on both sides")
    say()


# ----------------------------------------------------------------------------------------------- main


@contextlib.contextmanager
def _terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so the servers are stopped by the ``finally`` below."""

    def interrupt(_signal: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(folder: Path) -> None:
    """The whole demo inside ``folder``."""
    say("AS4 access point demo: two access points on this machine exchange signed, encrypted messages", 0)
    say(
        "An access point carries an organisation's documents to another's over AS4: it signs and encrypts what it "
        "sends, and the receiving one answers with a signed receipt that proves delivery. What two access points "
        "agreed (parties, service, security profile) is their P-Mode.",
        0,
    )
    say()
    started = time.monotonic()
    pki = generate_keys(folder / "keys", PARTIES, days=1)
    say(f"1. A development PKI (accesspoint keys generate, in {pki.folder}):")
    say(f"   CA  {_cn(pki.ca.certificate)} (RSA-2048, self-signed): both access points trust what it issued")
    for name, keys in pki.parties.items():
        say(
            f"   {name:7} CN={keys.party_id} (its PartyId): RSA-2048 for 1.15 (signs and decrypts), "
            f"Ed25519 (signs) and X25519 (decrypts) for 2.0, all issued by the CA",
            indent=11,
        )
    ports = {SENDER: free_port(), RECEIVER: free_port()}
    points = [AccessPoint(name, folder / name, pki, ports) for name in (SENDER, RECEIVER)]
    try:
        for point in points:
            point.start()
        for point in points:
            point.wait_ready()
        say()
        say("2. Two access points, each its own `python -m accesspoint serve` process:")
        for point in points:
            assert point.process is not None
            say(f"   {point.name:7} {point.url}/as4  pid {point.process.pid}  (P-Modes: letters-1.15, letters-2.0)")
        say()
        sender, receiver = points
        for number, profile in enumerate(PROFILES, start=3):
            exchange(number, profile, sender, receiver, pki)
    except Exception:
        for point in points:
            sys.stderr.write(f"{point.name}'s log (last lines):\n{point.log_tail()}\n")
        raise
    finally:
        for point in points:
            point.terminate()
        codes = {point.name: point.stop() for point in points}
    if any(code != 0 for code in codes.values()):
        raise DemoFailure(f"an access point did not stop cleanly: exit codes {codes}")
    say(
        f"{len(PROFILES) + 3}. Both access points stopped cleanly (exit code 0) after "
        f"{time.monotonic() - started:.1f} s"
    )
    (folder / "federation").mkdir()
    demo_federation.run(folder / "federation", len(PROFILES) + 4)
    say()
    say(f"The demo took {time.monotonic() - started:.1f} s and leaves nothing behind", 0)


def main() -> int:
    """Run the demo in a temporary folder; 0 when every exchange was proven, 1 otherwise."""
    with _terminate_on_sigterm(), tempfile.TemporaryDirectory(prefix="accesspoint-demo-") as folder:
        try:
            run(Path(folder))
        except EbmsError as exc:
            sys.stderr.write(f"demo FAILED: {exc.code} {exc.log_detail}\n")
            return 1
        except Exception as exc:  # the demo's promise: a clear line, never a bare traceback
            sys.stderr.write(f"demo FAILED: {type(exc).__name__}: {exc}\n")
            return 1
        except KeyboardInterrupt:
            sys.stderr.write("demo interrupted; access points stopped\n")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
