"""AS4 over real HTTPS between two processes: TLS 1.2+, a configured CA, client certificates where required."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from accesspoint.msh.config import TlsConfig
from accesspoint.msh.tls import server_context
from accesspoint.testing.pki import make_ca, tls_certificate
from accesspoint.testing.services import free_port
from tests.test_msh_support import BE_KEY, SE_KEY, Peer, agreements, running, submission


def _client(ca_file: Path, certificate: dict[str, str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))
    if certificate is not None:
        context.load_cert_chain(certificate["certificate"], certificate["key"])
    return context


def _handshake(port: int, context: ssl.SSLContext) -> str:
    """Complete a TLS handshake and one request; the negotiated protocol version."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert tls.recv(12).startswith(b"HTTP/1.1 200")
        return str(tls.version())


def test_as4_over_https_with_and_without_required_client_certificates(tmp_path: Path) -> None:
    """Sweden serves TLS alone, Belgium requires client certificates from the CA; both directions deliver."""
    ca = make_ca("Test TLS CA")
    ca_file = tmp_path / "tls-ca.pem"
    ca_file.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    se_tls = tls_certificate(ca, "ap-se.test", tmp_path / "tls")
    be_tls = tls_certificate(ca, "ap-be.test", tmp_path / "tls")
    tester = tls_certificate(ca, "backend.test", tmp_path / "tls")
    port_se, port_be = free_port(), free_port()
    se_url, be_url = f"https://127.0.0.1:{port_se}/as4", f"https://127.0.0.1:{port_be}/as4"

    def peer(name: str, key: str, port: int, tls: dict[str, str]) -> Peer:
        settings = {"tls": tls, "tls_trust": str(ca_file)}
        https = _client(ca_file, tester if "client_ca" in tls else None)
        pmodes = agreements(name, se_url, be_url)
        return Peer(tmp_path / name, name, key, port, pmodes, settings=settings, https=https)

    sweden = peer("ap-sweden", SE_KEY, port_se, se_tls)
    belgium = peer("partner-115", BE_KEY, port_be, {**be_tls, "client_ca": str(ca_file)})
    with running(belgium, sweden):
        assert _handshake(port_se, _client(ca_file)) in {"TLSv1.2", "TLSv1.3"}
        assert _handshake(port_be, _client(ca_file, tester)) in {"TLSv1.2", "TLSv1.3"}
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError)):
            _handshake(port_be, _client(ca_file))  # no client certificate: Belgium refuses
        # Older protocols are not offered (OpenSSL here would not even let a client ask for TLS 1.1).
        assert server_context(TlsConfig(Path(se_tls["certificate"]), Path(se_tls["key"]))).minimum_version == (
            ssl.TLSVersion.TLSv1_2
        )

        status, sent = sweden.api("POST", "/api/v1/messages", submission("se-be-request-reply", b"<q/>", "tls@se"))
        assert status == 202, sent
        assert sweden.wait_state("tls@se", {"delivered", "failed"})["state"] == "delivered"
        belgium.wait_state("tls@se", {"received"}, direction="in")
        reply = submission("se-be-request-reply", b"<a/>", "tls@be", ref_to_message_id="tls@se")
        assert belgium.api("POST", "/api/v1/messages", reply)[0] == 202
        assert belgium.wait_state("tls@be", {"delivered", "failed"})["state"] == "delivered"
