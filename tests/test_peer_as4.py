"""Live Peppol AS4 with an independent implementation: the ``as4`` package from PyPI, in its own venv and process.

Both directions over real HTTP between real processes, on the ``peppol`` network profile as it ships (signed and
encrypted, BST X509v3, gzip, SBDH payload, AP PartyIds whose certificate CN they must be, TIA AgreementRef,
hard-fail revocation against a CRL this module serves):

* our access point sends to ``tests/peers/as4_receiver.py`` (as4's parse + receipt behind a stdlib HTTP server),
  which accepts the message and answers with a signed receipt that our sender verifies;
* ``tests/peers/as4_sender.py`` (as4's build + receipt check) posts to our ``/as4``; we store the payload and answer
  with a signed receipt, which as4 verifies (signature, signer, non-repudiation references) or exits non-zero;
* revocation both ways: we neither encrypt to nor accept from an AP whose certificate the CRL lists.

What as4 0.2.0 demands of a partner is in ``../shared/notes/python-peers-and-verifiers.md`` (section 2.4).
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.core.namespaces import PartyIdType
from accesspoint.security.keys import KeyPair
from accesspoint.testing.services import free_port
from tests.peers import HERE as PEERS
from tests.peers import as4_python as peer_as4_python
from tests.test_msh import AccessPointProcess
from tests.trustpki import CA_USAGE, SIGN_AND_ENCRYPT, certificate, crl

OUR_SEAT, PEER_SEAT = "POP000001", "POP000002"  # Peppol seat ids: the PartyIds and the certificates' CNs
REVOKED_SEAT = "POP000003"  # an AP whose certificate the CA has revoked
PEPPOL_AP = PartyIdType.PEPPOL_AP.value
BILLING = {"value": "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0", "type": "cenbii-procid-ubl"}
INVOICE = (
    "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
ACTION = "busdox-docid-qns::" + INVOICE
PARTICIPANTS = "iso6523-actorid-upis"
C1, C4 = "0007:5567321707", "0088:7300010000001"  # end entities: a Swedish sender, a GLN receiver


@pytest.fixture(scope="session")
def as4_python() -> Path:
    """The Python of the as4 venv (made once under ~/.cache/accesspoint-tests)."""
    return peer_as4_python()


# --- a small Peppol-like PKI: one CA, two AP certificates (CN = seat id), a CRL served over HTTP ----------------


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    ours: tuple[Path, Path]  # key, certificate
    peer: tuple[Path, Path]
    revoked: tuple[Path, Path]


def _write(folder: Path, stem: str, pair: KeyPair) -> tuple[Path, Path]:
    key, cert = folder / f"{stem}.key.pem", folder / f"{stem}.pem"
    key.write_bytes(
        pair.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert.write_bytes(pair.certificate.public_bytes(serialization.Encoding.PEM))
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pki]:
    """RSA-2048 CA and AP certificates whose CRL distribution point is a loopback server, as hard-fail needs."""
    crl_der: list[bytes] = []

    class CrlHandler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(crl_der[0])))
            self.end_headers()
            self.wfile.write(crl_der[0])

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), CrlHandler)
    url = f"http://127.0.0.1:{server.server_address[1]}/peppol-test-ca.crl"
    folder = tmp_path_factory.mktemp("peppol-pki")
    ca = certificate("Peppol Test AP CA", "rsa", ca=True, key_usage=CA_USAGE)
    ours = certificate(OUR_SEAT, "rsa", issuer=ca, key_usage=SIGN_AND_ENCRYPT, crl_url=url)
    peer = certificate(PEER_SEAT, "rsa", issuer=ca, key_usage=SIGN_AND_ENCRYPT, crl_url=url)
    revoked = certificate(REVOKED_SEAT, "rsa", issuer=ca, key_usage=SIGN_AND_ENCRYPT, crl_url=url)
    now = datetime.now(UTC)
    entries = [(revoked.certificate.serial_number, now - timedelta(hours=2), x509.ReasonFlags.key_compromise)]
    crl_der.append(crl(ca, entries, last_update=now - timedelta(hours=1)).public_bytes(serialization.Encoding.DER))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (folder / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    try:
        pairs = _write(folder, "ours", ours), _write(folder, "peer", peer), _write(folder, "revoked", revoked)
        yield Pki(folder, folder / "ca.pem", *pairs)
    finally:
        server.shutdown()
        server.server_close()


# --- the peers -----------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """tests/peers/as4_receiver.py running in the as4 venv."""

    process: subprocess.Popen[str]
    port: int
    out: Path

    def record(self, number: int) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.out / f"{number}.json").read_text())
        return document


@pytest.fixture(scope="module")
def receiver(as4_python: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """as4 receiving as POP000002 on a free loopback port, trusting the test CA."""
    out = tmp_path_factory.mktemp("as4-receiver")
    key, cert = pki.peer
    command = [str(as4_python), str(PEERS / "as4_receiver.py"), "0", PEER_SEAT, str(key), str(cert), str(pki.ca)]
    with (
        (out / "stderr.log").open("w") as log,
        subprocess.Popen([*command, str(out)], stdout=subprocess.PIPE, stderr=log, text=True) as process,
    ):
        try:
            assert process.stdout is not None
            line = process.stdout.readline()  # "listening PORT" once the socket is bound, "" if it died
            assert line.startswith("listening "), (out / "stderr.log").read_text()
            yield Receiver(process, int(line.split()[1]), out)
        finally:
            process.terminate()
            process.wait(timeout=10)


def _party(seat: str, endpoint: str, certificate: Path | None = None) -> dict[str, Any]:
    party: dict[str, Any] = {"party_ids": [{"value": seat, "type": PEPPOL_AP}], "endpoint": endpoint}
    if certificate is not None:
        party["signing_certificate"] = str(certificate)
    return party


def _peppol_pmodes(pki: Pki, our_port: int, peer_endpoint: str) -> dict[str, Any]:
    """Our P-Modes with the as4 peer (and with a revoked AP at the same address), both ways; everything not
    written here is the peppol profile's default."""
    leg = {"service": BILLING, "action": ACTION, "security": {"trust": {"anchors": [str(pki.ca)]}}}
    pmodes = []
    for partner, suffix in (("as4-peer", "as4"), ("revoked-ap", "revoked")):
        for initiator, responder, direction in (("our-ap", partner, "to"), (partner, "our-ap", "from")):
            pmodes.append(
                {
                    "id": f"{direction}-{suffix}",
                    "network": "peppol",
                    "initiator": {"party": initiator},
                    "responder": {"party": responder},
                    "legs": [leg],
                }
            )
    return {
        "version": 1,
        "self": "our-ap",
        "parties": {
            "our-ap": _party(OUR_SEAT, f"http://127.0.0.1:{our_port}/as4"),
            "as4-peer": _party(PEER_SEAT, peer_endpoint, pki.peer[1]),
            "revoked-ap": _party(REVOKED_SEAT, peer_endpoint, pki.revoked[1]),
        },
        "pmodes": pmodes,
    }


@pytest.fixture(scope="module")
def our_ap(pki: Pki, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessPointProcess]:
    """Our access point (POP000001) as a process, with revocation checking on (the profile's hard-fail)."""
    port = free_port()
    folder = tmp_path_factory.mktemp("our-ap")
    ap = AccessPointProcess(folder, "our-ap", "unused", port, receiver.port)
    # The helper writes the two-AP test's settings; these replace them with the Peppol deployment.
    (folder / "pmodes.yaml").write_text(json.dumps(_peppol_pmodes(pki, port, f"http://127.0.0.1:{receiver.port}/as4")))
    settings = json.loads((folder / "server.yaml").read_text())
    settings["revocation"] = True
    settings["keys"] = {"signing": {"key": str(pki.ours[0]), "certificate": str(pki.ours[1])}}
    (folder / "server.yaml").write_text(json.dumps(settings))
    try:
        ap.start()
        yield ap
    finally:
        ap.stop()


def _sbd(sender: str, receiver: str, invoice_id: str) -> bytes:
    """A Peppol SBD (SBDH + UBL invoice) as C2 receives it from C1."""
    instance = uuid.uuid4()
    created = datetime.now(UTC).isoformat(timespec="milliseconds")
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<StandardBusinessDocument xmlns="http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader">
  <StandardBusinessDocumentHeader>
    <HeaderVersion>1.0</HeaderVersion>
    <Sender><Identifier Authority="{PARTICIPANTS}">{sender}</Identifier></Sender>
    <Receiver><Identifier Authority="{PARTICIPANTS}">{receiver}</Identifier></Receiver>
    <DocumentIdentification>
      <Standard>urn:oasis:names:specification:ubl:schema:xsd:Invoice-2</Standard>
      <TypeVersion>2.1</TypeVersion>
      <InstanceIdentifier>{instance}</InstanceIdentifier>
      <Type>Invoice</Type>
      <CreationDateAndTime>{created}</CreationDateAndTime>
    </DocumentIdentification>
    <BusinessScope>
      <Scope><Type>DOCUMENTID</Type><InstanceIdentifier>{INVOICE}</InstanceIdentifier>
        <Identifier>busdox-docid-qns</Identifier></Scope>
      <Scope><Type>PROCESSID</Type><InstanceIdentifier>{BILLING["value"]}</InstanceIdentifier>
        <Identifier>cenbii-procid-ubl</Identifier></Scope>
      <Scope><Type>COUNTRY_C1</Type><InstanceIdentifier>SE</InstanceIdentifier></Scope>
    </BusinessScope>
  </StandardBusinessDocumentHeader>
  <Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><ID>{invoice_id}</ID></Invoice>
</StandardBusinessDocument>
""".encode()


def _submit(our_ap: AccessPointProcess, pmode: str, document: bytes) -> str:
    """Hand an SBD to our access point for ``pmode``; its message id."""
    message_id = f"{uuid.uuid4()}@pop000001.test"
    status, stored = our_ap.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": pmode,
            "message_id": message_id,
            "properties": {
                "originalSender": {"value": C1, "type": PARTICIPANTS},
                "finalRecipient": {"value": C4, "type": PARTICIPANTS},
            },
            "payloads": [
                {
                    "content_id": "invoice@pop000001.test",
                    "mime_type": "application/xml",
                    "data": base64.b64encode(document).decode(),
                }
            ],
        },
    )
    assert status == 202, stored
    return message_id


# --- the exchanges -------------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_as4_accepts_our_signed_encrypted_message_and_we_verify_its_receipt(
    our_ap: AccessPointProcess, receiver: Receiver
) -> None:
    """as4 verifies, decrypts and accepts our Peppol message; its signed receipt makes the message delivered."""
    document = _sbd(C1, C4, "INV-TO-AS4")
    message_id = _submit(our_ap, "to-as4", document)
    sent = our_ap.wait_state(message_id, {"delivered", "failed"})
    records = sorted(receiver.out.glob("*.json"))
    seen = [json.loads(p.read_text()) for p in records]
    assert sent["state"] == "delivered", (sent, seen)
    assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    (record,) = [r for r in seen if r.get("message_id") == message_id]
    assert record["successful"] is True, record
    (payload,) = record["payloads"].values()
    assert (payload["sha256"], payload["size"]) == (hashlib.sha256(document).hexdigest(), len(document))


def _as4_send(
    as4_python: Path, pki: Pki, our_ap: AccessPointProcess, folder: Path, *, expect: Path, seat: str = PEER_SEAT
) -> Any:
    """Run tests/peers/as4_sender.py as ``seat`` against our /as4, expecting a receipt signed by ``expect``."""
    invoice = folder / "invoice.xml"
    invoice.write_bytes(
        b'<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"><ID>INV-FROM-AS4</ID></Invoice>'
    )
    key, cert = pki.peer if seat == PEER_SEAT else pki.revoked
    url = f"http://127.0.0.1:{our_ap.port}/as4"
    script = str(PEERS / "as4_sender.py")
    return subprocess.run(
        [str(as4_python), script, url, seat, str(key), str(cert), OUR_SEAT, str(expect), str(invoice), C4, C1],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.timeout(900)
def test_we_accept_as4_message_and_as4_verifies_our_receipt(
    as4_python: Path, pki: Pki, our_ap: AccessPointProcess, tmp_path: Path
) -> None:
    """as4 posts a Peppol message to our /as4; we store its SBD and our signed receipt passes as4's checks."""
    run = _as4_send(as4_python, pki, our_ap, tmp_path, expect=pki.ours[1])
    assert run.returncode == 0, (run.stdout, run.stderr, (our_ap.folder / "server.log").read_text()[-3000:])
    report = json.loads(run.stdout)
    assert report["receipt_verified"] is True and report["http_status"] == 200
    received = our_ap.wait_state(report["message_id"], {"received"}, direction="in")
    assert received["from"].endswith(PEER_SEAT)
    assert {"raw-message", "our-receipt"} <= {e["kind"] for e in received["evidence"]}
    (part,) = received["payloads"]
    assert (part["content_id"], part["size"]) == (report["content_id"], report["size"])
    assert part["sha256"] == report["sha256"]
    path = f"/api/v1/messages/{report['message_id']}/payloads/{part['content_id']}?direction=in"
    status, body = our_ap.api("GET", path)
    assert status == 200 and hashlib.sha256(body).hexdigest() == report["sha256"]


@pytest.mark.timeout(900)
def test_as4_sender_exits_non_zero_when_the_receipt_is_not_from_whom_it_expects(
    as4_python: Path, pki: Pki, our_ap: AccessPointProcess, tmp_path: Path
) -> None:
    """The peer's verdict is real: told to expect POP000002's signature, as4 refuses our (valid) receipt."""
    run = _as4_send(as4_python, pki, our_ap, tmp_path, expect=pki.peer[1])
    assert run.returncode == 1, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["http_status"] == 200 and report["receipt_verified"] is False and "refused" in report


def test_submission_properties_take_a_type_or_are_refused(our_ap: AccessPointProcess) -> None:
    """A property is a string or {value, type}; any other shape is a 422 problem naming the property."""
    bad = {"value": C1, "scheme": PARTICIPANTS}
    document = {"pmode": "to-as4", "properties": {"originalSender": bad}, "payloads": [{"data": "PGEvPg=="}]}
    status, problem = our_ap.api("POST", "/api/v1/messages", document)
    assert status == 422 and "properties.originalSender" in problem["detail"]


@pytest.mark.timeout(900)
def test_we_do_not_send_to_an_ap_whose_certificate_is_revoked(our_ap: AccessPointProcess, receiver: Receiver) -> None:
    """Hard-fail revocation holds on the sending side too: nothing is encrypted to a revoked AP's certificate."""
    message_id = _submit(our_ap, "to-revoked", _sbd(C1, C4, "INV-TO-REVOKED"))
    failed = our_ap.wait_state(message_id, {"delivered", "failed"})
    assert failed["state"] == "failed", failed
    assert failed["last_error"]["code"] == "EBMS:0101" and "revoked" in failed["last_error"]["detail"]
    seen = [json.loads(p.read_text()).get("message_id") for p in receiver.out.glob("*.json")]
    assert message_id not in seen


@pytest.mark.timeout(900)
def test_we_refuse_an_as4_sender_whose_certificate_is_revoked(
    as4_python: Path, pki: Pki, our_ap: AccessPointProcess, tmp_path: Path
) -> None:
    """A revoked AP's message gets our signed EBMS:0101 error, which as4 verifies and reports; nothing is stored."""
    run = _as4_send(as4_python, pki, our_ap, tmp_path, expect=pki.ours[1], seat=REVOKED_SEAT)
    assert run.returncode == 1, (run.stdout, run.stderr)
    report = json.loads(run.stdout)
    assert report["ebms_error"]["code"] == "EBMS:0101" and report["receipt_verified"] is False
    status, _problem = our_ap.api("GET", f"/api/v1/messages/{report['message_id']}?direction=in")
    assert status == 404
