"""WS-Security cost: a 4 KB user message secured and opened (1.15 and 2.0) against the raw crypto it needs.

Per profile, single-threaded, on the 4 KB attachment of the core bench (``invoice_attachment``, gzip already,
so sent with ``compress=False``: both sides do the crypto of the raw ceiling plus the XML around it):

- send: ``secure_message`` (sign eb:Messaging, Body and attachment, encrypt the attachment) and the packed
  body as bytes.
- receive: ``read_message`` -> ``open_message`` (decrypt, verify, validate the signer's certificate against a
  small test CA with revocation off, hash the payload) -> ``build_receipt`` -> ``sign_signal``.
- raw: the same operations per message with plain ``cryptography`` and ``hashlib`` on the very bytes of a
  message (its C14N'd Messaging, Body and SignedInfo, its wrapped key and ciphertext), nothing else:
  1.15 send: AES-128-GCM encrypt, RSA-OAEP (SHA-256) wrap, 3 SHA-256 digests, RSA-SHA256 sign;
  1.15 receive: RSA-OAEP unwrap, AES-GCM decrypt, 3 digests, RSA verify, 2 digests + RSA sign (the receipt);
  2.0 send: X25519 keygen + agreement, HKDF-SHA256, kw-aes128 wrap, AES-GCM encrypt, 3 digests, Ed25519 sign;
  2.0 receive: X25519 + HKDF + unwrap, AES-GCM decrypt, 3 digests, Ed25519 verify, 2 digests + Ed25519 sign.

And a large attachment encrypted and decrypted as a stream, one measurement per process (peak RSS of its
own): ``python -m bench.security --stream SIZE [--baseline]`` prints one JSON line.

- pipeline: 64 KiB chunks -> ``encrypt_attachments`` (1.15, RSA-OAEP for a test certificate) -> ciphertext
  stream -> ``decrypt_attachments`` of the envelope as received -> ``attachment_digest`` (SHA-256 of the
  plaintext, as signature verification hashes it); the ciphertext is never stored.
- baseline: the same chunks through a raw AES-GCM encryptor and decryptor and SHA-256.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.message import Attachment, ReceivedMessage, pack_bare, pack_message, read_message
from accesspoint.core.model import SignalMessage, UserMessage
from accesspoint.core.namespaces import NS
from accesspoint.core.signals import build_receipt
from accesspoint.security.algorithms import DigestAlgorithm
from accesspoint.security.encryption import IV_SIZE, decrypt_attachments, encrypt_attachments
from accesspoint.security.inbound import OpenedMessage, TrustCache, open_message
from accesspoint.security.keys import KeyPair
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.security.policy import Profile, RevocationMode, SecurityPolicy, TrustSettings
from accesspoint.security.receipts import sign_signal, verify_receipt
from accesspoint.security.signing import AttachmentSource, TokenCache, TokenTemplates, attachment_digest, exc_c14n
from accesspoint.testing.pki import issue, make_ca
from bench.fixtures import KIB, NOW, PAYLOAD_CID, invoice_attachment, payload_chunks, random_block, user_message
from bench.small import rate
from bench.stream import _status_kib

DS = f"{{{NS.DS}}}"
EBMS = f"{{{NS.EBMS}}}"
SOAP12 = f"{{{NS.SOAP12}}}"
_OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
_PKCS1 = padding.PKCS1v15()
STREAM_CID = "large-payload@sender.example"


# ------------------------------------------------------------------------------------------ the parties


@dataclass(frozen=True, slots=True)
class Parties:
    """Sender and receiver of one profile, issued by one small test CA, and the policy both apply."""

    profile: Profile
    sender: KeyPair  # signs the user message
    receiver_encryption: KeyPair  # decrypts (RSA for 1.15, X25519 for 2.0)
    receiver_signing: KeyPair  # signs the receipt (the same RSA key for 1.15, Ed25519 for 2.0)
    policy: SecurityPolicy


def parties(profile: Profile) -> Parties:
    """Fresh keys and certificates; the receiving policy trusts the CA (revocation off: no network here)."""
    if profile is Profile.EDELIVERY_1_15:
        ca = make_ca("Bench CA", "rsa")
        sender = issue(ca, "POP000123", "rsa")
        receiver = issue(ca, "POP000456", "rsa")
        trust = TrustSettings(anchors=(ca.certificate,), revocation=RevocationMode.OFF)
        return Parties(profile, sender, receiver, receiver, SecurityPolicy.edelivery_1_15(trust=trust))
    ca = make_ca("Bench CA", "ed25519")
    trust = TrustSettings(anchors=(ca.certificate,), revocation=RevocationMode.OFF)
    return Parties(
        profile,
        issue(ca, "POP000123", "ed25519"),
        issue(ca, "POP000456", "x25519"),
        issue(ca, "POP000456", "ed25519"),
        SecurityPolicy.edelivery_2_0(trust=trust),
    )


class _Caches:
    """What an access point's Signer and Verifier hold (``accesspoint.msh.security``): one set for the run."""

    def __init__(self) -> None:
        self.templates = TokenTemplates()
        self.tokens = TokenCache()
        self.trust = TrustCache()

    @property
    def verifying(self) -> dict[str, Any]:
        """``open_message``'s cache arguments."""
        return {"tokens": self.tokens, "trust_cache": self.trust}


CACHES = _Caches()


def _ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"_bench-{next(counter)}"


# -------------------------------------------------------------------------------------- our two sides


def send(parties: Parties, message: UserMessage, attachment: bytes, new_id: Callable[[], str]) -> tuple[str, bytes]:
    """Sign, encrypt and pack the 4 KB message; the HTTP Content-Type and body."""
    payload = Payload(PAYLOAD_CID, "application/octet-stream", lambda: (attachment,), compress=False)
    secured = secure_message(
        message,
        [payload],
        parties.policy,
        signing_key=parties.sender,
        recipient_certificate=parties.receiver_encryption.certificate,
        new_id=new_id,
        templates=CACHES.templates,
    )
    return secured.packed.content_type, secured.packed.to_bytes()


def receive(parties: Parties, content_type: str, body: bytes, new_id: Callable[[], str]) -> tuple[OpenedMessage, bytes]:
    """Read, decrypt, verify, trust; then the signed receipt (NonRepudiationInformation) as bare SOAP."""
    received = read_message(content_type, body)
    opened = open_message(received, parties.policy, at=NOW, keys=(parties.receiver_encryption,), **CACHES.verifying)
    user = received.parsed.header
    assert isinstance(user, UserMessage) and opened.signature is not None
    signal = build_receipt(user, opened.signature.echoes, message_id=f"{new_id()}@receiver.example", now=NOW)
    return opened, sign_signal(
        signal, parties.receiver_signing, parties.policy, new_id=new_id, templates=CACHES.templates
    )


# ---------------------------------------------------------------------------------------- raw ceiling


@dataclass(frozen=True, slots=True)
class Material:
    """The bytes the raw operations work on, taken from one real message and its receipt."""

    attachment: bytes
    messaging: bytes  # exclusive C14N of eb:Messaging, as digested
    body: bytes
    signed_info: bytes  # as signed
    signature: bytes
    receipt_messaging: bytes
    receipt_body: bytes
    receipt_signed_info: bytes
    wrapped_key: bytes  # RSA-OAEP ciphertext (1.15) or kw-aes128 output (2.0)
    ciphertext: bytes  # IV || ciphertext || tag
    ephemeral: x25519.X25519PublicKey | None  # 2.0: the sender's ephemeral key
    salt: bytes  # 2.0: the HKDF salt


def _c14n_parts(envelope: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    root = etree.fromstring(envelope)
    messaging = root.find(f"{SOAP12}Header/{EBMS}Messaging")
    body = root.find(f"{SOAP12}Body")
    signature = next(root.iter(f"{DS}Signature"))
    signed_info = signature.find(f"{DS}SignedInfo")
    assert messaging is not None and body is not None and signed_info is not None
    value = "".join((signature.findtext(f"{DS}SignatureValue") or "").split())
    return exc_c14n(messaging), exc_c14n(body), exc_c14n(signed_info), base64.b64decode(value)


def material(parties: Parties, attachment: bytes) -> Material:
    """Raw inputs of the same sizes and kinds as a real message: its C14N bytes, a wrapped key, ciphertext."""
    content_type, body = send(parties, user_message(), attachment, _ids())
    received = read_message(content_type, body)
    envelope = etree.tostring(received.parsed.envelope)
    messaging, soap_body, signed_info, signature = _c14n_parts(envelope)
    _opened, receipt = receive(parties, content_type, body, _ids())
    receipt_messaging, receipt_body, receipt_signed_info, _ = _c14n_parts(receipt)
    cek = os.urandom(16)
    iv = os.urandom(IV_SIZE)
    ciphertext = iv + AESGCM(cek).encrypt(iv, attachment, None)
    recipient = parties.receiver_encryption.certificate.public_key()
    ephemeral: x25519.X25519PublicKey | None = None
    salt = os.urandom(32)
    if isinstance(recipient, rsa.RSAPublicKey):
        wrapped = recipient.encrypt(cek, _OAEP)
    else:
        assert isinstance(recipient, x25519.X25519PublicKey)
        sender_ephemeral = x25519.X25519PrivateKey.generate()
        ephemeral = sender_ephemeral.public_key()
        wrapped = aes_key_wrap(_hkdf(sender_ephemeral.exchange(recipient), salt), cek)
    return Material(
        attachment,
        messaging,
        soap_body,
        signed_info,
        signature,
        receipt_messaging,
        receipt_body,
        receipt_signed_info,
        wrapped,
        ciphertext,
        ephemeral,
        salt,
    )


def _hkdf(secret: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=16, salt=salt, info=None).derive(secret)


def raw_send(parties: Parties, m: Material) -> Callable[[], object]:
    """One message's sending crypto with plain ``cryptography``: encrypt, wrap the key, digest, sign."""
    signing_key = parties.sender.private_key
    recipient = parties.receiver_encryption.certificate.public_key()

    def digests() -> None:
        for data in (m.attachment, m.messaging, m.body):
            hashlib.sha256(data).digest()

    if isinstance(signing_key, rsa.RSAPrivateKey) and isinstance(recipient, rsa.RSAPublicKey):
        rsa_key, rsa_recipient = signing_key, recipient

        def send_115() -> object:
            cek = os.urandom(16)
            AESGCM(cek).encrypt(os.urandom(IV_SIZE), m.attachment, None)
            rsa_recipient.encrypt(cek, _OAEP)
            digests()
            return rsa_key.sign(m.signed_info, _PKCS1, hashes.SHA256())

        return send_115
    assert isinstance(signing_key, ed25519.Ed25519PrivateKey) and isinstance(recipient, x25519.X25519PublicKey)
    ed_key, x_recipient = signing_key, recipient

    def send_20() -> object:
        cek = os.urandom(16)
        ephemeral = x25519.X25519PrivateKey.generate()
        kek = _hkdf(ephemeral.exchange(x_recipient), os.urandom(32))
        aes_key_wrap(kek, cek)
        AESGCM(cek).encrypt(os.urandom(IV_SIZE), m.attachment, None)
        digests()
        return ed_key.sign(m.signed_info)

    return send_20


def raw_receive(parties: Parties, m: Material) -> Callable[[], object]:
    """One message's receiving crypto: unwrap, decrypt, digest, verify; digest and sign the receipt."""
    decryption_key = parties.receiver_encryption.private_key
    sender = parties.sender.certificate.public_key()
    receipt_key = parties.receiver_signing.private_key
    iv, sealed = m.ciphertext[:IV_SIZE], m.ciphertext[IV_SIZE:]

    def digests(plaintext: bytes) -> None:
        for data in (plaintext, m.messaging, m.body, m.receipt_messaging, m.receipt_body):
            hashlib.sha256(data).digest()

    if isinstance(decryption_key, rsa.RSAPrivateKey):
        assert isinstance(sender, rsa.RSAPublicKey) and isinstance(receipt_key, rsa.RSAPrivateKey)
        rsa_key, rsa_sender, rsa_receipt = decryption_key, sender, receipt_key

        def receive_115() -> object:
            cek = rsa_key.decrypt(m.wrapped_key, _OAEP)
            digests(AESGCM(cek).decrypt(iv, sealed, None))
            rsa_sender.verify(m.signature, m.signed_info, _PKCS1, hashes.SHA256())
            return rsa_receipt.sign(m.receipt_signed_info, _PKCS1, hashes.SHA256())

        return receive_115
    assert isinstance(decryption_key, x25519.X25519PrivateKey) and m.ephemeral is not None
    assert isinstance(sender, ed25519.Ed25519PublicKey) and isinstance(receipt_key, ed25519.Ed25519PrivateKey)
    x_key, ephemeral, ed_sender, ed_receipt = decryption_key, m.ephemeral, sender, receipt_key

    def receive_20() -> object:
        cek = aes_key_unwrap(_hkdf(x_key.exchange(ephemeral), m.salt), m.wrapped_key)
        digests(AESGCM(cek).decrypt(iv, sealed, None))
        ed_sender.verify(m.signature, m.signed_info)
        return ed_receipt.sign(m.receipt_signed_info)

    return receive_20


# ---------------------------------------------------------------------------------------- 4 KB message


def _check(parties: Parties, attachment: bytes) -> tuple[str, bytes, int]:
    """One round trip checked end to end: payload intact, signer trusted, receipt verifies for the sender."""
    message = user_message()
    content_type, body = send(parties, message, attachment, _ids())
    opened, receipt = receive(parties, content_type, body, _ids())
    payload = opened.payloads[0]
    if payload.sha256 != hashlib.sha256(attachment).hexdigest() or not opened.complete or opened.trust is None:
        raise AssertionError(f"{parties.profile}: the message did not open as sent")
    assert opened.signature is not None
    parsed = read_message(pack_bare(receipt).content_type, receipt).parsed
    assert isinstance(parsed.header, SignalMessage)
    verify_receipt(
        parsed,
        parties.policy,
        sent_message_id=message.message_id,
        sent_references=opened.signature.echoes,
        partner_certificates=(parties.receiver_signing.certificate,),
    )
    return content_type, body, len(receipt)


def run_profile(profile: Profile, *, seconds: float, repeats: int) -> dict[str, Any]:
    """Send and receive, ours and raw, in alternating rounds; medians of ``repeats``."""
    setup = parties(profile)
    attachment = invoice_attachment()
    content_type, body, receipt_bytes = _check(setup, attachment)
    m = material(setup, attachment)
    message = user_message()
    new_id = _ids()
    cases: dict[str, Callable[[], object]] = {
        "send": lambda: send(setup, message, attachment, new_id),
        "raw_send": raw_send(setup, m),
        "receive": lambda: receive(setup, content_type, body, new_id),
        "raw_receive": raw_receive(setup, m),
    }
    for operation in cases.values():
        rate(operation, min(seconds, 0.3))  # warm-up: schema loaded, caches filled
    rounds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, operation in cases.items():
            rounds[name].append(rate(operation, seconds))
    medians = {name: statistics.median(values) for name, values in rounds.items()}
    received = read_message(content_type, body)
    opened, _receipt = receive(setup, content_type, body, new_id)
    user = received.parsed.header
    assert isinstance(user, UserMessage) and opened.signature is not None
    echoes = opened.signature.echoes
    steps: dict[str, Callable[[], object]] = {
        "read_message": lambda: read_message(content_type, body),
        "open_message": lambda: open_message(
            received, setup.policy, at=NOW, keys=(setup.receiver_encryption,), **CACHES.verifying
        ),
        "build_receipt + sign_signal": lambda: sign_signal(
            build_receipt(user, echoes, message_id="r@receiver.example", now=NOW),
            setup.receiver_signing,
            setup.policy,
            new_id=new_id,
            templates=CACHES.templates,
        ),
    }
    stage_seconds = min(seconds, 0.3)
    stages = {
        name: 1e6 / statistics.median(rate(step, stage_seconds) for _ in range(3)) for name, step in steps.items()
    }
    return {
        "profile": profile.value,
        "attachment_bytes": len(attachment),
        "wire_bytes": len(body),
        "receipt_bytes": receipt_bytes,
        "seconds_per_round": seconds,
        "repeats": repeats,
        "send_per_s": medians["send"],
        "raw_send_per_s": medians["raw_send"],
        "send_ratio": medians["send"] / medians["raw_send"],
        "receive_per_s": medians["receive"],
        "raw_receive_per_s": medians["raw_receive"],
        "receive_ratio": medians["receive"] / medians["raw_receive"],
        "receive_stages_us": stages,
        "rounds": rounds,
    }


# ------------------------------------------------------------------------------------ 1 GiB as a stream


def _stream_pipeline(setup: Parties, size: int, chunk_size: int, block: bytes) -> tuple[str, int]:
    """Encrypt (public API) -> ciphertext stream -> decrypt (public API) -> SHA-256, nothing stored."""
    new_id = _ids()
    message = user_message(content_id=STREAM_CID, mime_type="application/octet-stream", compressed=False)
    envelope = build_envelope(message)
    plain = AttachmentSource(STREAM_CID, "application/octet-stream", lambda: payload_chunks(size, chunk_size, block))
    (cipher,) = encrypt_attachments(
        envelope, [plain], setup.receiver_encryption.certificate, setup.policy, new_id=new_id
    )
    # The receiver's view of the envelope (the part itself is a placeholder: its bytes come from ``cipher``).
    packed = pack_message(serialize(envelope), [Attachment(STREAM_CID, cipher.content_type, (b"",))])
    received: ReceivedMessage = read_message(packed.content_type, packed.to_bytes())
    sources = decrypt_attachments(
        received, (setup.receiver_encryption,), setup.policy, open_part=lambda _part: cipher.open()
    )
    counted = _Counted(sources[STREAM_CID].open)
    digest = attachment_digest(
        AttachmentSource(STREAM_CID, "application/octet-stream", counted), DigestAlgorithm.SHA256
    )
    return digest.hex(), counted.size


class _Counted:
    """A chunk source that counts what passes through it."""

    def __init__(self, source: Callable[[], Iterable[bytes]]) -> None:
        self.source = source
        self.size = 0

    def __call__(self) -> Iterator[bytes]:
        for chunk in self.source():
            self.size += len(chunk)
            yield chunk


def _stream_baseline(_setup: Parties, size: int, chunk_size: int, block: bytes) -> tuple[str, int]:
    """The same chunks through a raw AES-GCM encryptor and decryptor (tag checked) and SHA-256."""
    key, iv = os.urandom(16), os.urandom(IV_SIZE)
    encryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).encryptor()
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv)).decryptor()
    digest = hashlib.sha256()
    total = 0
    for chunk in payload_chunks(size, chunk_size, block):
        plain = decryptor.update(encryptor.update(chunk))
        digest.update(plain)
        total += len(plain)
    encryptor.finalize()
    decryptor.finalize_with_tag(encryptor.tag)
    return digest.hexdigest(), total


def measure_stream(size: int, *, baseline: bool, chunk_size: int = 64 * KIB) -> dict[str, Any]:
    """One measurement in this process: MB/s, SHA-256 of the plaintext, RSS at the start and at the peak."""
    block = random_block()
    setup = parties(Profile.EDELIVERY_1_15)  # RSA key generation stays out of the time measured
    rss_start = _status_kib("VmRSS")
    run = _stream_baseline if baseline else _stream_pipeline
    start, cpu_start = time.perf_counter(), time.process_time()
    digest, total = run(setup, size, chunk_size, block)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if total != size:
        raise AssertionError(f"{total} bytes came through, {size} were sent")
    return {
        "size": size,
        "baseline": baseline,
        "chunk_size": chunk_size,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        # Per CPU second, as the 4 KB cases (see ``rate``); wall-clock MB/s alongside.
        "mb_per_s": size / cpu / 1e6,
        "wall_mb_per_s": size / elapsed / 1e6,
        "sha256": digest,
        "rss_start_kib": rss_start,
        "peak_rss_kib": _status_kib("VmHWM"),
    }


def _stream_once(size: int, *, baseline: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.security", "--stream", str(size)] + ["--baseline"] * baseline
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[1:])} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def run_stream(size: int, *, repeats: int) -> dict[str, Any]:
    """Baseline and pipeline in fresh processes, alternating; median MB/s, highest peak RSS of each side."""
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "pipeline": []}
    for _ in range(repeats):
        for side in runs:
            runs[side].append(_stream_once(size, baseline=side == "baseline"))
    digests = {run["sha256"] for side in runs.values() for run in side}
    if len(digests) != 1:
        raise AssertionError(f"the plaintext SHA-256 differs between runs: {digests}")
    median = {side: statistics.median(run["mb_per_s"] for run in values) for side, values in runs.items()}
    peak = {side: max(run["peak_rss_kib"] for run in values) / 1024 for side, values in runs.items()}
    return {
        "size": size,
        "repeats": repeats,
        "sha256": digests.pop(),
        "mb_per_s": median["pipeline"],
        "baseline_mb_per_s": median["baseline"],
        "ratio": median["pipeline"] / median["baseline"],
        "peak_rss_mib": peak["pipeline"],
        "start_rss_mib": max(run["rss_start_kib"] for run in runs["pipeline"]) / 1024,
        "baseline_peak_rss_mib": peak["baseline"],
        "runs": runs["pipeline"],
        "baseline_runs": runs["baseline"],
    }


# ------------------------------------------------------------------------------------------ the whole


RECEIVE_TARGETS = {Profile.EDELIVERY_1_15.value: 0.5, Profile.EDELIVERY_2_0.value: 0.3}
STREAM_TARGET = 0.5


def run(*, seconds: float, repeats: int, stream_size: int, stream_repeats: int) -> dict[str, Any]:
    """Both profiles' 4 KB cases, then the stream."""
    profiles = [run_profile(p, seconds=seconds, repeats=repeats) for p in Profile]
    return {"message": profiles, "stream": run_stream(stream_size, repeats=stream_repeats)}


def print_result(result: dict[str, Any], say: Callable[[str], None]) -> None:
    """The table ``python -m bench`` prints."""
    first = result["message"][0]
    say(
        f"WS-Security of a 4 KB user message ({first['attachment_bytes']} B attachment): ours vs the raw crypto of"
        f" the same operations (plain cryptography); per CPU second, medians of {first['repeats']} rounds of"
        f" {first['seconds_per_round']} CPU s"
    )
    say(f"  {'profile':7} {'case':44} {'ours msg/s':>10} {'raw msg/s':>10} {'ratio':>6}  target")
    for case in result["message"]:
        name = "1.15" if case["profile"] == Profile.EDELIVERY_1_15.value else "2.0"
        target = RECEIVE_TARGETS[case["profile"]]
        met = "met" if case["receive_ratio"] >= target else "NOT met"
        say(
            f"  {name:7} {'send: sign + encrypt + pack':44} {case['send_per_s']:>10,.0f}"
            f" {case['raw_send_per_s']:>10,.0f} {case['send_ratio']:>6.3f}  -"
        )
        say(
            f"  {name:7} {'receive: read, decrypt, verify, signed receipt':44} {case['receive_per_s']:>10,.0f}"
            f" {case['raw_receive_per_s']:>10,.0f} {case['receive_ratio']:>6.3f}  >= {target:.2f}: {met}"
        )
    say("  receiving, each step alone (CPU us per message):")
    say(f"    {'profile':7} {'read_message':>13} {'open_message':>13} {'signed receipt':>15} {'raw, all':>9}")
    for case in result["message"]:
        name = "1.15" if case["profile"] == Profile.EDELIVERY_1_15.value else "2.0"
        stages = list(case["receive_stages_us"].values())
        say(
            f"    {name:7} {stages[0]:>13.0f} {stages[1]:>13.0f} {stages[2]:>15.0f}"
            f" {1e6 / case['raw_receive_per_s']:>9.0f}"
        )
    stream = result["stream"]
    size = stream["size"]
    label = f"{size / (1 << 30):g} GiB" if size >= 1 << 30 else f"{size / (1 << 20):g} MiB"
    met = "met" if stream["ratio"] >= STREAM_TARGET else "NOT met"
    rss_met = "met" if stream["peak_rss_mib"] * (1 << 20) < 100e6 else "NOT met"
    say(
        f"  {label} attachment as a stream (64 KiB chunks): encrypt_attachments -> decrypt_attachments -> SHA-256"
        f" vs raw AES-128-GCM encrypt + decrypt + SHA-256, {stream['repeats']} process(es) each, medians"
    )
    say(f"    {'MB/s':>8} {'raw MB/s':>9} {'ratio':>6} {'peak RSS':>9} {'start RSS':>10} {'raw peak':>9}")
    say(
        f"    {stream['mb_per_s']:>8.1f} {stream['baseline_mb_per_s']:>9.1f} {stream['ratio']:>6.3f}"
        f" {stream['peak_rss_mib']:>7.1f}Mi {stream['start_rss_mib']:>8.1f}Mi {stream['baseline_peak_rss_mib']:>7.1f}Mi"
    )
    say(
        f"    MB = 10^6 bytes of plaintext per CPU second; peak RSS = VmHWM of the process."
        f" Targets: ratio >= {STREAM_TARGET}: {met}; peak RSS under 100 MB: {rss_met}"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.security --stream SIZE [--baseline]``: one stream measurement as a JSON line."""
    parser = argparse.ArgumentParser(prog="python -m bench.security", description=__doc__)
    parser.add_argument("--stream", type=int, required=True, help="payload bytes")
    parser.add_argument("--baseline", action="store_true", help="raw AES-GCM + SHA-256 only")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(measure_stream(args.stream, baseline=args.baseline)) + "\n")


if __name__ == "__main__":
    main()
