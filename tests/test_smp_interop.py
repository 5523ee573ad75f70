"""An independent SMP client reads our server: peppol-py (PyPI) resolves endpoint and certificate through DNS.

peppol-py looks participants up under the Peppol test SML zone with the system resolver; the harness script
points dnspython's ``Resolver`` at our dnsmasq (peppol-py's own lookup code runs unchanged). peppol-py does not
verify SMP signatures, so this shows that our Peppol-flavour documents, hrefs and NAPTR records are what a
Peppol client expects; the signature side is covered by the interop vectors and xmlsec.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from accesspoint.testing.dnsserver import DnsServer, dns_server
from accesspoint.testing.smp import metadata, pki, publish, running_server
from smp.identifiers import Identifier, peppol_naptr_name
from smp.model import TransportProfile
from tests.peers import peer_python

PEPPOL_PY = "peppol-py==1.2.5"
SML_TEST_ZONE = "participant.sml.test.tech.peppol.org"
PARTICIPANT = "iso6523-actorid-upis::0007:2120000787"
INVOICE = (
    "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice"
    "##urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0::2.1"
)
AP_URL = "https://ap.example.se/as4"

HARNESS = """
import json, sys
import dns.resolver

host, port, participant, document_type = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
_Resolver = dns.resolver.Resolver

class LoopbackResolver(_Resolver):
    def __init__(self, *args, **kwargs):
        super().__init__(configure=False)
        self.nameservers = [host]
        self.port = port

dns.resolver.Resolver = LoopbackResolver
from peppol_py import smp
profile, url, certificate = smp.get_service_info_for_participant_from_smp(
    participant, document_type, test_environment=True, timeout=10, user_agent="accesspoint-interop-test"
)
print(json.dumps({"transport_profile": profile, "endpoint_url": url, "certificate": certificate.decode()}))
"""


@pytest.fixture(scope="module")
def peppol_py() -> Path:
    """A venv with peppol-py from PyPI, kept in the user's cache directory between runs (``tests.peers``)."""
    return peer_python("peppol-py-1.2.5", PEPPOL_PY)


@pytest.fixture
def sml(tmp_path: Path) -> Iterator[DnsServer]:
    """dnsmasq serving the Peppol test SML zone."""
    yield from dns_server(tmp_path, SML_TEST_ZONE)


@pytest.mark.timeout(900)
async def test_peppol_py_resolves_endpoint_and_certificate(tmp_path: Path, sml: DnsServer, peppol_py: Path) -> None:
    """peppol-py follows our NAPTR, ServiceGroup and Peppol ServiceMetadata to the AS4 endpoint and certificate."""
    participant = Identifier.parse(PARTICIPANT)
    async with running_server(tmp_path) as base:
        await publish(
            base, metadata(AP_URL, participant=PARTICIPANT, document=INVOICE, profiles=(TransportProfile.PEPPOL_AS4,))
        )
        sml.add_naptr(peppol_naptr_name(participant, SML_TEST_ZONE), base + "/")
        sml.start()
        host, port = sml.address
        process = await asyncio.create_subprocess_exec(
            str(peppol_py),
            "-c",
            HARNESS,
            host,
            str(port),
            participant.value,
            Identifier.parse(INVOICE).value,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    found = json.loads(stdout)
    assert found["transport_profile"] == TransportProfile.PEPPOL_AS4
    assert found["endpoint_url"] == AP_URL
    body = "".join(found["certificate"].splitlines()[1:-1])
    expected = pki().ap.certificate.public_bytes(serialization.Encoding.PEM).decode()
    assert body == "".join(expected.splitlines()[1:-1])
