"""Revocation: OCSP answers from a real OpenSSL responder, CRLs over HTTP, soft/hard fail, caching, fallback.

The network tests serve everything from one HTTP server bound to 127.0.0.1. Its OCSP routes hand each request
to ``openssl ocsp -index index.txt -CA … -rsigner … -rkey … -reqin … -respout …``, OpenSSL's own responder
working from a CA database, one process per request. ``openssl ocsp -port`` would run the same responder as a
server, but OpenSSL 3.0 binds it to every interface ([::]) and offers no way to choose the address.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import ocsp

from accesspoint.security.fetch import UrlFetcher
from accesspoint.security.keys import KeyPair
from accesspoint.security.policy import RevocationMode, TrustSettings
from accesspoint.security.revocation import (
    CrlError,
    FetchError,
    RevocationChecker,
    RevocationStatus,
    build_ocsp_request,
    crl_status,
    crl_urls,
    evaluate_ocsp_response,
    load_crl,
    ocsp_urls,
)
from accesspoint.security.trust import WIRE_DETAIL, CertificateUsage, TrustError, TrustFailure, validate_certificate
from tests.trustpki import SIGN_ONLY, certificate, crl, intermediate, ocsp_responder, root

DER = serialization.Encoding.DER
SIGNATURE = CertificateUsage.SIGNATURE
REVOKED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------------------------ loopback servers


@dataclass
class Reply:
    """What a route answers."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class LoopbackServer:
    """An HTTP server on 127.0.0.1 (never another interface) with per-path routes and request counts."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[bytes | None], Reply]] = {}
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(None)

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def _answer(self, body: bytes | None) -> None:
                with owner._lock:
                    owner.hits[self.path] = owner.hits.get(self.path, 0) + 1
                route = owner.routes.get(self.path)
                reply = route(body) if route else Reply(b"not found", 404)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="loopback-http", daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def count(self, path: str) -> int:
        """How many requests ``path`` has had."""
        with self._lock:
            return self.hits.get(path, 0)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def _asn1_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%y%m%d%H%M%SZ")


class OpensslOcsp:
    """An OCSP route answered by ``openssl ocsp`` from an OpenSSL CA database (index.txt)."""

    def __init__(self, directory: Path, ca: KeyPair, signer: KeyPair) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.index = directory / "index.txt"
        self.index.write_text("")
        (directory / "ca.pem").write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
        (directory / "signer.pem").write_bytes(signer.certificate.public_bytes(serialization.Encoding.PEM))
        pkcs8 = signer.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        (directory / "signer.key").write_bytes(pkcs8)

    def add(self, issued: x509.Certificate, revoked: tuple[datetime, str] | None = None) -> None:
        """Enter a certificate in the CA database: valid, or revoked at a time for a reason."""
        serial = format(issued.serial_number, "X")
        serial = serial if len(serial) % 2 == 0 else "0" + serial
        status, when = ("V", "") if revoked is None else ("R", f"{_asn1_time(revoked[0])},{revoked[1]}")
        subject = "/" + "/".join(reversed(issued.subject.rfc4514_string().split(",")))
        expiry = _asn1_time(issued.not_valid_after_utc)
        with self.index.open("a") as index:
            index.write(f"{status}\t{expiry}\t{when}\t{serial}\tunknown\t{subject}\n")

    def __call__(self, body: bytes | None) -> Reply:
        if body is None:
            return Reply(b"POST an OCSP request", 405)
        with tempfile.TemporaryDirectory(dir=self.directory) as scratch:
            request, response = Path(scratch) / "request.der", Path(scratch) / "response.der"
            request.write_bytes(body)
            d = self.directory
            subprocess.run(
                ["openssl", "ocsp", "-index", str(self.index), "-CA", str(d / "ca.pem"),
                 "-rsigner", str(d / "signer.pem"), "-rkey", str(d / "signer.key"),
                 "-reqin", str(request), "-respout", str(response), "-nmin", "60"],
                check=True, capture_output=True, timeout=20,
            )  # fmt: skip
            return Reply(response.read_bytes(), headers={"Content-Type": "application/ocsp-response"})


@dataclass
class Lab:
    """The test PKI with its OCSP responders and CRLs on the loopback server."""

    server: LoopbackServer
    dead: str  # a loopback URL where nothing listens
    root: KeyPair
    issuing: KeyPair
    good: KeyPair  # OCSP (delegated responder) + CRL, good
    revoked: KeyPair  # OCSP + CRL, revoked (keyCompromise)
    by_issuer: KeyPair  # OCSP answered with the issuing CA's own key
    unlisted: KeyPair  # OCSP only; the responder's database does not know it
    fallback_good: KeyPair  # OCSP down, CRL good
    fallback_good_2: KeyPair
    fallback_revoked: KeyPair  # OCSP down, CRL revoked
    unreachable: KeyPair  # OCSP and CRL both down

    def trust(self, mode: RevocationMode) -> TrustSettings:
        return TrustSettings(anchors=(self.root.certificate,), revocation=mode)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Serve OCSP (OpenSSL) and CRLs on 127.0.0.1 for a freshly made root -> issuing CA -> leaves hierarchy."""
    if shutil.which("openssl") is None:
        pytest.fail("openssl is missing (scripts/ensure-system-packages.sh installs it)")
    server = LoopbackServer()
    # Bound but never listening: connections to it are refused at once, and no one else can take the port.
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{blocker.getsockname()[1]}"
        top = root(kind="rsa")
        issuing = intermediate(top, crl_url=server.url("/root.crl"))

        def leaf(name: str, ocsp_path: str | None, crl_path: str | None, *, dead_ocsp: bool = False) -> KeyPair:
            ocsp_url = f"{dead}/ocsp" if dead_ocsp else (server.url(ocsp_path) if ocsp_path else None)
            crl_url = f"{dead}/issuing.crl" if crl_path == "dead" else (server.url(crl_path) if crl_path else None)
            return certificate(name, issuer=issuing, ocsp_url=ocsp_url, crl_url=crl_url)

        made = Lab(
            server=server,
            dead=dead,
            root=top,
            issuing=issuing,
            good=leaf("PTE000101", "/ocsp", "/issuing.crl"),
            revoked=leaf("PTE000102", "/ocsp", "/issuing.crl"),
            by_issuer=leaf("PTE000103", "/ocsp-by-ca", None),
            unlisted=leaf("PTE000104", "/ocsp", None),
            fallback_good=leaf("PTE000105", None, "/issuing.crl", dead_ocsp=True),
            fallback_good_2=leaf("PTE000106", None, "/issuing.crl", dead_ocsp=True),
            fallback_revoked=leaf("PTE000107", None, "/issuing.crl", dead_ocsp=True),
            unreachable=leaf("PTE000108", None, "dead", dead_ocsp=True),
        )
        workdir = tmp_path_factory.mktemp("ocsp")
        delegated = OpensslOcsp(workdir / "delegated", issuing, ocsp_responder(issuing))
        direct = OpensslOcsp(workdir / "direct", issuing, issuing)
        for responder in (delegated, direct):
            for issued in (made.good, made.by_issuer, made.fallback_good, made.fallback_good_2):
                responder.add(issued.certificate)
            responder.add(made.revoked.certificate, (REVOKED_AT, "keyCompromise"))
        now = datetime.now(UTC)
        issuing_crl = crl(
            issuing,
            [
                (made.revoked.certificate.serial_number, REVOKED_AT, x509.ReasonFlags.key_compromise),
                (made.fallback_revoked.certificate.serial_number, REVOKED_AT, x509.ReasonFlags.superseded),
            ],
            last_update=now - timedelta(hours=1),
            next_update=now + timedelta(hours=6),
        )
        root_crl = crl(top, last_update=now - timedelta(hours=1), next_update=now + timedelta(hours=6))
        server.routes["/ocsp"] = delegated
        server.routes["/ocsp-by-ca"] = direct
        server.routes["/issuing.crl"] = lambda _body: Reply(issuing_crl.public_bytes(DER))
        server.routes["/root.crl"] = lambda _body: Reply(root_crl.public_bytes(serialization.Encoding.PEM))
        yield made
    finally:
        server.stop()
        blocker.close()


class CountingFetcher:
    """Wraps a fetcher and records every URL it is asked for."""

    def __init__(self, inner: Callable[[str, bytes | None], bytes]) -> None:
        self.inner = inner
        self.urls: list[str] = []

    def __call__(self, url: str, body: bytes | None, /) -> bytes:
        self.urls.append(url)
        return self.inner(url, body)


def _checker(**options: object) -> tuple[RevocationChecker, CountingFetcher]:
    fetcher = CountingFetcher(UrlFetcher(timeout=5))
    return RevocationChecker(fetcher, **options), fetcher  # type: ignore[arg-type]


def _validate(lab: Lab, leaf: KeyPair, mode: RevocationMode, checker: RevocationChecker) -> object:
    return validate_certificate(
        leaf.certificate,
        [lab.issuing.certificate],
        lab.trust(mode),
        at=datetime.now(UTC),
        usage=SIGNATURE,
        revocation=checker,
    )


# ------------------------------------------------------------------------- with the OpenSSL responder


def test_locations_read_from_certificate(lab: Lab) -> None:
    """AIA gives the OCSP responder and the CRL distribution point gives the CRL."""
    assert ocsp_urls(lab.good.certificate) == (lab.server.url("/ocsp"),)
    assert crl_urls(lab.good.certificate) == (lab.server.url("/issuing.crl"),)
    assert ocsp_urls(lab.root.certificate) == () and crl_urls(lab.root.certificate) == ()


def test_ocsp_good(lab: Lab) -> None:
    """OpenSSL's responder (delegated signer) says good, and hard-fail validation passes."""
    checker, fetcher = _checker()
    result = validate_certificate(
        lab.good.certificate,
        [lab.issuing.certificate],
        lab.trust(RevocationMode.HARD_FAIL),
        at=datetime.now(UTC),
        usage=SIGNATURE,
        revocation=checker,
    )
    (status,) = result.revocation
    assert status.status is RevocationStatus.GOOD
    assert status.source == f"ocsp {lab.server.url('/ocsp')}"
    assert status.next_update is not None and not status.cached
    assert result.warnings == ()
    assert fetcher.urls == [lab.server.url("/ocsp")]


def test_ocsp_signed_by_issuer_itself(lab: Lab) -> None:
    """A response signed with the issuing CA's own key (no delegated responder) is accepted."""
    checker, _ = _checker()
    result = checker.check(lab.by_issuer.certificate, lab.issuing.certificate, at=datetime.now(UTC))
    assert result.status is RevocationStatus.GOOD


def test_ocsp_nonce_echoed(lab: Lab) -> None:
    """OpenSSL echoes the request nonce, and the checker accepts the matching echo."""
    nonce = b"0123456789abcdef"
    checker = RevocationChecker(UrlFetcher(timeout=5), nonce=lambda: nonce)
    assert checker.check(lab.good.certificate, lab.issuing.certificate, at=datetime.now(UTC)).status is (
        RevocationStatus.GOOD
    )
    raw = UrlFetcher(timeout=5)(
        lab.server.url("/ocsp"), build_ocsp_request(lab.good.certificate, lab.issuing.certificate, nonce)
    )
    echoed = ocsp.load_der_ocsp_response(raw).extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    assert echoed == nonce


def test_ocsp_revoked_refuses(lab: Lab) -> None:
    """A certificate OpenSSL's database lists as revoked is refused with EBMS:0101, even in soft-fail mode."""
    checker, _ = _checker()
    with pytest.raises(TrustError) as caught:
        _validate(lab, lab.revoked, RevocationMode.SOFT_FAIL, checker)
    error = caught.value
    assert error.code == "EBMS:0101"
    assert error.failure is TrustFailure.REVOKED
    assert error.detail == f"{WIRE_DETAIL}: revoked"
    assert "revoked" in error.reason and "keyCompromise" in error.reason
    assert error.revocation is not None
    assert error.revocation.revoked_at == REVOKED_AT
    assert error.revocation.revocation_reason is x509.ReasonFlags.key_compromise
    assert error.revocation.source.startswith("ocsp ")


def test_responder_unknown_certificate(lab: Lab) -> None:
    """A certificate the responder does not know is 'unknown': soft-fail passes with a warning, hard-fail refuses."""
    checker, _ = _checker()
    result = _validate(lab, lab.unlisted, RevocationMode.SOFT_FAIL, checker)
    assert result.revocation[0].status is RevocationStatus.UNKNOWN  # type: ignore[attr-defined]
    with pytest.raises(TrustError) as caught:
        _validate(lab, lab.unlisted, RevocationMode.HARD_FAIL, checker)
    assert caught.value.failure is TrustFailure.REVOCATION_UNKNOWN


def test_cache_hit_does_not_ask_again(lab: Lab) -> None:
    """A second validation within the answer's lifetime is served from the cache: one request in all."""
    checker, fetcher = _checker()
    before = lab.server.count("/ocsp")
    first = _validate(lab, lab.good, RevocationMode.HARD_FAIL, checker)
    second = _validate(lab, lab.good, RevocationMode.HARD_FAIL, checker)
    assert lab.server.count("/ocsp") - before == 1
    assert len(fetcher.urls) == 1
    assert not first.revocation[0].cached  # type: ignore[attr-defined]
    assert second.revocation[0].cached  # type: ignore[attr-defined]


def test_responder_down_soft_fail_passes(lab: Lab, caplog: pytest.LogCaptureFixture) -> None:
    """OCSP and CRL both unreachable: soft-fail accepts, logs a warning and returns it."""
    checker, _ = _checker()
    with caplog.at_level(logging.WARNING, logger="accesspoint.security.trust"):
        result = _validate(lab, lab.unreachable, RevocationMode.SOFT_FAIL, checker)
    assert result.revocation[0].status is RevocationStatus.UNKNOWN  # type: ignore[attr-defined]
    assert len(result.warnings) == 1  # type: ignore[attr-defined]
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


def test_responder_down_hard_fail_refuses(lab: Lab) -> None:
    """OCSP and CRL both unreachable: hard-fail refuses with EBMS:0101, and the reason says unreachable."""
    checker, _ = _checker()
    with pytest.raises(TrustError) as caught:
        _validate(lab, lab.unreachable, RevocationMode.HARD_FAIL, checker)
    error = caught.value
    assert error.code == "EBMS:0101"
    assert error.failure is TrustFailure.REVOCATION_UNKNOWN
    assert "unreachable" in error.reason
    assert error.detail == f"{WIRE_DETAIL}: revocation status unknown"


def test_crl_fallback_when_ocsp_down(lab: Lab) -> None:
    """With the responder down the CRL decides: good passes hard-fail, revoked is refused; the CRL is fetched once."""
    checker, fetcher = _checker()
    before = lab.server.count("/issuing.crl")
    good = _validate(lab, lab.fallback_good, RevocationMode.HARD_FAIL, checker)
    assert good.revocation[0].status is RevocationStatus.GOOD  # type: ignore[attr-defined]
    assert good.revocation[0].source == f"crl {lab.server.url('/issuing.crl')}"  # type: ignore[attr-defined]
    with pytest.raises(TrustError) as caught:
        _validate(lab, lab.fallback_revoked, RevocationMode.HARD_FAIL, checker)
    assert caught.value.failure is TrustFailure.REVOKED
    assert caught.value.revocation is not None
    assert caught.value.revocation.revocation_reason is x509.ReasonFlags.superseded
    assert lab.server.count("/issuing.crl") - before == 1
    # The responder that failed is rested: the second certificate went straight to the (cached) CRL.
    assert fetcher.urls.count(f"{lab.dead}/ocsp") == 1


def test_failed_responder_asked_again_after_rest(lab: Lab) -> None:
    """Once retry_after_failure has passed the responder is tried again."""
    moment = [datetime.now(UTC)]
    checker, fetcher = _checker(clock=lambda: moment[0], retry_after_failure=timedelta(seconds=30))
    checker.check(lab.fallback_good.certificate, lab.issuing.certificate, at=moment[0])
    moment[0] += timedelta(seconds=31)
    checker.check(lab.fallback_good_2.certificate, lab.issuing.certificate, at=moment[0])
    assert fetcher.urls.count(f"{lab.dead}/ocsp") == 2


def test_intermediates_checked_against_root_crl(lab: Lab) -> None:
    """With check_intermediates the issuing CA is looked up in the root's (PEM) CRL too."""
    checker, _ = _checker(check_intermediates=True)
    result = _validate(lab, lab.good, RevocationMode.HARD_FAIL, checker)
    statuses = [(r.status, r.source.split()[0]) for r in result.revocation]  # type: ignore[attr-defined]
    assert statuses == [(RevocationStatus.GOOD, "ocsp"), (RevocationStatus.GOOD, "crl")]


def test_revocation_off_asks_nobody(lab: Lab) -> None:
    """RevocationMode.OFF never calls the fetcher."""
    checker, fetcher = _checker()
    result = _validate(lab, lab.revoked, RevocationMode.OFF, checker)
    assert result.revocation == () and fetcher.urls == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ the fetcher


def test_fetcher_refuses_non_http_locations() -> None:
    """Locations come from certificates: file:, ftp: and data: URLs are never opened."""
    for url in ("file:///etc/passwd", "ftp://127.0.0.1/x.crl", "data:,hello"):
        with pytest.raises(FetchError, match="not an HTTP URL"):
            UrlFetcher()(url, None)


def test_fetcher_http_errors_and_size_cap(lab: Lab) -> None:
    """404s, refused connections, every redirect (its location never fetched) and answers past the cap: FetchErrors."""
    lab.server.routes["/big"] = lambda _body: Reply(b"x" * 2048)
    lab.server.routes["/to-big"] = lambda _body: Reply(status=302, headers={"Location": lab.server.url("/big")})
    lab.server.routes["/to-ftp"] = lambda _body: Reply(status=302, headers={"Location": "ftp://127.0.0.1/x.crl"})
    lab.server.routes["/to-file"] = lambda _body: Reply(status=302, headers={"Location": "file:///etc/passwd"})
    with pytest.raises(FetchError, match="HTTP 404"):
        UrlFetcher()(lab.server.url("/nothing-here"), None)
    with pytest.raises(FetchError):
        UrlFetcher()(f"{lab.dead}/x", None)
    with pytest.raises(FetchError, match="larger than"):
        UrlFetcher(max_bytes=1024)(lab.server.url("/big"), None)
    assert UrlFetcher(max_bytes=2048)(lab.server.url("/big"), None) == b"x" * 2048
    assert lab.server.count("/big") == 2
    for path in ("/to-big", "/to-ftp"):
        with pytest.raises(FetchError, match=f"HTTP 302 redirect from .*{path} to .* not followed"):
            UrlFetcher()(lab.server.url(path), None)
    with pytest.raises(FetchError, match="HTTP 302"):  # urllib itself refuses to follow this one
        UrlFetcher()(lab.server.url("/to-file"), None)
    assert lab.server.count("/big") == 2  # the redirect to it was not followed


# ----------------------------------------------------------------------------- OCSP responses, in memory


NOW = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def ca() -> tuple[KeyPair, KeyPair]:
    """An issuing CA and a leaf with an OCSP URL and a CRL URL (never fetched: responses are made here)."""
    issuing = root("Memory CA")
    leaf = certificate("PTE000201", issuer=issuing, ocsp_url="http://ocsp.invalid/", crl_url="http://crl.invalid/c")
    return issuing, leaf


def _response(
    leaf: x509.Certificate,
    issuer: KeyPair,
    *,
    signer: KeyPair | None = None,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    this_update: datetime = NOW - timedelta(minutes=5),
    next_update: datetime | None = NOW + timedelta(hours=1),
    nonce: bytes | None = None,
    by_name: bool = False,
) -> bytes:
    signer = signer or issuer
    revoked = status is ocsp.OCSPCertStatus.REVOKED
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=leaf,
            issuer=issuer.certificate,
            algorithm=hashes.SHA1(),  # noqa: S303 (the CertID hash every responder uses)
            cert_status=status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=REVOKED_AT if revoked else None,
            revocation_reason=x509.ReasonFlags.cessation_of_operation if revoked else None,
        )
        .responder_id(
            ocsp.OCSPResponderEncoding.NAME if by_name else ocsp.OCSPResponderEncoding.HASH, signer.certificate
        )
    )
    if signer is not issuer and not by_name:
        builder = builder.certificates([signer.certificate])
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    key = signer.private_key
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(DER)  # type: ignore[arg-type]


def _evaluate(data: bytes, leaf: KeyPair, issuing: KeyPair, **options: object) -> tuple[RevocationStatus, str]:
    result = evaluate_ocsp_response(data, leaf.certificate, issuing.certificate, at=NOW, **options)  # type: ignore[arg-type]
    return result.status, result.detail


def test_ocsp_response_by_issuer(ca: tuple[KeyPair, KeyPair]) -> None:
    """A fresh response signed by the issuer is good; a revoked one carries time and reason."""
    issuing, leaf = ca
    assert _evaluate(_response(leaf.certificate, issuing), leaf, issuing)[0] is RevocationStatus.GOOD
    data = _response(leaf.certificate, issuing, status=ocsp.OCSPCertStatus.REVOKED)
    result = evaluate_ocsp_response(data, leaf.certificate, issuing.certificate, at=NOW)
    assert result.status is RevocationStatus.REVOKED
    assert (result.revoked_at, result.revocation_reason) == (REVOKED_AT, x509.ReasonFlags.cessation_of_operation)


@pytest.mark.parametrize("kind", ["rsa", "ed25519", "p384"])
def test_ocsp_response_signature_algorithms(kind: str) -> None:
    """Responses signed with RSA, Ed25519 and ECDSA issuer keys verify."""
    issuing = root(f"{kind} CA", kind=kind)  # type: ignore[arg-type]
    leaf = certificate("PTE000202", issuer=issuing)
    assert _evaluate(_response(leaf.certificate, issuing), leaf, issuing)[0] is RevocationStatus.GOOD


def test_ocsp_delegated_responder_needs_ocsp_signing(ca: tuple[KeyPair, KeyPair]) -> None:
    """A delegated responder must be issued by the CA and carry id-kp-OCSPSigning."""
    issuing, leaf = ca
    delegated = ocsp_responder(issuing)
    assert _evaluate(_response(leaf.certificate, issuing, signer=delegated), leaf, issuing)[0] is RevocationStatus.GOOD
    plain = certificate("Not a responder", issuer=issuing, key_usage=SIGN_ONLY)
    status, detail = _evaluate(_response(leaf.certificate, issuing, signer=plain), leaf, issuing)
    assert status is RevocationStatus.UNKNOWN and "OCSPSigning" in detail
    stranger = ocsp_responder(root("Other CA"))
    status, detail = _evaluate(_response(leaf.certificate, issuing, signer=stranger), leaf, issuing)
    assert status is RevocationStatus.UNKNOWN and "not issued by" in detail


def test_ocsp_forged_signature(ca: tuple[KeyPair, KeyPair]) -> None:
    """A response whose responder is named like the issuer but signed with another key is unusable."""
    issuing, leaf = ca
    impostor = root("Memory CA")  # the issuer's name, another key
    forged = _response(leaf.certificate, issuing, signer=impostor, by_name=True)
    status, detail = _evaluate(forged, leaf, issuing)
    assert status is RevocationStatus.UNKNOWN and "does not verify" in detail


def test_ocsp_nonce_mismatch(ca: tuple[KeyPair, KeyPair]) -> None:
    """An echoed nonce must be ours; a response without one is accepted (RFC 5019 caches)."""
    issuing, leaf = ca
    replayed = _response(leaf.certificate, issuing, nonce=b"an old nonce....")
    assert _evaluate(replayed, leaf, issuing, nonce=b"this request....")[0] is RevocationStatus.UNKNOWN
    assert _evaluate(replayed, leaf, issuing, nonce=b"an old nonce....")[0] is RevocationStatus.GOOD
    assert _evaluate(_response(leaf.certificate, issuing), leaf, issuing, nonce=b"x" * 16)[0] is RevocationStatus.GOOD


def test_ocsp_freshness(ca: tuple[KeyPair, KeyPair]) -> None:
    """Past nextUpdate, before thisUpdate, or old without nextUpdate, a response is unusable."""
    issuing, leaf = ca
    stale = _response(
        leaf.certificate, issuing, this_update=NOW - timedelta(days=2), next_update=NOW - timedelta(days=1)
    )
    future = _response(leaf.certificate, issuing, this_update=NOW + timedelta(hours=1), next_update=None)
    old = _response(leaf.certificate, issuing, this_update=NOW - timedelta(hours=3), next_update=None)
    for data in (stale, future, old):
        assert _evaluate(data, leaf, issuing)[0] is RevocationStatus.UNKNOWN
    recent = _response(leaf.certificate, issuing, this_update=NOW - timedelta(minutes=3), next_update=None)
    assert _evaluate(recent, leaf, issuing)[0] is RevocationStatus.GOOD


def test_ocsp_response_about_another_certificate(ca: tuple[KeyPair, KeyPair]) -> None:
    """A good answer for a different serial says nothing about ours."""
    issuing, leaf = ca
    other = certificate("PTE000203", issuer=issuing)
    status, detail = _evaluate(_response(other.certificate, issuing), leaf, issuing)
    assert status is RevocationStatus.UNKNOWN and "does not cover" in detail


def test_ocsp_unsuccessful_and_garbage(ca: tuple[KeyPair, KeyPair]) -> None:
    """tryLater and bytes that are no OCSP response are both 'unknown'."""
    issuing, leaf = ca
    busy = ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER).public_bytes(DER)
    status, detail = _evaluate(busy, leaf, issuing)
    assert status is RevocationStatus.UNKNOWN and "TRY_LATER" in detail
    assert _evaluate(b"<html>busy</html>", leaf, issuing)[0] is RevocationStatus.UNKNOWN


# ----------------------------------------------------------------------------------- CRLs, in memory


def test_crl_lookup(ca: tuple[KeyPair, KeyPair]) -> None:
    """A verified CRL lists revoked serials with date and reason; others are good."""
    issuing, leaf = ca
    listed = crl(
        issuing, [(leaf.certificate.serial_number, REVOKED_AT, x509.ReasonFlags.affiliation_changed)], last_update=NOW
    )
    result = crl_status(load_crl(listed.public_bytes(DER), issuing.certificate, at=NOW), leaf.certificate)
    assert result.status is RevocationStatus.REVOKED
    assert (result.revoked_at, result.revocation_reason) == (REVOKED_AT, x509.ReasonFlags.affiliation_changed)
    empty = crl(issuing, last_update=NOW)
    pem = empty.public_bytes(serialization.Encoding.PEM)
    assert crl_status(load_crl(pem, issuing.certificate, at=NOW), leaf.certificate).status is RevocationStatus.GOOD


def test_crl_refused_when_unverifiable(ca: tuple[KeyPair, KeyPair]) -> None:
    """A CRL signed with another key, by another issuer, stale, not yet valid, or unreadable is refused."""
    issuing, _ = ca
    forged = crl(issuing, last_update=NOW, signer=root("Forger").private_key)
    foreign = crl(root("Other CA"), last_update=NOW)
    stale = crl(issuing, last_update=NOW - timedelta(days=3), next_update=NOW - timedelta(days=1))
    early = crl(issuing, last_update=NOW + timedelta(days=1))
    for bad in (forged.public_bytes(DER), foreign.public_bytes(DER), stale.public_bytes(DER), early.public_bytes(DER)):
        with pytest.raises(CrlError):
            load_crl(bad, issuing.certificate, at=NOW)
    with pytest.raises(CrlError, match="unreadable"):
        load_crl(b"garbage", issuing.certificate, at=NOW)


def test_crl_issuer_must_allow_crl_sign() -> None:
    """An issuer whose keyUsage lacks cRLSign cannot vouch for a CRL."""
    no_crl_sign = x509.KeyUsage(False, False, False, False, False, True, False, False, False)
    issuing = root("No CRL CA", key_usage=no_crl_sign)
    with pytest.raises(CrlError, match="cRLSign"):
        load_crl(crl(issuing, last_update=NOW).public_bytes(DER), issuing.certificate, at=NOW)


# --------------------------------------------------------------------------------- the checker's cache


class DictFetcher:
    """Answers from a dictionary (FetchError for anything else) and counts the requests per URL."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.calls: dict[str, int] = {}

    def __call__(self, url: str, body: bytes | None, /) -> bytes:
        self.calls[url] = self.calls.get(url, 0) + 1
        if url not in self.answers:
            raise FetchError(f"{url}: connection refused")
        return self.answers[url]


def test_ocsp_cache_expires_on_the_injected_clock(ca: tuple[KeyPair, KeyPair]) -> None:
    """Cached answers live until ocsp_max_age (on the checker's clock) and then are fetched anew."""
    issuing, leaf = ca
    fetcher = DictFetcher(
        {"http://ocsp.invalid/": _response(leaf.certificate, issuing, next_update=NOW + timedelta(days=7))}
    )
    moment = [NOW]
    checker = RevocationChecker(fetcher, clock=lambda: moment[0], nonce=None, ocsp_max_age=timedelta(minutes=10))
    assert checker.check(leaf.certificate, issuing.certificate, at=NOW).status is RevocationStatus.GOOD
    moment[0] = NOW + timedelta(minutes=9)
    assert checker.check(leaf.certificate, issuing.certificate, at=NOW).cached
    moment[0] = NOW + timedelta(minutes=11)
    assert not checker.check(leaf.certificate, issuing.certificate, at=NOW).cached
    assert fetcher.calls == {"http://ocsp.invalid/": 2}
    checker.clear()
    checker.check(leaf.certificate, issuing.certificate, at=NOW)
    assert fetcher.calls == {"http://ocsp.invalid/": 3}


def test_ocsp_cache_ends_at_next_update(ca: tuple[KeyPair, KeyPair]) -> None:
    """An answer is not served from the cache past its own nextUpdate, whatever the max age."""
    issuing, leaf = ca
    fetcher = DictFetcher(
        {"http://ocsp.invalid/": _response(leaf.certificate, issuing, next_update=NOW + timedelta(minutes=5))}
    )
    moment = [NOW]
    checker = RevocationChecker(fetcher, clock=lambda: moment[0], nonce=None, ocsp_max_age=timedelta(hours=5))
    checker.check(leaf.certificate, issuing.certificate, at=NOW)
    moment[0] = NOW + timedelta(minutes=6)
    checker.check(leaf.certificate, issuing.certificate, at=moment[0])
    assert fetcher.calls == {"http://ocsp.invalid/": 2}


def test_pinned_certificate_checked_when_issuer_known(ca: tuple[KeyPair, KeyPair]) -> None:
    """A pinned certificate whose issuer is at hand is looked up too; a revoked pin is refused."""
    issuing, leaf = ca
    revoked = _response(leaf.certificate, issuing, status=ocsp.OCSPCertStatus.REVOKED)
    checker = RevocationChecker(DictFetcher({"http://ocsp.invalid/": revoked}), nonce=None, clock=lambda: NOW)
    trust = TrustSettings(pinned=(leaf.certificate,), intermediates=(issuing.certificate,))
    with pytest.raises(TrustError) as caught:
        validate_certificate(leaf.certificate, [], trust, at=NOW, usage=SIGNATURE, revocation=checker)
    assert caught.value.failure is TrustFailure.REVOKED
    alone = replace(trust, intermediates=(), revocation=RevocationMode.HARD_FAIL)
    result = validate_certificate(leaf.certificate, [], alone, at=NOW, usage=SIGNATURE, revocation=checker)
    assert result.pinned and result.revocation == ()


def test_no_locations_is_unknown(ca: tuple[KeyPair, KeyPair]) -> None:
    """A certificate naming neither OCSP nor CRL has unknown status."""
    issuing, _ = ca
    bare = certificate("PTE000204", issuer=issuing)
    result = RevocationChecker(DictFetcher({})).check(bare.certificate, issuing.certificate, at=NOW)
    assert result.status is RevocationStatus.UNKNOWN and "no OCSP responder" in result.detail
