"""The SMP server over real HTTP: management API with bearer tokens, three flavours from one store, signatures."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree

from accesspoint.core.xml import parse_xml
from accesspoint.testing.smp import AUTH, DOCUMENT, PARTICIPANT, metadata, pki, running_server
from smp.documents import parse_service_group, parse_service_metadata, render_service_metadata
from smp.identifiers import Identifier
from smp.model import CertPubUsage, Flavour, PublishedCertificate, Redirect, ServiceMetadata, TransportProfile
from smp.signature import SmpAlgorithm, verify_document
from smp.store import metadata_from_json, metadata_to_json
from tests.conftest import interop_path

P = Identifier.parse(PARTICIPANT)
D = Identifier.parse(DOCUMENT)
DS = "{http://www.w3.org/2000/09/xmldsig#}"


def _body(model: ServiceMetadata, flavour: Flavour = Flavour.OASIS1) -> bytes:
    return etree.tostring(render_service_metadata(model, flavour))


def _paths(base: str) -> dict[Flavour, str]:
    return {Flavour.PEPPOL: base, Flavour.OASIS1: f"{base}/oasis", Flavour.OASIS2: f"{base}/bdxr-smp-2"}


@cache
def _schemas() -> dict[Flavour, etree.XMLSchema]:
    """Each flavour's XSD, with the namespace-only imports mapped as ../shared/interop/smp/README.md says."""
    xsd = interop_path("smp/xsd")
    deps = [
        ("http://www.w3.org/2000/09/xmldsig#", xsd / "deps/xmldsig-core-schema.xsd"),
        ("http://www.w3.org/2005/08/addressing", xsd / "deps/ws-addr.xsd"),
        ("http://busdox.org/transport/identifiers/1.0/", xsd / "peppol/peppol-identifiers-v1.xsd"),
        (
            "urn:un:unece:uncefact:data:specification:CoreComponentTypeSchemaModule:2",
            xsd / "deps/CCTS_CCT_SchemaModule.xsd",
        ),
        ("http://uri.etsi.org/01903/v1.3.2#", xsd / "deps/XAdES01903v132-201601.xsd"),
        ("http://uri.etsi.org/01903/v1.4.1#", xsd / "deps/XAdES01903v141-201601.xsd"),
    ]
    smp2 = "http://docs.oasis-open.org/bdxr/ns/SMP/2"
    mains = {
        Flavour.PEPPOL: [(Flavour.PEPPOL.value, xsd / "peppol/peppol-smp-types-v1-ext.xsd")],
        Flavour.OASIS1: [(Flavour.OASIS1.value, xsd / "bdxr-smp1/bdx-smp-201605.xsd")],
        Flavour.OASIS2: [
            (f"{smp2}/ServiceMetadata", xsd / "bdxr-smp2/ServiceMetadata-2.0.xsd"),
            (f"{smp2}/ServiceGroup", xsd / "bdxr-smp2/ServiceGroup-2.0.xsd"),
        ],
    }
    schemas = {}
    for name, main in mains.items():
        imports = "".join(
            f'<xs:import namespace="{ns}" schemaLocation="{path.as_uri()}"/>' for ns, path in [*deps, *main]
        )
        wrapper = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
        schemas[name] = etree.XMLSchema(etree.fromstring(wrapper.encode(), base_url=str(xsd) + "/"))
    return schemas


async def _populate(session: aiohttp.ClientSession, base: str, model: ServiceMetadata) -> None:
    async with session.put(f"{base}/{P.url_segment()}", headers=AUTH) as response:
        assert response.status in (200, 201)
    async with session.put(
        f"{base}/{P.url_segment()}/services/{D.url_segment()}", headers=AUTH, data=_body(model)
    ) as r:
        assert r.status in (200, 201), await r.text()


async def test_management_api_requires_a_bearer_token(tmp_path: Path) -> None:
    """PUT and DELETE without a token, with a bare or a wrong one, are 401 problems and change nothing; GET needs
    none; the scheme may be written in any case."""
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        url = f"{base}/{P.url_segment()}"
        invalid = 'Bearer realm="smp", error="invalid_token", error_description="unknown token"'
        for headers, challenge in (
            ({}, 'Bearer realm="smp"'),
            ({"Authorization": "Bearer wrong-token-0000000000"}, invalid),
            ({"Authorization": AUTH["Authorization"].replace("Bearer", "Basic")}, 'Bearer realm="smp"'),
            ({"Authorization": AUTH["Authorization"].removeprefix("Bearer ")}, 'Bearer realm="smp"'),
        ):
            async with session.put(url, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"] == challenge
                assert (await response.json(content_type="application/problem+json"))["status"] == 401
        async with session.get(url) as response:
            assert response.status == 404
            assert response.content_type == "application/problem+json"
        async with session.put(url, headers=AUTH) as response:
            assert response.status == 201
        lowercase = {"Authorization": AUTH["Authorization"].replace("Bearer", "bearer")}
        async with session.put(url, headers=lowercase) as response:
            assert response.status == 200
        async with session.delete(url) as response:
            assert response.status == 401
        async with session.delete(url, headers=AUTH) as response:
            assert response.status == 200
        async with session.get(url) as response:
            assert response.status == 404


async def test_one_store_serves_three_flavours_each_signed_as_it_expects(tmp_path: Path) -> None:
    """Peppol, OASIS 1.0 and 2.0 answers carry the same endpoint, validate against their XSD and verify."""
    model = metadata("https://ap.example/as4")
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        await _populate(session, base, model)
        for flavour, prefix in _paths(base).items():
            async with session.get(f"{prefix}/{P.url_segment()}/services/{D.url_segment()}") as response:
                assert response.status == 200
                assert response.content_type == "text/xml"
                root = parse_xml(await response.read(), what="answer")
            verified = verify_document(root)
            assert verified.signer == pki().smp.certificate
            c14n = SmpAlgorithm.C14N11 if flavour is Flavour.OASIS2 else SmpAlgorithm.C14N
            assert verified.algorithms == {c14n, SmpAlgorithm.RSA_SHA256, SmpAlgorithm.SHA256, SmpAlgorithm.ENVELOPED}
            assert root.find(f"{DS}Signature/{DS}KeyInfo/{DS}X509Data/{DS}X509SubjectName") is not None
            assert parse_service_metadata(root) == model
            schema = _schemas()[flavour]
            assert schema.validate(root), schema.error_log


async def test_service_group_references_resolve(tmp_path: Path) -> None:
    """ServiceGroups validate; SMP 1.0 lists absolute hrefs that answer, SMP 2.0 the document id, signed."""
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        await _populate(session, base, metadata("https://ap.example/as4"))
        for flavour, prefix in _paths(base).items():
            async with session.get(f"{prefix}/{P.url_segment()}") as response:
                root = parse_xml(await response.read(), what="group")
            assert _schemas()[flavour].validate(root), _schemas()[flavour].error_log
            participant, refs = parse_service_group(root)
            assert participant.key() == P.key()
            if flavour is Flavour.OASIS2:
                assert refs == (DOCUMENT,)
                verify_document(root)
                continue
            assert len(refs) == 1
            async with session.get(refs[0]) as response:
                assert response.status == 200


async def test_http_caching_headers_and_revalidation(tmp_path: Path) -> None:
    """Answers carry Cache-Control max-age and an ETag; If-None-Match gives 304 until the metadata changes."""
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        await _populate(session, base, metadata("https://ap.example/as4"))
        url = f"{base}/{P.url_segment()}/services/{D.url_segment()}"
        async with session.get(url) as response:
            assert response.headers["Cache-Control"] == "public, max-age=60"
            etag = response.headers["ETag"]
        async with session.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        await _populate(session, base, metadata("https://ap2.example/as4"))
        async with session.get(url, headers={"If-None-Match": etag}) as response:
            assert response.status == 200
            assert b"ap2.example" in await response.read()


async def test_redirect_and_certpub_round_trip(tmp_path: Path) -> None:
    """A stored Redirect is served as one in every flavour; CertPub certificates survive OASIS 1.0 and 2.0."""
    der = pki().ap.certificate.public_bytes(serialization.Encoding.DER)
    certpub = (PublishedCertificate(CertPubUsage.ENCRYPTION, der), PublishedCertificate(CertPubUsage.SIGNING, der))
    base_model = metadata("https://ap.example/as4")
    with_certpub = ServiceMetadata(base_model.participant, base_model.document, base_model.processes, certpub=certpub)
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        await _populate(session, base, with_certpub)
        for prefix in (f"{base}/oasis", f"{base}/bdxr-smp-2"):
            async with session.get(f"{prefix}/{P.url_segment()}/services/{D.url_segment()}") as response:
                assert parse_service_metadata(parse_xml(await response.read())).certpub == certpub
        redirect = ServiceMetadata(P, D, redirect=Redirect("https://other.example/smp/x", certificates=(der,)))
        url = f"{base}/{P.url_segment()}/services/{D.url_segment()}"
        async with session.put(url, headers=AUTH, data=_body(redirect, Flavour.OASIS2)) as response:
            assert response.status == 200
        for flavour, prefix in _paths(base).items():
            async with session.get(f"{prefix}/{P.url_segment()}/services/{D.url_segment()}") as response:
                got = parse_service_metadata(parse_xml(await response.read())).redirect
            assert got is not None
            assert got.href == "https://other.example/smp/x"
            if flavour is Flavour.OASIS2:
                assert got.certificates == (der,)
            else:
                assert got.certificate_uid == pki().ap.certificate.subject.rfc4514_string()


async def test_phoss_rest_files_are_accepted_as_bodies(tmp_path: Path) -> None:
    """phoss-smp's OASIS 1.0 PUT body is stored; the Peppol one, whose certificate is not base64, is a 400."""
    oasis = interop_path("smp/phoss/rest-files/bdxr1-service-metadata.xml").read_bytes()
    peppol = interop_path("smp/phoss/rest-files/peppol-service-metadata.xml").read_bytes()
    participant = Identifier.parse("iso6523-actorid-upis::9915:xxx")
    document = parse_service_metadata(parse_xml(oasis)).document
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        async with session.put(f"{base}/{participant.url_segment()}", headers=AUTH) as response:
            assert response.status == 201
        url = f"{base}/{participant.url_segment()}/services/{document.url_segment()}"
        async with session.put(url, headers=AUTH, data=peppol) as response:
            assert response.status == 400
            assert "not base64" in await response.text()
        async with session.put(url, headers=AUTH, data=oasis) as response:
            assert response.status == 201
        async with session.get(url) as response:
            served = parse_service_metadata(parse_xml(await response.read()))
        endpoint = served.processes[0].endpoints[0]
        assert endpoint.transport_profile == TransportProfile.PEPPOL_AS4
        assert endpoint.certificate == b"blacert"


async def test_body_naming_another_participant_is_refused(tmp_path: Path) -> None:
    """A PUT whose document names another participant or document type than its URL is a 400."""
    other = metadata("https://ap.example/as4", participant="iso6523-actorid-upis::0007:5555555555")
    async with running_server(tmp_path) as base, aiohttp.ClientSession() as session:
        await _populate(session, base, metadata("https://ap.example/as4"))
        url = f"{base}/{P.url_segment()}/services/{D.url_segment()}"
        async with session.put(url, headers=AUTH, data=_body(other)) as response:
            assert response.status == 400
        async with session.put(url, headers=AUTH, data=b"<not-xml") as response:
            assert response.status == 400


def test_store_json_round_trip() -> None:
    """The stored JSON form gives back the same model."""
    model = metadata("https://ap.example/as4", profiles=(TransportProfile.SDK_AS4, TransportProfile.PEPPOL_AS4))
    assert metadata_from_json(metadata_to_json(model)) == model


@pytest.mark.parametrize("flavour", list(Flavour))
def test_render_parse_round_trip(flavour: Flavour) -> None:
    """Rendering and parsing each flavour gives back the model."""
    model = metadata("https://ap.example/as4", process=None if flavour is Flavour.OASIS2 else "cenbii-procid-ubl::p")
    assert parse_service_metadata(render_service_metadata(model, flavour)) == model
