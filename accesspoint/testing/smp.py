"""The SMP tests' and ``bench smp``'s fixtures: a throw-away PKI, sample metadata, a server on real ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.security.keys import KeyPair
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.testing.pki import issue, make_ca
from accesspoint.testing.services import free_port
from smp.documents import render_service_metadata
from smp.identifiers import Identifier
from smp.model import EndpointInfo, Flavour, ProcessInfo, ServiceMetadata, TransportProfile
from smp.server import Listener, SmpSettings, serve

TOKEN = "test-token-0123456789abcdef"
PARTICIPANT = "iso6523-actorid-upis::0007:2120000787"
DOCUMENT = "busdox-docid-qns::urn:riv:infrastructure:messaging:MessageWithAttachments:3::messagePayload##3.0::tm-base"
PROCESS = "cenbii-procid-ubl::urn:fdc:digg.se:edelivery:process"
ZONE = "participant.sml.test.example"
# Server settings' discovery keys for a federation on loopback: its SMPs and access points are at 127.0.0.1 over
# http, which the endpoint policy refuses unless told (production: https and public addresses only).
LOOPBACK = {"allow_http": True, "allow_networks": ["127.0.0.0/8"]}


@dataclass(frozen=True)
class Pki:
    """The SMP truststore's CA, the SMP's signing key, an access point's key, and an untrusted signer."""

    ca: KeyPair
    smp: KeyPair
    ap: KeyPair
    rogue: KeyPair
    other_smp: KeyPair


@cache
def pki() -> Pki:
    """One PKI per test session (RSA key generation is the slow part)."""
    ca = make_ca("SMP Test CA")
    rogue_ca = make_ca("Rogue CA")
    return Pki(
        ca,
        issue(ca, "SMP Test Signer"),
        issue(ca, "AP0040-SDK-TEST"),
        issue(rogue_ca, "Rogue Signer"),
        issue(ca, "Other SMP Signer"),
    )


def pem(keys: KeyPair) -> bytes:
    """The certificate of ``keys``, PEM."""
    return keys.certificate.public_bytes(serialization.Encoding.PEM)


def write_keys(folder: Path, keys: KeyPair, name: str) -> tuple[Path, Path]:
    """Key and certificate files for a config."""
    key = folder / f"{name}.key.pem"
    key.write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate = folder / f"{name}.cert.pem"
    certificate.write_bytes(pem(keys))
    return key, certificate


def metadata(
    url: str,
    *,
    participant: str = PARTICIPANT,
    document: str = DOCUMENT,
    profiles: tuple[str, ...] = (TransportProfile.SDK_AS4,),
    process: str | None = PROCESS,
) -> ServiceMetadata:
    """Metadata with one process and one endpoint per transport profile, all with the AP certificate."""
    der = pki().ap.certificate.public_bytes(serialization.Encoding.DER)
    endpoints = tuple(
        EndpointInfo(p, url, der, description="test AP", technical_contact="ops@example") for p in profiles
    )
    proc = None if process is None else Identifier.parse(process)
    return ServiceMetadata(Identifier.parse(participant), Identifier.parse(document), (ProcessInfo(proc, endpoints),))


def settings(folder: Path, port: int, signer: KeyPair | None = None) -> SmpSettings:
    """Peppol at /, OASIS 1.0 at /oasis and OASIS 2.0 at / (under bdxr-smp-2), all on ``port``."""
    return SmpSettings(
        database=f"sqlite+aiosqlite:///{folder / 'smp.sqlite3'}",
        signing=signer or pki().smp,
        tokens=(BearerToken("test", TOKEN, scopes("write")),),
        listeners=(
            Listener(Flavour.PEPPOL, "127.0.0.1", port, "/"),
            Listener(Flavour.OASIS1, "127.0.0.1", port, "/oasis"),
            Listener(Flavour.OASIS2, "127.0.0.1", port, "/"),
        ),
    )


def write_config(folder: Path, port: int) -> Path:
    """The TOML config ``accesspoint smp serve`` reads, equivalent to ``settings``."""
    key, certificate = write_keys(folder, pki().smp, "smp-signer")
    config = folder / "smp.toml"
    config.write_text(
        f"""[smp]
database = "sqlite+aiosqlite:///smp.sqlite3"
signing_key = "{key.name}"
signing_certificate = "{certificate.name}"
tokens = ["{TOKEN}"]
max_age = 60

[[smp.listen]]
flavour = "peppol"
port = {port}
base_path = "/"

[[smp.listen]]
flavour = "oasis1"
port = {port}
base_path = "/oasis"

[[smp.listen]]
flavour = "oasis2"
port = {port}
base_path = "/"
""",
        encoding="utf-8",
    )
    return config


@asynccontextmanager
async def running_server(folder: Path, signer: KeyPair | None = None) -> AsyncIterator[str]:
    """The project's SMP server on a free loopback port; yields its base URL."""
    port = free_port()
    running, store = await serve(settings(folder, port, signer))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await running.stop()
        await store.close()


AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def publish(base: str, model: ServiceMetadata, flavour: Flavour = Flavour.OASIS1) -> None:
    """Create the service group and put ``model`` through the management API (a body of ``flavour``)."""
    participant = model.participant.url_segment()
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{base}/{participant}", headers=AUTH) as response:
            assert response.status in (200, 201)
        body = etree.tostring(render_service_metadata(model, flavour))
        url = f"{base}/{participant}/services/{model.document.url_segment()}"
        async with session.put(url, headers=AUTH, data=body) as response:
            assert response.status in (200, 201), await response.text()
