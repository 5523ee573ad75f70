"""``accesspoint verify`` end to end: real vectors from other implementations, through the CLI (the first as a
process, the rest through its ``main`` in this process: ``tests/cli.py``)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.cli import as_process, in_process
from tests.conftest import interop_path

PEERS = "python-peers"


def _verify(*args: str, process: bool = False) -> tuple[int, dict[str, Any]]:
    done = (as_process if process else in_process)("verify", *args)
    return done.code, done.document


def _p(relative: str) -> str:
    return str(interop_path(relative))


@pytest.mark.parametrize("name", ["as4", "peppol-py"])
def test_peer_message_decrypts_and_verifies_completely_with_the_receiver_key(name: str) -> None:
    """With the receiver's key the attachment decrypts, its digest verifies and the payload is the peer's SBD."""
    code, report = _verify(
        _p(f"{PEERS}/{name}.usermessage.mime"),
        "--trust",
        _p(f"{PEERS}/pki/ca.cert.pem"),
        "--key",
        _p(f"{PEERS}/pki/receiver.key.pem"),
        "--no-revocation",
        process=name == "as4",
    )
    assert code == 0, report
    assert report["ok"] is True and report["complete"] is True
    assert report["signer"]["subject"].startswith("CN=PTE000001")
    assert report["algorithms"]["signature"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert "http://www.w3.org/2009/xmlenc11#aes128-gcm" in report["algorithms"]["encryption"]
    assert {r["target"] for r in report["references"]} >= {"messaging", "body"}
    assert all(r["result"] == "valid" for r in report["references"])
    (payload,) = report["payloads"]
    expected = gzip.decompress(interop_path(f"{PEERS}/{name}.attachment.decrypted.gz").read_bytes())
    assert (payload["size"], payload["sha256"]) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert payload["encrypted"] is True and payload["compressed"] is True
    assert report["trust"]["path"][-1].startswith("CN=Interop Test CA")


def test_peer_message_without_a_key_is_incomplete_with_exit_3() -> None:
    """Without a key the signature over header and body holds, the attachment reference stays unchecked: exit 3."""
    code, report = _verify(
        _p(f"{PEERS}/as4.usermessage.mime"), "--trust", _p(f"{PEERS}/pki/ca.cert.pem"), "--no-revocation"
    )
    assert code == 3, report
    assert report["complete"] is False
    assert len(report["undecrypted"]) == 1
    unchecked = [r for r in report["references"] if r["result"] != "valid"]
    assert [r["uri"] for r in unchecked] == [f"cid:{report['undecrypted'][0]}"]
    assert report["payloads"] == []


def test_signer_from_an_untrusted_ca_is_refused_with_0101() -> None:
    """A CA with the same name but another key does not make the sender trusted: EBMS:0101, exit 1."""
    code, report = _verify(
        _p(f"{PEERS}/as4.usermessage.mime"),
        "--trust",
        _p(f"{PEERS}/pki/untrusted-ca.cert.pem"),
        "--key",
        _p(f"{PEERS}/pki/receiver.key.pem"),
        "--no-revocation",
    )
    assert code == 1, report
    assert report["error"]["code"] == "EBMS:0101"
    assert report["trust_failure"] == "untrusted-issuer"


def test_wrong_decryption_key_leaves_the_message_incomplete() -> None:
    """The sender's key is not the one the message was encrypted for: nothing decrypts, exit 3."""
    code, report = _verify(
        _p(f"{PEERS}/as4.usermessage.mime"),
        "--trust",
        _p(f"{PEERS}/pki/ca.cert.pem"),
        "--key",
        _p(f"{PEERS}/pki/sender.key.pem"),
        "--no-revocation",
    )
    assert code == 3, report
    assert report["undecrypted"]


@pytest.mark.parametrize("relative", ["phase4/receipts/helger.as4in", "phase4/receipts/governikus.as4in"])
def test_recorded_receipts_verify_against_the_peppol_truststore(relative: str) -> None:
    """Receipts from phase4 and Governikus verify and chain to a Peppol test CA as of their signing time."""
    code, report = _verify(
        _p(relative),
        "--trust",
        _p("phase4/keys/complete-truststore.pem"),
        "--at",
        "2022-03-07T17:00:00Z",
        "--no-revocation",
    )
    assert code == 0, report
    assert report["kind"] == "receipt"
    assert report["trust"]["pinned"] is False
    assert len(report["trust"]["path"]) >= 2


def test_receipt_from_a_newer_ca_generation_is_untrusted_by_the_older_truststore() -> None:
    """TestReceipt12's signature holds, but its G3-era issuer is not among the 2022 truststore's CAs: EBMS:0101."""
    code, report = _verify(
        _p("phase4/receipts/TestReceipt12.xml"),
        "--trust",
        _p("phase4/keys/complete-truststore.pem"),
        "--at",
        "2025-12-05T14:03:40Z",
        "--no-revocation",
    )
    assert code == 1, report
    assert (report["error"]["code"], report["trust_failure"]) == ("EBMS:0101", "untrusted-issuer")


def test_tampered_receipt_fails_on_the_messaging_digest() -> None:
    """dataport1: mustUnderstand rewritten after signing; refused with EBMS:0101 naming the Messaging digest."""
    code, report = _verify(
        _p("phase4/receipts/dataport1.as4in"),
        "--trust",
        _p("phase4/keys/complete-truststore.pem"),
        "--at",
        "2022-03-07T17:00:00Z",
        "--no-revocation",
    )
    assert code == 1, report
    assert report["error"]["code"] == "EBMS:0101"
    assert "digest mismatch" in report["error"]["reason"]
    assert "Messaging" in report["error"]["reason"]


def test_soap11_receipt_signing_only_the_body_verifies_with_a_warning() -> None:
    """TestReceipt11 signs only its Body: valid for the README's verifiers, reported with a coverage warning; its
    SOAP 1.1, which an AS4 endpoint refuses (EBMS:0010) unless the P-Mode relaxes soap11, is a wire deviation."""
    code, report = _verify(
        _p("phase4/receipts/TestReceipt11.xml"), "--trust", _p("phase4/keys/ph-as4.cert.pem"), "--no-revocation"
    )
    assert code == 0, report
    assert report["trust"]["pinned"] is True
    assert any("eb:Messaging is not covered" in w for w in report["warnings"])
    assert [(d["rule"], d["code"]) for d in report["wire_deviations"]] == [("soap11", "EBMS:0010")]


def test_expired_signer_is_refused_as_of_now_and_accepted_as_of_its_time() -> None:
    """The same receipt is refused today (its certificate expired) and valid at the moment it was signed."""
    args = [_p("phase4/receipts/helger.as4in"), "--trust", _p("phase4/keys/complete-truststore.pem"), "--no-revocation"]
    code, report = _verify(*args)
    assert code == 1 and report["trust_failure"] == "expired", report
    code, _report = _verify(*args, "--at", "2022-03-07T17:00:00Z")
    assert code == 0


@pytest.mark.parametrize(
    "relative", ["phase4/negative/WrongSigningAlgorithm.xml", "phase4/negative/WrongSigningDigestAlgorithm.xml"]
)
def test_disallowed_algorithms_are_refused_with_0103(relative: str) -> None:
    """Unknown signature or digest algorithms are a policy refusal (EBMS:0103), not a crash."""
    code, report = _verify(_p(relative), "--trust", _p("phase4/keys/complete-truststore.pem"), "--no-revocation")
    assert code == 1, report
    assert report["error"]["code"] == "EBMS:0103"


def test_malformed_message_exits_2_and_missing_trust_is_a_usage_error(tmp_path: Path) -> None:
    """A file that is not AS4 exits 2 with its ebMS code; leaving out --trust is a usage error (64)."""
    junk = tmp_path / "junk.xml"
    junk.write_text("<not-soap/>")
    code, report = _verify(
        str(junk), "--content-type", "application/soap+xml", "--trust", _p(f"{PEERS}/pki/ca.cert.pem")
    )
    assert code == 2 and report["error"]["code"].startswith("EBMS:")
    code, report = _verify(str(junk))
    assert code == 64 and report["error"]["code"] == "usage"
