"""RFC 3161 time-stamps: our request, our test authority and our checks, cross-checked with ``openssl ts``."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from accesspoint.security import timestamp
from accesspoint.security.timestamp import TimestampError, token_of, verify_token
from accesspoint.security.tsa import POLICY, TimeStampAuthority
from accesspoint.testing.pki import make_ca
from accesspoint.testing.tsa import running_authority, tsa_certificate, write

CA = make_ca("Time-Stamp Test CA")
OTHER_CA = make_ca("Another CA")
TSA_KEYS = tsa_certificate(CA)
MOMENT = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)
DATA = b"<Delgivningskvitto>the served letter</Delgivningskvitto>"
DIGEST = hashlib.sha256(DATA).digest()


def _stamp(authority: TimeStampAuthority, digest: bytes = DIGEST) -> tuple[timestamp.TimestampRequest, bytes]:
    query = timestamp.request(digest)
    return query, token_of(authority.respond(query.der))


def test_token_from_the_test_authority_verifies_with_nonce_time_and_policy() -> None:
    """A token over the digest verifies and says when (the authority's clock), under which policy, which nonce."""
    query, token = _stamp(TimeStampAuthority(TSA_KEYS, clock=lambda: MOMENT))
    verified = verify_token(token, digest=DIGEST, nonce=query.nonce, anchors=[CA.certificate])
    assert verified.gen_time == MOMENT and verified.policy == POLICY
    assert verified.nonce == query.nonce and query.nonce.bit_length() == 64
    assert verified.signer == TSA_KEYS.certificate
    assert verified.to_json()["imprint_sha256"] == DIGEST.hex()


def test_token_over_another_digest_or_with_another_nonce_is_refused() -> None:
    """The imprint and the nonce must be those of the request."""
    query, token = _stamp(TimeStampAuthority(TSA_KEYS))
    with pytest.raises(TimestampError, match="message imprint"):
        verify_token(token, digest=hashlib.sha256(b"other").digest(), anchors=[CA.certificate])
    with pytest.raises(TimestampError, match="nonce"):
        verify_token(token, digest=DIGEST, nonce=query.nonce + 1, anchors=[CA.certificate])


def test_tampered_token_is_refused() -> None:
    """A changed byte in the signature or in the signed time fails the signature or the message digest."""
    _query, token = _stamp(TimeStampAuthority(TSA_KEYS, clock=lambda: MOMENT))
    signature_flipped = token[:-5] + bytes([token[-5] ^ 1]) + token[-4:]
    with pytest.raises(TimestampError, match="signature does not verify"):
        verify_token(signature_flipped, digest=DIGEST, anchors=[CA.certificate])
    moment = b"20261207120000Z"
    assert token.count(moment) == 1
    with pytest.raises(TimestampError, match="message digest"):
        verify_token(token.replace(moment, b"20261207120001Z"), digest=DIGEST, anchors=[CA.certificate])


def test_authority_must_have_the_critical_time_stamping_usage_alone() -> None:
    """RFC 3161 2.3: a non-critical extended key usage, or one with another purpose, is refused."""
    for keys, reason in (
        (tsa_certificate(CA, critical=False), "not critical"),
        (
            tsa_certificate(CA, purposes=(ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.CODE_SIGNING)),
            "alone",
        ),
    ):
        _query, token = _stamp(TimeStampAuthority(keys))
        with pytest.raises(TimestampError, match=reason):
            verify_token(token, digest=DIGEST, anchors=[CA.certificate])


def test_authority_under_another_anchor_is_not_trusted() -> None:
    """The authority's certificate must chain to the anchors given."""
    _query, token = _stamp(TimeStampAuthority(TSA_KEYS))
    with pytest.raises(TimestampError, match="not trusted"):
        verify_token(token, digest=DIGEST, anchors=[OTHER_CA.certificate])


def test_refusing_authority_is_reported_with_its_status() -> None:
    """A response that grants nothing says why."""
    with pytest.raises(TimestampError, match="rejection"):
        token_of(TimeStampAuthority(TSA_KEYS).respond(b"\x30\x03\x02\x01\x07"))


@pytest.fixture
def openssl(tmp_path: Path) -> Path:
    """The folder with the CA and the authority's key and certificate as files (skips without openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    write(TSA_KEYS, tmp_path)
    (tmp_path / "ca.pem").write_bytes(CA.certificate.public_bytes(Encoding.PEM))
    return tmp_path


def _run(*arguments: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *arguments], cwd=folder, capture_output=True, text=True, check=False)


def test_openssl_ts_verify_accepts_our_token_with_its_nonce(openssl: Path) -> None:
    """``openssl ts -verify`` accepts our authority's token over the data, and against the query's nonce."""
    (openssl / "kvitto.xml").write_bytes(DATA)
    query = timestamp.request(DIGEST)
    (openssl / "query.tsq").write_bytes(query.der)
    (openssl / "reply.tsr").write_bytes(TimeStampAuthority(TSA_KEYS).respond(query.der))
    (openssl / "token.tst").write_bytes(token_of((openssl / "reply.tsr").read_bytes()))
    by_data = _run("ts", "-verify", "-data", "kvitto.xml", "-in", "token.tst", "-token_in", "-CAfile", "ca.pem",
                   folder=openssl)  # fmt: skip
    assert by_data.returncode == 0 and "Verification: OK" in by_data.stdout, by_data.stderr
    by_query = _run("ts", "-verify", "-queryfile", "query.tsq", "-in", "reply.tsr", "-CAfile", "ca.pem",
                    folder=openssl)  # fmt: skip
    assert by_query.returncode == 0, by_query.stderr
    (openssl / "other.xml").write_bytes(b"other")
    other = _run("ts", "-verify", "-data", "other.xml", "-in", "token.tst", "-token_in", "-CAfile", "ca.pem",
                 folder=openssl)  # fmt: skip
    assert other.returncode != 0


def test_our_checks_accept_a_token_from_openssl_ts_reply(openssl: Path) -> None:
    """A token ``openssl ts -reply`` made for our request (ESS v1 or v2) verifies with our code."""
    (openssl / "serial").write_text("01\n")
    for algorithm in ("sha1", "sha256"):
        (openssl / "tsa.cnf").write_text(
            "[ tsa ]\ndefault_tsa = tsa_config\n[ tsa_config ]\nserial = ./serial\ndefault_policy = 1.2.3.4.1\n"
            f"digests = sha256\nsigner_digest = sha256\naccuracy = secs:1\ness_cert_id_alg = {algorithm}\n"
            "ess_cert_id_chain = no\n"
        )
        query = timestamp.request(DIGEST)
        (openssl / "query.tsq").write_bytes(query.der)
        made = _run("ts", "-reply", "-config", "tsa.cnf", "-queryfile", "query.tsq", "-signer", "tsa.pem",
                    "-inkey", "tsa.key", "-out", "reply.tsr", folder=openssl)  # fmt: skip
        assert made.returncode == 0, made.stderr
        token = token_of((openssl / "reply.tsr").read_bytes())
        verified = verify_token(token, digest=DIGEST, nonce=query.nonce, anchors=[CA.certificate])
        assert verified.policy == "1.2.3.4.1" and verified.signer == TSA_KEYS.certificate


def test_tsa_serve_answers_over_http_and_refuses_a_certificate_without_the_usage(tmp_path: Path) -> None:
    """``accesspoint tsa serve`` answers a query with a token that verifies; a certificate without the critical
    time-stamping usage stops its start with exit 64."""
    with running_authority(TSA_KEYS, tmp_path / "tsa") as url:
        query = timestamp.request(DIGEST)
        headers = {"Content-Type": "application/timestamp-query"}
        http = urllib.request.Request(url, data=query.der, headers=headers)  # noqa: S310 (loopback)
        with urllib.request.urlopen(http, timeout=10) as answer:  # noqa: S310 (loopback)
            assert answer.headers["Content-Type"] == "application/timestamp-reply"
            token = token_of(answer.read())
        verify_token(token, digest=DIGEST, nonce=query.nonce, anchors=[CA.certificate])
    key, certificate = write(tsa_certificate(CA, critical=False), tmp_path / "bad")
    refused = subprocess.run(
        [sys.executable, "-m", "accesspoint", "tsa", "serve", "--key", str(key), "--certificate", str(certificate),
         "--port", "1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 64 and "not critical" in json.loads(refused.stdout)["error"]["reason"]
