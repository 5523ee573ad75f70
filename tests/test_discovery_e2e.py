"""End to end: an access point sends to a partner it knows only through BDXL (dnsmasq) and our SMP server.

Four real processes besides dnsmasq: ``accesspoint smp serve`` publishing the receiving access point's endpoint
and certificate, the receiving access point, and the sending one, whose P-Mode names the receiver
``endpoint: dynamic`` with no PartyId, certificate or URL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.core.errors import ErrorCode
from accesspoint.core.message import read_message
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.receiving import AcceptedMessage, accept_user_message, signed_signal
from accesspoint.security.inbound import read_memory_part
from accesspoint.security.keys import load_key_pair
from accesspoint.testing.dnsserver import DnsServer
from accesspoint.testing.services import free_port
from accesspoint.testing.smp import LOOPBACK, ZONE, pem, pki, publish, write_config
from pmode import load_pmodes
from smp.identifiers import NO_PROCESS, Identifier, peppol_naptr_name
from smp.model import EndpointInfo, ProcessInfo, ServiceMetadata, TransportProfile
from tests.test_msh import CERTS, TOKEN, UNREGISTERED, AccessPointProcess
from tests.test_msh_support import error_codes
from tests.test_smp_cli import _serve, _wait_for_port

PARTICIPANT = "iso6523-actorid-upis::0088:5798000000001"
UNPUBLISHED = "iso6523-actorid-upis::0088:5798000000002"  # in DNS, but the SMP knows no such participant
NOWHERE = "iso6523-actorid-upis::0088:5798000000003"  # not even in DNS
ASYNCHRONOUS = "iso6523-actorid-upis::0088:5798000000004"  # an access point that sends its receipts later
METADATA_SERVICE = "iso6523-actorid-upis::0088:5798000000005"  # its SMP names a cloud metadata address
DOCUMENT = "busdox-docid-qns::urn:example:letters::Letter##1.0"
SOAP12 = f"{SoapVersion.V12.content_type}; charset=UTF-8"
SERVICE = {"value": "urn:example:service:letters", "type": "urn:example:service-type"}


def _party(value: str, **extra: Any) -> dict[str, Any]:
    return {"party_ids": [{"value": value, "type": UNREGISTERED}], **extra}


def sender_pmodes() -> dict[str, Any]:
    """Sweden's side: the receiver is `endpoint: dynamic`, nothing else is known about it."""
    # Long enough for the test's asynchronous receipts to come in on a loaded machine (parallel workers): a window
    # of 1-2 s failed the message before they did. Refused participants are failed at once, whatever it is.
    awareness = {"retries": 3, "backoff_base": "1s", "backoff_max": "5s", "jitter": 0.0}
    return {
        "version": 1,
        "self": "ap-sweden",
        "parties": {
            "ap-sweden": _party("AP-SE-0001", endpoint="http://127.0.0.1:1/as4"),
            "network": {"endpoint": "dynamic"},
        },
        "pmodes": [
            {
                "id": "se-dynamic",
                "network": "edelivery-1.15",
                "initiator": {"party": "ap-sweden"},
                "responder": {"party": "network"},
                "legs": [
                    {
                        "service": SERVICE,
                        "action": DOCUMENT,
                        "security": {"trust": {"anchors": [str(CERTS / "ca.pem")], "revocation": "off"}},
                        "reception_awareness": awareness,
                    }
                ],
            }
        ],
    }


def receiver_pmodes() -> dict[str, Any]:
    """Belgium's side: a static agreement with Sweden's access point."""
    return {
        "version": 1,
        "self": "partner-115",
        "parties": {
            "ap-sweden": _party(
                "AP-SE-0001", signing_certificate=str(CERTS / "ap-sweden-sign.pem"), endpoint="http://127.0.0.1:1/as4"
            ),
            "partner-115": _party("AP-BE-0115", endpoint="http://127.0.0.1:1/as4"),
        },
        "pmodes": [
            {
                "id": "se-to-be",
                "network": "edelivery-1.15",
                "initiator": {"party": "ap-sweden"},
                "responder": {"party": "partner-115"},
                "legs": [
                    {
                        "service": SERVICE,
                        "action": DOCUMENT,
                        "security": {
                            "trust": {"anchors": [str(CERTS / "ca.pem")], "pin_partner": True, "revocation": "off"}
                        },
                    }
                ],
            }
        ],
    }


def configure(ap: AccessPointProcess, pmodes: dict[str, Any], **settings: Any) -> None:
    """Replace the P-Modes of an access point process and add server settings (before ``start``)."""
    (ap.folder / "pmodes.yaml").write_text(json.dumps(pmodes))
    document = json.loads((ap.folder / "server.yaml").read_text())
    document.update(settings)
    (ap.folder / "server.yaml").write_text(json.dumps(document))


def published(participant: str, url: str, certificate: x509.Certificate) -> ServiceMetadata:
    """What the SMP says about ``participant``: one 1.15 endpoint at ``url`` with ``certificate``."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    endpoint = EndpointInfo(TransportProfile.EDELIVERY_AS4_1_15, url, der, description="Belgian AP")
    return ServiceMetadata(
        Identifier.parse(participant),
        Identifier.parse(DOCUMENT),
        (ProcessInfo(Identifier("cenbii-procid-ubl", NO_PROCESS), (endpoint,)),),
    )


@dataclass
class Federation:
    """The running processes: the sender and receiver access points, the SMP and dnsmasq."""

    sweden: AccessPointProcess
    belgium: AccessPointProcess
    asynchronous_port: int  # where the SMP says ASYNCHRONOUS's access point listens (the test runs it)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """dnsmasq + SMP server process + two access point processes; Sweden knows Belgium only through them."""
    folder = tmp_path_factory.mktemp("discovery-e2e")
    smp_port, port_se, port_be, port_async = free_port(), free_port(), free_port(), free_port()
    smp = _serve(write_config(folder, smp_port))
    dns = DnsServer(folder, (ZONE,))
    sweden = AccessPointProcess(folder / "se", "ap-sweden", "ap-sweden-sign", port_se, port_be)
    belgium = AccessPointProcess(folder / "be", "partner-115", "partner-115", port_be, port_se)
    try:
        _wait_for_port(smp_port, smp)
        base = f"http://127.0.0.1:{smp_port}"
        receiver_certificate = x509.load_pem_x509_certificate((CERTS / "partner-115.pem").read_bytes())
        asyncio.run(publish(base, published(PARTICIPANT, f"http://127.0.0.1:{port_be}/as4", receiver_certificate)))
        later = published(ASYNCHRONOUS, f"http://127.0.0.1:{port_async}/as4", receiver_certificate)
        asyncio.run(publish(base, later))
        internal = published(METADATA_SERVICE, "http://169.254.169.254/latest/meta-data", receiver_certificate)
        asyncio.run(publish(base, internal))
        for participant in (PARTICIPANT, UNPUBLISHED, ASYNCHRONOUS, METADATA_SERVICE):
            dns.add_naptr(peppol_naptr_name(Identifier.parse(participant), ZONE), base + "/")
        dns.start()
        (folder / "smp-trust.pem").write_bytes(pem(pki().ca))
        host, port = dns.address
        discovery = {"zone": ZONE, "dns": f"{host}:{port}", "smp_trust": str(folder / "smp-trust.pem"), **LOOPBACK}
        configure(sweden, sender_pmodes(), discovery=discovery)
        configure(belgium, receiver_pmodes())
        belgium.start()
        sweden.start()
        yield Federation(sweden, belgium, port_async)
    finally:
        sweden.stop()
        belgium.stop()
        dns.stop()
        if smp.poll() is None:
            smp.terminate()
            smp.wait(timeout=10)
        for stream in (smp.stdout, smp.stderr):
            if stream is not None:
                stream.close()


def submit(ap: AccessPointProcess, message_id: str, participant: str, payload: bytes) -> None:
    """Submit a letter for ``participant`` (scheme::value) on the dynamic P-Mode."""
    scheme, _, value = participant.partition("::")
    status, document = ap.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": "se-dynamic",
            "message_id": message_id,
            "properties": {
                "originalSender": {"value": "0007:2021005448", "type": "iso6523-actorid-upis"},
                "finalRecipient": {"value": value, "type": scheme},
            },
            "payloads": [{"content_id": "letter@se", "mime_type": "application/xml", "data": _b64(payload)}],
        },
    )
    assert status == 202, document


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_sender_delivers_to_a_partner_found_only_through_bdxl_and_smp(federation: Federation) -> None:
    """The SMP's endpoint and certificate carry the message; the receipt verifies against that certificate."""
    payload = b"<letter>" + os.urandom(500).hex().encode() + b"</letter>"
    submit(federation.sweden, "dyn-1@se", PARTICIPANT, payload)
    sent = federation.sweden.wait_state("dyn-1@se", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
    received = federation.belgium.wait_state("dyn-1@se", {"received"}, direction="in")
    assert received["to"].endswith("AP-BE-0115")  # eb:To is the access point the SMP certificate names
    status, body = federation.belgium.api("GET", "/api/v1/messages/dyn-1@se/payloads/letter@se?direction=in")
    assert status == 200 and body == payload


@pytest.mark.parametrize("participant", [UNPUBLISHED, NOWHERE])
def test_unregistered_participant_fails_with_the_reason(federation: Federation, participant: str) -> None:
    """Unknown to the SMP (or to DNS): the message fails at once with EBMS:0001 saying it is not registered."""
    message_id = f"unregistered-{participant[-1]}@se"
    submit(federation.sweden, message_id, participant, b"<letter/>")
    failed = federation.sweden.wait_state(message_id, {"delivered", "failed"})
    assert failed["state"] == "failed", failed
    assert failed["last_error"]["code"] == "EBMS:0001"
    assert "not registered in SMP" in failed["last_error"]["detail"]
    assert participant in failed["last_error"]["detail"]
    assert failed["attempts"] == 1  # not retried: the answer will not change by waiting


def test_an_endpoint_at_a_link_local_address_is_never_posted_to(federation: Federation) -> None:
    """A trusted SMP naming 169.254.169.254 as the endpoint: the message fails at once with EBMS:0004 and why."""
    submit(federation.sweden, "internal@se", METADATA_SERVICE, b"<letter/>")
    failed = federation.sweden.wait_state("internal@se", {"delivered", "failed"})
    assert failed["state"] == "failed", failed
    assert failed["last_error"]["code"] == "EBMS:0004"
    assert "169.254.169.254 is a link-local address" in failed["last_error"]["detail"]
    assert failed["attempts"] == 1


def test_the_server_settings_name_a_bad_discovery_section(tmp_path: Path) -> None:
    """A discovery section without its SMP truststore is refused on load, naming the field."""
    from accesspoint.msh.config import ConfigError, load_config

    ap = AccessPointProcess(tmp_path / "ap", "ap-sweden", "ap-sweden-sign", free_port(), free_port())
    configure(ap, sender_pmodes(), discovery={"zone": ZONE})
    with pytest.raises(ConfigError, match=r"field discovery\.smp_trust: required"):
        load_config(ap.folder / "server.yaml")
    assert TOKEN


async def test_an_asynchronous_receipt_must_be_signed_with_the_discovered_certificate(federation: Federation) -> None:
    """A receipt POSTed later counts only when signed with the SMP's certificate: another trusted AP's is refused."""
    pmodes = load_pmodes(federation.belgium.folder / "pmodes.yaml")
    partner = load_key_pair(CERTS / "partner-115.key.pem", None, certificate=CERTS / "partner-115.pem")
    impostor = load_key_pair(CERTS / "ap-sweden-sign.key.pem", None, certificate=CERTS / "ap-sweden-sign.pem")
    answers: list[tuple[int, str, bytes]] = []
    tasks: list[asyncio.Task[None]] = []
    sender_as4 = f"http://127.0.0.1:{federation.sweden.port}/as4"

    async def post(signal: bytes) -> None:
        async with aiohttp.ClientSession() as session:
            response = await session.post(sender_as4, data=signal, headers={"Content-Type": SOAP12})
            answers.append((response.status, response.headers.get("Content-Type", ""), await response.read()))

    async def send_receipts(accepted: AcceptedMessage) -> None:
        await asyncio.sleep(0.05)
        for keys in (impostor, partner):
            await post(signed_signal(accepted.receipt, keys, accepted.route.security, SoapVersion.V12))

    async def receiving_access_point(request: web.Request) -> web.Response:
        received = read_message(request.headers["Content-Type"], await request.read())
        accepted = accept_user_message(
            received, pmodes, keys=[partner], at=datetime.now(UTC), revocation=None, read_part=read_memory_part
        )
        if not tasks:  # a resend (the sender's retry may come before the receipts) gets no second pair
            tasks.append(asyncio.create_task(send_receipts(accepted)))
        return web.Response(status=200)  # no synchronous receipt

    app = web.Application()
    app.router.add_post("/as4", receiving_access_point)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", federation.asynchronous_port).start()
    try:
        await asyncio.to_thread(submit, federation.sweden, "dyn-async@se", ASYNCHRONOUS, b"<letter/>")
        sent = await asyncio.to_thread(federation.sweden.wait_state, "dyn-async@se", {"delivered", "failed"})
        assert sent["state"] == "delivered", sent
        assert any(h["detail"] == "asynchronous receipt" for h in sent["history"])
    finally:
        await asyncio.gather(*tasks)
        await runner.cleanup()
    (forged_status, forged_type, forged), (status, _, answer) = answers
    assert forged_status == 200 and error_codes(forged_type, forged) == [ErrorCode.INVALID_RECEIPT.code]
    assert (status, answer) == (200, b"")
