"""End to end across real processes: an SDK message (a signed XHE, an SDK document type) to a Swedish organisation
(``0007`` / ``0203``) goes through the Swedish access point (the router) to the access point SDK's SMP names.

A municipality's access point submits the XHE on an SDK P-Mode (network ``sdk``) to the router. The router's
decision is the ``sdk`` route: it forwards the message on its dynamic SDK P-Mode (transport profile
``digg-transport-as4-v1_0``), finding the organisation's access point through BDXL (dnsmasq) and the project's
SMP server (``accesspoint smp serve``). The organisation's access point receives it with the payload's SHA-256
intact, its receipt comes back to the router (signed with the certificate the SMP publishes), and the router's
receipt to the municipality's access point.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.envelopes.xhe import check_xhe
from accesspoint.security.keys import load_key_pair
from accesspoint.testing.dnsserver import DnsServer
from accesspoint.testing.pki import issue
from accesspoint.testing.services import free_port
from accesspoint.testing.smp import LOOPBACK, ZONE, pem, pki, publish, write_config, write_keys
from pmode.profiles import sdk
from smp.identifiers import NO_PROCESS, Identifier, peppol_naptr_name
from smp.model import EndpointInfo, ProcessInfo, ServiceMetadata, TransportProfile
from tests.test_discovery_e2e import _b64, configure
from tests.test_msh import CERTS, AccessPointProcess
from tests.test_operators_support import SDK_DOCUMENT, SDK_ORG, xhe
from tests.test_routing_e2e import _document, _stop
from tests.test_smp_cli import _serve, _wait_for_port

ACTION = sdk.ACTION_PREFIX + SDK_DOCUMENT  # the SDK document type, also what the SMP is asked about
ORGANISATION = f"iso6523-actorid-upis::{SDK_ORG}"  # the receiving organisation (0007 + organisationsnummer)
MUNICIPALITY = "0203:kommun.example.se"  # the sender, in SDK's own register
ORG_AP = "AP-SDK-ORG-0001"  # the CN (and so the eb:To PartyId) of the organisation's access point


def _party(value: str | None, **extra: Any) -> dict[str, Any]:
    ids = [] if value is None else [{"value": value, "type": sdk.PARTY_ID_TYPE}]
    return {"party_ids": ids, "endpoint": "http://127.0.0.1:1/as4", **extra}


def _pmode(pmode_id: str, initiator: str, responder: str) -> dict[str, Any]:
    """An SDK P-Mode: the profile supplies the rest (signed + encrypted, gzip, CN bound to PartyId, XHE)."""
    security = {"trust": {"anchors": [str(CERTS / "ca.pem")], "pin_partner": False}}
    awareness = {"retries": 1, "backoff_base": "200ms", "backoff_max": "1s", "jitter": 0.0}
    leg = {
        "service": {"value": sdk.SERVICE, "type": sdk.SERVICE_TYPE},
        "action": ACTION,
        "security": security,
        "reception_awareness": awareness,
    }
    return {
        "id": pmode_id,
        "network": sdk.NAME,
        "initiator": {"party": initiator},
        "responder": {"party": responder},
        "legs": [leg],
    }


@dataclass
class Federation:
    """The running access points (the SMP and dnsmasq run beside them)."""

    municipality: AccessPointProcess
    sweden: AccessPointProcess
    organisation: AccessPointProcess


@contextlib.contextmanager
def _sdk_smp(folder: Path, url: str, certificate_file: Path) -> Iterator[dict[str, str]]:
    """dnsmasq and ``smp serve`` publishing ORGANISATION for ACTION on SDK's transport profile at ``url``."""
    smp_port = free_port()
    smp = _serve(write_config(folder, smp_port))
    dns = DnsServer(folder, (ZONE,))
    try:
        _wait_for_port(smp_port, smp)
        base = f"http://127.0.0.1:{smp_port}"
        der = x509.load_pem_x509_certificate(certificate_file.read_bytes()).public_bytes(Encoding.DER)
        endpoint = EndpointInfo(TransportProfile.SDK_AS4, url, der, description="the organisation's AP")
        process = ProcessInfo(Identifier("cenbii-procid-ubl", NO_PROCESS), (endpoint,))
        metadata = ServiceMetadata(Identifier.parse(ORGANISATION), Identifier.parse(ACTION), (process,))
        asyncio.run(publish(base, metadata))
        dns.add_naptr(peppol_naptr_name(Identifier.parse(ORGANISATION), ZONE), base + "/")
        dns.start()
        (folder / "smp-trust.pem").write_bytes(pem(pki().ca))
        host, port = dns.address
        # SDK's own discovery settings (per P-Mode network), as a router in several networks would have them.
        sdk_network = {"zone": ZONE, "dns": f"{host}:{port}", "smp_trust": str(folder / "smp-trust.pem"), **LOOPBACK}
        yield {**sdk_network, "networks": {sdk.NAME: sdk_network}}
    finally:
        dns.stop()
        _stop(smp)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """The municipality's AP -> the Swedish AP (router) -> the organisation's AP found through BDXL + SMP."""
    folder = tmp_path_factory.mktemp("routing-sdk-e2e")
    municipality_port, se_port, org_port = (free_port() for _ in range(3))
    ca = load_key_pair(CERTS / "ca.key.pem", None, certificate=CERTS / "ca.pem")
    org_key, org_certificate = write_keys(folder, issue(ca, ORG_AP), "organisation")
    sign = {"ap-sweden": str(CERTS / "ap-sweden-sign.pem"), "municipality": str(CERTS / "partner-115.pem")}
    se_endpoint = f"http://127.0.0.1:{se_port}/as4"

    # The municipality's access point (certificate CN AP-BE-0115) has an SDK agreement with the Swedish one.
    municipality = AccessPointProcess(folder / "kommun", "municipality", "partner-115", municipality_port, se_port)
    parties = {
        "municipality": _party("AP-BE-0115"),
        "ap-sweden": _party("AP-SE-0001", signing_certificate=sign["ap-sweden"], endpoint=se_endpoint),
    }
    configure(municipality, _document("municipality", parties, _pmode("sdk-to-se", "municipality", "ap-sweden")))

    sweden = AccessPointProcess(folder / "se", "ap-sweden", "ap-sweden-sign", se_port, municipality_port)
    organisation = AccessPointProcess(folder / "org", "organisation", "partner-115", org_port, se_port)
    with contextlib.ExitStack() as stack:
        discovery = stack.enter_context(_sdk_smp(folder, f"http://127.0.0.1:{org_port}/as4", org_certificate))
        parties = {
            "ap-sweden": _party("AP-SE-0001"),
            "municipality": _party("AP-BE-0115", signing_certificate=sign["municipality"]),
            "sdk-federation": {"endpoint": "dynamic"},  # endpoint, certificate and PartyId from SDK's SMP
        }
        # FaR is never asked on the SDK route: an in-process FaR on an empty register stands by.
        routing = {"far": {"database": "sqlite+aiosqlite:///far.db"}, "pmodes": ["sdk-to-se"], "timeout": "3s"}
        configure(
            sweden,
            _document(
                "ap-sweden",
                parties,
                _pmode("sdk-to-se", "municipality", "ap-sweden"),
                _pmode("se-to-sdk", "ap-sweden", "sdk-federation"),
            ),
            routing=routing,
            discovery=discovery,
        )
        parties = {
            "organisation": _party(ORG_AP),
            "ap-sweden": _party("AP-SE-0001", signing_certificate=sign["ap-sweden"]),
        }
        configure(
            organisation,
            _document("organisation", parties, _pmode("se-to-sdk", "ap-sweden", "organisation")),
            keys={"signing": {"key": str(org_key), "certificate": str(org_certificate)}},
        )
        for ap in (organisation, sweden, municipality):
            stack.callback(ap.stop)
            ap.start()
        yield Federation(municipality, sweden, organisation)


def test_sdk_message_to_an_organisation_goes_to_the_access_point_sdks_smp_names(federation: Federation) -> None:
    """Forwarded on the dynamic SDK P-Mode; received intact by the organisation's AP; both receipts come back."""
    envelope = xhe(SDK_ORG)
    check_xhe(envelope)  # a valid, signed XHE from the municipality to the organisation
    scheme, _, value = ORGANISATION.partition("::")
    status, document = federation.municipality.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": "sdk-to-se",
            "message_id": "sdk-1@kommun",
            "conversation_id": "conv-sdk-1@kommun",
            "properties": {
                "originalSender": {"value": MUNICIPALITY, "type": scheme},
                "finalRecipient": {"value": value, "type": scheme},
            },
            "payloads": [
                {
                    "content_id": "xhe@kommun",
                    "mime_type": "application/xml",
                    "data": _b64(envelope),
                }
            ],
        },
    )
    assert status == 202, document

    sent = federation.municipality.wait_state("sdk-1@kommun", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent  # the router's receipt
    routed = federation.sweden.wait_state("sdk-1@kommun", {"delivered_to_backend"}, direction="in")
    assert routed["history"][-1]["detail"] == f"{ORGANISATION}: sdk discovery", routed

    forwarded = federation.sweden.wait_state("fwd-sdk-1@kommun", {"delivered", "failed"})
    assert forwarded["state"] == "delivered", forwarded
    assert forwarded["pmode"] == "se-to-sdk" and forwarded["conversation_id"] == "conv-sdk-1@kommun"
    assert forwarded["to"] == ORGANISATION  # the stand-in stored at submission; eb:To on the wire is below
    assert "partner-receipt" in {e["kind"] for e in forwarded["evidence"]}  # the organisation AP's signed receipt

    received = federation.organisation.wait_state("fwd-sdk-1@kommun", {"received"}, direction="in")
    assert received["from"].endswith("AP-SE-0001")
    assert received["to"].endswith(ORG_AP)  # the CN of the certificate SDK's SMP publishes
    path = "/api/v1/messages/fwd-sdk-1@kommun/payloads/xhe@kommun?direction=in"
    status, body = federation.organisation.api("GET", path)
    assert status == 200
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(envelope).hexdigest()


def test_sdk_organisation_unknown_to_the_smp_fails_the_forward_with_the_reason(federation: Federation) -> None:
    """A 0203 organisation takes the SDK route too; unknown to SDK's BDXL + SMP, the forward fails with EBMS:0001."""
    unknown = "0203:okand.example.se"
    status, document = federation.municipality.api(
        "POST",
        "/api/v1/messages",
        {
            "pmode": "sdk-to-se",
            "message_id": "sdk-2@kommun",
            "properties": {
                "originalSender": {"value": MUNICIPALITY, "type": "iso6523-actorid-upis"},
                "finalRecipient": {"value": unknown, "type": "iso6523-actorid-upis"},
            },
            "payloads": [{"content_id": "xhe@kommun", "mime_type": "application/xml", "data": _b64(xhe(unknown))}],
        },
    )
    assert status == 202, document
    assert federation.municipality.wait_state("sdk-2@kommun", {"delivered", "failed"})["state"] == "delivered"
    routed = federation.sweden.wait_state("sdk-2@kommun", {"delivered_to_backend"}, direction="in")
    assert routed["history"][-1]["detail"] == f"iso6523-actorid-upis::{unknown}: sdk discovery", routed
    failed = federation.sweden.wait_state("fwd-sdk-2@kommun", {"delivered", "failed"})
    assert failed["state"] == "failed" and failed["last_error"]["code"] == "EBMS:0001", failed
    detail = failed["last_error"]["detail"]
    assert f"{unknown} is not registered in SMP for {ACTION} ({sdk.TRANSPORT_PROFILE})" in detail, detail
