"""End to end across real processes: a Nordic sender's access point -> the Swedish access point (the router,
asking FaR before it answers) -> the mailbox operator's access point.

FaR runs as ``accesspoint far serve`` with its recipients loaded by ``accesspoint far import``; each access
point is an ``accesspoint serve`` process. A reachable recipient's letter is forwarded to the operator that FaR
names, at the endpoint FaR gives; a recipient without a mailbox and a refused sender are answered at once with
EBMS:0004 and the reason; with FaR down the sender gets a clear EBMS:0004 too. A foreign participant's letter
goes where BDXL (dnsmasq) and the project's SMP server say. FaR's sender register binds each sender to the access
points that may send for it: an unregistered, suspended or elsewhere-connected originalSender is refused, and the
router's own backend sends a mass mailing through FaR in batches.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.security.keys import load_key_pair
from accesspoint.testing.dnsserver import DnsServer
from accesspoint.testing.pki import issue
from accesspoint.testing.services import free_port
from accesspoint.testing.smp import LOOPBACK, ZONE, pem, pki, publish, write_config, write_keys
from far.identifiers import with_check_digit
from smp.identifiers import NO_PROCESS, Identifier, peppol_naptr_name
from smp.model import EndpointInfo, ProcessInfo, ServiceMetadata, TransportProfile
from tests.conftest import REPO
from tests.test_discovery_e2e import configure
from tests.test_msh import CERTS, TOKEN, UNREGISTERED, AccessPointProcess
from tests.test_smp_cli import _serve, _wait_for_port

FAR_TOKEN = "far-admin-token-0123456789"
SENDER = with_check_digit("202100544")  # the authority sending from the Nordic access point
REFUSED_SENDER = with_check_digit("212000123")  # a sender one recipient refuses
UNREGISTERED_SENDER = with_check_digit("202100111")  # a valid organisationsnummer the sender register lacks
SUSPENDED_SENDER = with_check_digit("202100222")
ELSEWHERE_SENDER = "0192:974760673"  # registered, but connected through another access point only
OPERATOR_ORGNR = with_check_digit("556840226")
PERSON = "19" + with_check_digit("780202238")  # a mailbox at the operator
REFUSER = "19" + with_check_digit("811218987")  # a mailbox at the operator, refusing REFUSED_SENDER
NOBODY = "19" + with_check_digit("900101123")  # not in FaR
SERVICE = {"value": "urn:example:digital-post", "type": "urn:example:service-type"}
ACTION = "busdox-docid-qns::urn:example:digital-post::Letter##1.0"  # the document type, for discovery too
FOREIGN = "iso6523-actorid-upis::0088:5798000000009"  # a foreign participant, found through BDXL + SMP


def _party(value: str, **extra: Any) -> dict[str, Any]:
    return {"party_ids": [{"value": value, "type": UNREGISTERED}], "endpoint": "http://127.0.0.1:1/as4", **extra}


def _leg(*, pin: bool = True) -> dict[str, Any]:
    security = {"trust": {"anchors": [str(CERTS / "ca.pem")], "pin_partner": pin, "revocation": "off"}}
    awareness = {"retries": 1, "backoff_base": "200ms", "backoff_max": "1s", "jitter": 0.0}
    return {"service": SERVICE, "action": ACTION, "security": security, "reception_awareness": awareness}


def _pmode(pmode_id: str, initiator: str, responder: str, *, pin: bool = True) -> dict[str, Any]:
    return {
        "id": pmode_id,
        "network": "edelivery-1.15",
        "initiator": {"party": initiator},
        "responder": {"party": responder},
        "legs": [_leg(pin=pin)],
    }


def _document(self_name: str, parties: dict[str, Any], *pmodes: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "self": self_name, "parties": parties, "pmodes": list(pmodes)}


def _sha256(path: Path) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)).hexdigest()


def _far_call(base: str, method: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method=method)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {FAR_TOKEN}")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http on loopback)
        return json.loads(response.read() or b"{}")


@dataclass
class Federation:
    """The running processes."""

    nordic: AccessPointProcess
    sweden: AccessPointProcess
    operator: AccessPointProcess
    far: subprocess.Popen[bytes]


def _start_far(folder: Path, port: int, operator_port: int) -> subprocess.Popen[bytes]:
    """``far serve`` with the operator (REST) and the recipients (``far import``) loaded."""
    config = folder / "far.toml"
    config.write_text(
        f'[far]\ndatabase = "sqlite+aiosqlite:///far.db"\nport = {port}\n\n'
        f'[[far.tokens]]\nname = "admin"\ntoken = "{FAR_TOKEN}"\nscopes = ["read", "write"]\n'
    )
    command = [sys.executable, "-m", "accesspoint", "far"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (folder / "far.log").open("ab") as log:  # the child keeps its own copy of the descriptor
        far = subprocess.Popen([*command, "serve", "--config", str(config)], cwd=REPO, stdout=log, stderr=log, env=env)
    try:
        _wait_for_port(port, far)
        base = f"http://127.0.0.1:{port}"
        operator = {
            "name": "Mailbox AB",
            "party_id": "AP-OPERATOR-1",
            "endpoint": f"http://127.0.0.1:{operator_port}/as4",
        }
        _far_call(base, "PUT", f"/api/v1/operators/{OPERATOR_ORGNR}", operator)
        nordic_ap = {"party_id": "AP-BE-0115", "certificate_sha256": _sha256(CERTS / "partner-115.pem")}
        own_ap = {"party_id": "AP-SE-0001", "certificate_sha256": _sha256(CERTS / "ap-sweden-sign.pem")}
        elsewhere = {"party_id": "AP-NO-0001", "certificate_sha256": "00" * 32}
        for sender, status, points in (
            (SENDER, "active", [nordic_ap, own_ap]),
            (REFUSED_SENDER, "active", [nordic_ap]),
            (SUSPENDED_SENDER, "suspended", [nordic_ap]),
            (ELSEWHERE_SENDER, "active", [elsewhere]),
        ):
            record = {"name": f"Agency {sender}", "status": status, "access_points": points}
            _far_call(base, "PUT", f"/api/v1/senders/{sender}", record)
        recipients = folder / "recipients.csv"
        recipients.write_text(
            "recipient,status,operator,refused_senders\n"
            f"{PERSON},secure,{OPERATOR_ORGNR},\n"
            f"{REFUSER},secure,{OPERATOR_ORGNR},{REFUSED_SENDER}\n"
        )
        done = subprocess.run(
            [*command, "import", str(recipients), "--config", str(config)],
            cwd=REPO, capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    except BaseException:
        _stop(far)
        raise
    return far


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """FaR and the three access points, all running."""
    folder = tmp_path_factory.mktemp("routing-e2e")
    far_port, nordic_port, se_port, op_port = (free_port() for _ in range(4))
    ca = load_key_pair(CERTS / "ca.key.pem", None, certificate=CERTS / "ca.pem")
    operator_key, operator_certificate = write_keys(folder, issue(ca, "AP-OPERATOR-1"), "operator")
    se_endpoint = f"http://127.0.0.1:{se_port}/as4"
    sign = {"ap-sweden": str(CERTS / "ap-sweden-sign.pem"), "nordic": str(CERTS / "partner-115.pem")}

    nordic = AccessPointProcess(folder / "nordic", "nordic", "partner-115", nordic_port, se_port)
    nordic_parties = {
        "nordic": _party("AP-BE-0115"),
        "ap-sweden": _party("AP-SE-0001", signing_certificate=sign["ap-sweden"], endpoint=se_endpoint),
    }
    configure(nordic, _document("nordic", nordic_parties, _pmode("nordic-to-se", "nordic", "ap-sweden")))

    sweden = AccessPointProcess(folder / "se", "ap-sweden", "ap-sweden-sign", se_port, nordic_port)
    with contextlib.ExitStack() as stack:
        # The foreign participant's access point is, for this test, the operator's: the SMP says so.
        discovery = stack.enter_context(_foreign_smp(folder, f"http://127.0.0.1:{op_port}/as4", operator_certificate))
        sweden_parties = {
            "ap-sweden": _party("AP-SE-0001"),
            "nordic": _party("AP-BE-0115", signing_certificate=sign["nordic"]),
            # The operator's endpoint is FaR's; its certificate is agreed in the P-Mode.
            "operator": {
                "party_ids": [{"value": "AP-OPERATOR-1", "type": UNREGISTERED}],
                "endpoint": "dynamic",
                "signing_certificate": str(operator_certificate),
            },
            "network": {"endpoint": "dynamic"},  # foreign participants: endpoint and certificate from their SMP
        }
        routing = {
            "far": f"http://127.0.0.1:{far_port}",
            "token": FAR_TOKEN,
            "pmodes": ["nordic-to-se"],
            "timeout": "3s",
        }
        configure(
            sweden,
            _document(
                "ap-sweden",
                sweden_parties,
                _pmode("nordic-to-se", "nordic", "ap-sweden"),
                _pmode("se-to-operator", "ap-sweden", "operator"),
                _pmode("se-to-network", "ap-sweden", "network", pin=False),
            ),
            routing=routing,
            discovery=discovery,
        )

        operator = AccessPointProcess(folder / "op", "operator", "partner-115", op_port, se_port)
        operator_parties = {
            "operator": _party("AP-OPERATOR-1"),
            "ap-sweden": _party("AP-SE-0001", signing_certificate=sign["ap-sweden"]),
        }
        configure(
            operator,
            _document("operator", operator_parties, _pmode("se-to-operator", "ap-sweden", "operator")),
            keys={"signing": {"key": str(operator_key), "certificate": str(operator_certificate)}},
        )
        far = _start_far(folder, far_port, op_port)
        stack.callback(_stop, far)
        for ap in (operator, sweden, nordic):
            stack.callback(ap.stop)
            ap.start()
        yield Federation(nordic, sweden, operator, far)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def _foreign_smp(folder: Path, url: str, certificate_file: Path) -> Iterator[dict[str, str]]:
    """dnsmasq and ``smp serve`` publishing FOREIGN at ``url``; yields the router's discovery settings."""
    smp_port = free_port()
    smp = _serve(write_config(folder, smp_port))
    dns = DnsServer(folder, (ZONE,))
    try:
        _wait_for_port(smp_port, smp)
        base = f"http://127.0.0.1:{smp_port}"
        der = x509.load_pem_x509_certificate(certificate_file.read_bytes()).public_bytes(Encoding.DER)
        endpoint = EndpointInfo(TransportProfile.EDELIVERY_AS4_1_15, url, der)
        process = ProcessInfo(Identifier("cenbii-procid-ubl", NO_PROCESS), (endpoint,))
        asyncio.run(publish(base, ServiceMetadata(Identifier.parse(FOREIGN), Identifier.parse(ACTION), (process,))))
        dns.add_naptr(peppol_naptr_name(Identifier.parse(FOREIGN), ZONE), base + "/")
        dns.start()
        (folder / "smp-trust.pem").write_bytes(pem(pki().ca))
        host, port = dns.address
        yield {"zone": ZONE, "dns": f"{host}:{port}", "smp_trust": str(folder / "smp-trust.pem"), **LOOPBACK}
    finally:
        dns.stop()
        _stop(smp)


def send(nordic: AccessPointProcess, message_id: str, recipient: Any, sender: str, payload: bytes) -> None:
    """Submit a letter on the Nordic access point: originalSender an orgnr (ICD 0007), finalRecipient 12 digits."""
    status, document = nordic.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": "nordic-to-se",
            "message_id": message_id,
            "conversation_id": f"conv-{message_id}",
            "properties": {
                "originalSender": {
                    "value": sender if ":" in sender else f"0007:{sender}",
                    "type": "iso6523-actorid-upis",
                },
                "finalRecipient": recipient,
            },
            "payloads": [
                {
                    "content_id": "letter@nordic",
                    "mime_type": "application/xml",
                    "data": base64.b64encode(payload).decode(),
                }
            ],
        },
    )
    assert status == 202, document


def refused_with(federation: Federation, message_id: str, reason: str) -> dict[str, Any]:
    """The sender's message failed on its first attempt with EBMS:0004 whose detail starts with ``reason``."""
    failed = federation.nordic.wait_state(message_id, {"delivered", "failed"})
    assert failed["state"] == "failed", failed
    assert failed["last_error"]["code"] == "EBMS:0004", failed
    assert failed["last_error"]["detail"].startswith(f"{reason}: "), failed
    assert failed["attempts"] == 1  # answered at once, not by a timeout
    status, _ = federation.sweden.api("GET", f"/api/v1/messages/{message_id}?direction=in")
    assert status == 404  # the router kept nothing it refused
    return failed


def test_reachable_recipient_is_forwarded_to_the_operator_far_names(federation: Federation) -> None:
    """Delivered at the operator's access point; the router's status says to which operator it went."""
    payload = b"<letter>" + os.urandom(300).hex().encode() + b"</letter>"
    send(federation.nordic, "post-1@nordic", PERSON, SENDER, payload)
    sent = federation.nordic.wait_state("post-1@nordic", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    routed = federation.sweden.wait_state("post-1@nordic", {"delivered_to_backend"}, direction="in")
    outcome = routed["history"][-1]["detail"]
    assert "forwarded to operator Mailbox AB (AP-OPERATOR-1)" in outcome and "fwd-post-1@nordic" in outcome
    forwarded = federation.sweden.wait_state("fwd-post-1@nordic", {"delivered", "failed"})
    assert forwarded["state"] == "delivered", forwarded
    assert forwarded["conversation_id"] == "conv-post-1@nordic"
    received = federation.operator.wait_state("fwd-post-1@nordic", {"received"}, direction="in")
    assert received["from"].endswith("AP-SE-0001") and received["to"].endswith("AP-OPERATOR-1")
    status, body = federation.operator.api("GET", "/api/v1/messages/fwd-post-1@nordic/payloads/letter@nordic")
    assert status == 200 and body == payload


def test_recipient_without_mailbox_is_refused_at_once(federation: Federation) -> None:
    """Not in FaR: EBMS:0004 no-mailbox, before any receipt."""
    send(federation.nordic, "post-2@nordic", NOBODY, SENDER, b"<letter/>")
    failed = refused_with(federation, "post-2@nordic", "no-mailbox")
    assert NOBODY in failed["last_error"]["detail"]


def test_refused_sender_is_refused_at_once(federation: Federation) -> None:
    """A recipient who refuses the sender: EBMS:0004 sender-refused; another sender still reaches them."""
    send(federation.nordic, "post-3@nordic", REFUSER, REFUSED_SENDER, b"<letter/>")
    refused_with(federation, "post-3@nordic", "sender-refused")
    send(federation.nordic, "post-4@nordic", REFUSER, SENDER, b"<letter/>")
    assert federation.nordic.wait_state("post-4@nordic", {"delivered", "failed"})["state"] == "delivered"


def test_foreign_participant_is_forwarded_to_the_access_point_its_smp_names(federation: Federation) -> None:
    """finalRecipient scheme::value outside Sweden: forwarded on the dynamic P-Mode through BDXL + SMP."""
    scheme, _, value = FOREIGN.partition("::")
    send(federation.nordic, "post-6@nordic", {"value": value, "type": scheme}, SENDER, b"<letter>abroad</letter>")
    assert federation.nordic.wait_state("post-6@nordic", {"delivered", "failed"})["state"] == "delivered"
    routed = federation.sweden.wait_state("post-6@nordic", {"delivered_to_backend"}, direction="in")
    assert routed["history"][-1]["detail"] == f"{FOREIGN}: participant discovery"
    forwarded = federation.sweden.wait_state("fwd-post-6@nordic", {"delivered", "failed"})
    assert forwarded["state"] == "delivered" and forwarded["pmode"] == "se-to-network", forwarded
    received = federation.operator.wait_state("fwd-post-6@nordic", {"received"}, direction="in")
    assert received["to"].endswith("AP-OPERATOR-1")  # the CN of the certificate the SMP publishes


def test_the_routers_own_backend_submits_digital_post_routed_through_far(federation: Federation) -> None:
    """ "route": true on the Swedish access point's REST API: to the operator FaR names, or 422 with the reason."""
    letter = {"content_id": "letter@se", "mime_type": "application/xml", "data": base64.b64encode(b"<l/>").decode()}
    properties = {"originalSender": SENDER, "finalRecipient": PERSON}
    body = {"route": True, "message_id": "own-1@se", "properties": properties, "payloads": [letter]}
    status, document = federation.sweden.api("POST", "/api/v1/messages", body)
    assert status == 202 and document["pmode"] == "se-to-operator", document
    assert document["to"].endswith("AP-OPERATOR-1")
    assert federation.sweden.wait_state("own-1@se", {"delivered", "failed"})["state"] == "delivered"
    federation.operator.wait_state("own-1@se", {"received"}, direction="in")
    refused = {**body, "message_id": "own-2@se", "properties": {**properties, "finalRecipient": NOBODY}}
    status, problem = federation.sweden.api("POST", "/api/v1/messages", refused)
    assert status == 422 and problem["detail"].startswith(f"refused: no-mailbox: {NOBODY}"), problem
    assert federation.sweden.api("GET", "/api/v1/messages/own-2@se")[0] == 404


def test_senders_the_register_does_not_bind_to_this_access_point_are_refused(federation: Federation) -> None:
    """Unregistered, suspended, and a registered sender the signing access point may not send for (an originalSender
    forged by a connected access point): EBMS:0004 unknown-sender, sender-suspended, sender-not-connected-here."""
    for number, (sender, reason) in enumerate(
        (
            (UNREGISTERED_SENDER, "unknown-sender"),
            (SUSPENDED_SENDER, "sender-suspended"),
            (ELSEWHERE_SENDER, "sender-not-connected-here"),
        ),
        start=10,
    ):
        send(federation.nordic, f"post-{number}@nordic", PERSON, sender, b"<letter/>")
        failed = refused_with(federation, f"post-{number}@nordic", reason)
        assert sender in failed["last_error"]["detail"]


def test_a_mass_mailing_goes_through_far_in_batches_with_an_answer_per_recipient(federation: Federation) -> None:
    """The router's backend posts a mailing as JSON lines: a broken row is reported by line and the good ones go;
    reachable recipients get one letter each, the others FaR's reason; the mailing completes with counts."""
    letter = base64.b64encode(b'<Letter xmlns="urn:example:letter">Mass</Letter>').decode()
    lines = [
        json.dumps({"id": "m-e2e", "sender": f"0007:{SENDER}", "action": ACTION, "rate": 200,
                    "payloads": [{"content_id": "letter@se", "mime_type": "application/xml", "data": letter}]}),
        json.dumps(PERSON),
        "19781302xxxx",
        json.dumps({"recipient": NOBODY}),
        REFUSER,
    ]  # fmt: skip
    status, answer = _post_lines(federation.sweden, "/api/v1/mailings", lines)
    assert status == 202, answer
    assert (answer["rows"], answer["accepted"], answer["invalid"]) == (4, 3, 1)
    assert answer["errors"][0]["line"] == 3 and "19781302xxxx" in answer["errors"][0]["reason"]
    deadline = time.monotonic() + 90
    while True:
        status, progress = federation.sweden.api("GET", "/api/v1/mailings/m-e2e")
        if progress.get("state") == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert progress["state"] == "completed", progress
    assert progress["recipients"] == {"queued": 2, "refused": 1, "invalid": 1}, progress
    assert progress["letters"] == {"delivered": 2}, progress
    status, refused = federation.sweden.api("GET", "/api/v1/mailings/m-e2e/recipients?state=refused")
    assert [(r["recipient"], r["reason"]) for r in refused["recipients"]] == [(NOBODY, "no-mailbox")]
    status, queued = federation.sweden.api("GET", "/api/v1/mailings/m-e2e/recipients?state=queued")
    for row in queued["recipients"]:
        received = federation.operator.wait_state(row["message_id"], {"received"}, direction="in")
        assert received["conversation_id"] == "mailing-m-e2e"
    assert _post_lines(federation.sweden, "/api/v1/mailings", lines[:1])[0] == 409


def test_a_mailing_may_come_as_multipart_with_the_recipients_as_a_file(federation: Federation) -> None:
    """metadata JSON, the content as a file part, then the recipients one a line (a header line skipped): a bad line
    is named by its line in the recipients part, the others are checked in FaR and sent or refused."""
    boundary = "mailing-boundary-0123456789"
    metadata = {"id": "m-multipart", "sender": f"0007:{SENDER}", "action": ACTION}
    parts = [
        ("metadata", "application/json", json.dumps(metadata).encode()),
        ("letter@se", "application/xml", b'<Letter xmlns="urn:example:letter">Multipart</Letter>'),
        ("recipients", "text/plain", f"recipient\n{PERSON}\n{NOBODY}\nnot-a-number\n".encode()),
    ]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\nContent-Type: {kind}\r\n\r\n'.encode()
            + data
            + b"\r\n"
            for name, kind, data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    status, answer = _post(federation.sweden, "/api/v1/mailings", body, f"multipart/form-data; boundary={boundary}")
    assert status == 202, answer
    assert (answer["rows"], answer["invalid"], answer["errors"][0]["line"]) == (3, 1, 4), answer
    deadline = time.monotonic() + 90
    while (progress := federation.sweden.api("GET", "/api/v1/mailings/m-multipart")[1])["state"] != "completed":
        assert time.monotonic() < deadline, progress
        time.sleep(0.5)
    assert progress["recipients"] == {"queued": 1, "refused": 1, "invalid": 1}, progress


def _post_lines(point: AccessPointProcess, path: str, lines: list[str]) -> tuple[int, Any]:
    """POST JSON lines to an access point's API; (status, JSON answer)."""
    return _post(point, path, ("\n".join(lines) + "\n").encode(), "application/x-ndjson")


def _post(point: AccessPointProcess, path: str, body: bytes, content_type: str) -> tuple[int, Any]:
    """POST a body to an access point's API; (status, JSON answer)."""
    request = urllib.request.Request(f"http://127.0.0.1:{point.port}{path}", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (http on loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_far_down_is_a_clear_ebms_error(federation: Federation) -> None:
    """With FaR stopped the sender gets EBMS:0004 far-unavailable at once, not silence (runs last: stops FaR)."""
    federation.far.terminate()
    federation.far.wait(timeout=10)
    send(federation.nordic, "post-5@nordic", PERSON, SENDER, b"<letter/>")
    failed = refused_with(federation, "post-5@nordic", "far-unavailable")
    assert "try again later" in failed["last_error"]["detail"]
