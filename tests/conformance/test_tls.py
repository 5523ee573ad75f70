"""AS4_CP_TA39-TA43 (TAD v1.2): the access point's own TLS listener, its versions and cipher suites.

One more ``accesspoint serve`` process, with the bed's P-Modes and keys, listens with TLS configured to
``min_version: "1.2"`` and ``ciphers: ECDHE+AESGCM``. Old protocol versions are offered with hand-made
ClientHello records (the local OpenSSL may no longer speak SSL 3.0, TLS 1.0 or 1.1 at all, so its own client
could not prove that the server refuses them); a TLS 1.2 ClientHello from the same builder is the control
that the builder is right. Cipher suites are tried with Python's ssl module.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accesspoint.core.message import read_message
from accesspoint.core.model import (
    CollaborationInfo,
    MessageInfo,
    Party,
    PartyId,
    PartyInfo,
    Service,
    SignalMessage,
    UserMessage,
)
from accesspoint.msh.config import ConfigError, load_config
from accesspoint.msh.tls import server_context
from accesspoint.security.outbound import Payload, secure_message
from accesspoint.testing.pki import make_ca, tls_certificate
from accesspoint.testing.services import free_port
from tests.conformance.bed import (
    FOUR_CORNER,
    INITIATOR,
    RESPONDER,
    UNREGISTERED,
    XML_PAYLOAD,
    Bed,
    new_message_id,
)

CONFIGURED_CIPHERS = "ECDHE+AESGCM"
TLS_1_0, TLS_1_1, TLS_1_2, SSL_3_0 = 0x0301, 0x0302, 0x0303, 0x0300
GOOD_SUITE = 0xC02F  # TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256: forward secrecy and AEAD, in the configured list
RSA_KX_SUITE = 0x009C  # TLS_RSA_WITH_AES_128_GCM_SHA256: no forward secrecy, outside the list
HANDSHAKE, ALERT = 0x16, 0x15
SERVER_HELLO = 0x02


@dataclass(frozen=True, slots=True)
class TlsAccessPoint:
    """The TLS-listening access point: its port and settings file."""

    port: int
    settings: Path


@pytest.fixture(scope="module")
def tls_access_point(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsAccessPoint]:
    """``accesspoint serve`` with TLS (1.2 and up, ECDHE+AESGCM), the bed's C3 P-Modes and keys."""
    home = tmp_path_factory.mktemp("tls-access-point")
    shutil.copyfile(bed.folder / "c3" / "pmodes.yaml", home / "pmodes.yaml")
    settings = json.loads((bed.folder / "c3" / "server.yaml").read_text())
    port = free_port()
    certificate = tls_certificate(make_ca("Conformance TLS CA"), "c3.conformance.test", home / "tls")
    settings.update(
        listen={"host": "127.0.0.1", "port": port},
        storage=str(home / "data"),
        webhooks=[],
        tls={**certificate, "min_version": "1.2", "ciphers": CONFIGURED_CIPHERS},
    )
    (home / "server.yaml").write_text(json.dumps(settings))
    with (home / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "accesspoint", "serve", "--config", str(home / "server.yaml")],
            stdout=log,
            stderr=log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        _wait_for_tls(port, process, home / "server.log")
        yield TlsAccessPoint(port, home / "server.yaml")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_for_tls(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            _get_health(port, _client(ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"the TLS access point did not answer:\n{log.read_text()[-2000:]}")


def _client(*, ciphers: str, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> ssl.SSLContext:
    """A client offering exactly ``ciphers`` up to ``maximum`` (the server's certificate is not the point here)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    context.set_ciphers(ciphers)
    return context


def _get_health(port: int, context: ssl.SSLContext) -> tuple[int, str | None, str | None]:
    """Handshake, GET /health: (HTTP status, TLS version, cipher suite)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        status_line = tls.recv(64).split(b"\r\n", 1)[0]
        cipher = tls.cipher()
        return int(status_line.split()[1]), tls.version(), None if cipher is None else cipher[0]


# ---------------------------------------------------------------------------- hand-made ClientHello records


def _vector(data: bytes, length_bytes: int) -> bytes:
    return len(data).to_bytes(length_bytes, "big") + data


def _extension(kind: int, data: bytes) -> bytes:
    return kind.to_bytes(2, "big") + _vector(data, 2)


def client_hello(version: int, suites: list[int]) -> bytes:
    """A ClientHello record offering ``version`` (no supported_versions extension) and ``suites``."""
    body = version.to_bytes(2, "big") + os.urandom(32) + b"\x00"  # random, empty session id
    body += _vector(b"".join(s.to_bytes(2, "big") for s in suites), 2) + b"\x01\x00"  # suites, null compression
    if version >= TLS_1_0:
        groups = _vector(b"\x00\x1d\x00\x17", 2)  # x25519, secp256r1
        algorithms = _vector(b"\x08\x04\x04\x01\x04\x03", 2)  # rsa_pss_rsae_sha256, rsa_pkcs1_sha256, ecdsa_p256
        extensions = _extension(0x000A, groups) + _extension(0x000B, b"\x01\x00") + _extension(0x000D, algorithms)
        body += _vector(extensions, 2)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    record_version = min(version, TLS_1_0) if version >= TLS_1_0 else version
    return bytes([HANDSHAKE]) + record_version.to_bytes(2, "big") + _vector(handshake, 2)


def ssl2_client_hello() -> bytes:
    """An SSL 2.0 CLIENT-HELLO (the two-byte record header with its high bit set)."""
    specs = bytes.fromhex("0100800700c0")  # SSL_CK_RC4_128_WITH_MD5, SSL_CK_DES_192_EDE3_CBC_WITH_MD5
    challenge = os.urandom(16)
    body = b"\x01\x00\x02" + len(specs).to_bytes(2, "big") + b"\x00\x00" + len(challenge).to_bytes(2, "big")
    body += specs + challenge
    return (0x8000 | len(body)).to_bytes(2, "big") + body


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server sent back to a ClientHello: a ServerHello (and its version), an alert, or nothing (asyncio's
    TLS server may close the connection on a failed handshake before its alert is out)."""

    server_hello: bool
    version: int | None = None
    alert: int | None = None


def offer(port: int, hello: bytes) -> Answer:
    """Send a ClientHello and read the server's first record."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(hello)
        head = b""
        try:
            while len(head) < 11:
                chunk = sock.recv(11 - len(head))
                if not chunk:
                    break
                head += chunk
        except ConnectionResetError:
            pass
    if len(head) >= 11 and head[0] == HANDSHAKE and head[5] == SERVER_HELLO:
        return Answer(True, version=int.from_bytes(head[9:11], "big"))
    if len(head) >= 7 and head[0] == ALERT:
        return Answer(False, alert=head[6])
    return Answer(False)


# -------------------------------------------------------------------------------------------- assertions


def test_as4_cp_ta39(tls_access_point: TlsAccessPoint, tmp_path: Path) -> None:
    """TLS configurable. Prerequisite: the MSH terminates TLS. Predicate: its TLS version and cipher suites can
    be configured: the settings take them (and refuse a cipher list OpenSSL cannot use), and the listener keeps
    to them (a suite Python's default list has but the configured one leaves out is refused)."""
    config = load_config(tls_access_point.settings)
    assert config.tls is not None and config.tls.ciphers == CONFIGURED_CIPHERS
    offered = {c["name"] for c in server_context(config.tls).get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert offered and all(name.startswith("ECDHE-") and "GCM" in name for name in offered)
    settings = json.loads(tls_access_point.settings.read_text())
    settings["tls"]["min_version"] = "1.3"
    stricter = tmp_path / "server.yaml"
    stricter.write_text(json.dumps(settings))
    strict = load_config(stricter).tls
    assert strict is not None and server_context(strict).minimum_version is ssl.TLSVersion.TLSv1_3
    settings["tls"]["ciphers"] = "NO-SUCH-CIPHER"
    stricter.write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=r"field tls\.ciphers"):
        load_config(stricter)
    with pytest.raises(ssl.SSLError):
        _get_health(tls_access_point.port, _client(ciphers="ECDHE-RSA-CHACHA20-POLY1305"))


@pytest.mark.parametrize("version", [TLS_1_0, TLS_1_1], ids=["tls1.0", "tls1.1"])
def test_as4_cp_ta40(tls_access_point: TlsAccessPoint, version: int) -> None:
    """TLS 1.0/1.1 refused. Prerequisite: the RMSH on TLS 1.2, the SMSH offering TLS 1.0 or 1.1. Predicate: no
    connection (the same ClientHello offering TLS 1.2 gets a ServerHello)."""
    assert offer(tls_access_point.port, client_hello(TLS_1_2, [GOOD_SUITE])) == Answer(True, version=TLS_1_2)
    answer = offer(tls_access_point.port, client_hello(version, [GOOD_SUITE, 0xC013, 0x002F]))
    assert not answer.server_hello, answer


@pytest.mark.parametrize("version", ["ssl2", "ssl3"])
def test_as4_cp_ta41(tls_access_point: TlsAccessPoint, version: str) -> None:
    """SSL 2.0/3.0 refused. Prerequisite: the SMSH offering SSL 2.0 or 3.0. Predicate: no connection."""
    hello = ssl2_client_hello() if version == "ssl2" else client_hello(SSL_3_0, [0x002F, 0x000A])
    answer = offer(tls_access_point.port, hello)
    assert not answer.server_hello, answer


def test_as4_cp_ta42(tls_access_point: TlsAccessPoint) -> None:
    """Bad cipher refused. Prerequisite: TLS 1.2 with a cipher suite outside the accepted list (RSA key
    transport, no forward secrecy). Predicate: no connection."""
    assert offer(tls_access_point.port, client_hello(TLS_1_2, [GOOD_SUITE])).server_hello
    answer = offer(tls_access_point.port, client_hello(TLS_1_2, [RSA_KX_SUITE]))
    assert not answer.server_hello, answer
    with pytest.raises(ssl.SSLError):
        _get_health(tls_access_point.port, _client(ciphers="AES128-GCM-SHA256"))


def _as4_message(bed: Bed) -> tuple[str, str, bytes]:
    """C2's signed and encrypted message for C3 under SIMPLE_ONEWAY (1.15): (MessageId, Content-Type, body)."""
    profile = bed.profiles["1.15"]
    message_id = new_message_id("ta43")
    user = UserMessage(
        message_info=MessageInfo(message_id, datetime.now(UTC)),
        party_info=PartyInfo(
            Party((PartyId(profile.c2_party, UNREGISTERED),), INITIATOR),
            Party((PartyId(profile.c3_party, UNREGISTERED),), RESPONDER),
        ),
        collaboration_info=CollaborationInfo(Service("SRV_SIMPLE_ONEWAY"), "ACT_SIMPLE_ONEWAY", "ta43"),
        message_properties=FOUR_CORNER,
    )
    payload = Payload(XML_PAYLOAD.content_id, XML_PAYLOAD.mime_type, lambda: [XML_PAYLOAD.data])
    secured = secure_message(
        user,
        [payload],
        profile.policy("SIMPLE_ONEWAY"),
        signing_key=profile.c2_signing,
        recipient_certificate=profile.c3_decryption.certificate,
    )
    return message_id, secured.packed.content_type, secured.packed.to_bytes()


def test_as4_cp_ta43(bed: Bed, tls_access_point: TlsAccessPoint) -> None:
    """Good cipher works. Prerequisite: the RMSH on TLS 1.2 with its list of accepted suites, the SMSH on TLS 1.2
    with a suite from that list (ECDHE) submitting an AS4 message. Predicate: the RMSH answers HTTP 2xx (here with
    its receipt)."""
    message_id, content_type, body = _as4_message(bed)
    context = _client(ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    request = urllib.request.Request(
        f"https://127.0.0.1:{tls_access_point.port}/as4", data=body, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
        status, answer = response.status, read_message(response.headers["Content-Type"], response.read())
    receipt = answer.parsed.header
    assert 200 <= status < 300
    assert isinstance(receipt, SignalMessage) and receipt.receipt is not None
    assert receipt.message_info.ref_to_message_id == message_id
    assert _get_health(tls_access_point.port, context)[1:] == ("TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256")


def test_tls_settings_name_the_field(tmp_path: Path) -> None:
    """A min_version the listener does not offer is refused with the file and field."""
    ca = make_ca("Settings CA")
    files = tls_certificate(ca, "settings.test", tmp_path / "tls")
    settings = {
        "pmodes": "pmodes.yaml",
        "keys": {"signing": {"key": files["key"], "certificate": files["certificate"]}},
        "tls": {**files, "min_version": "1.1"},
    }
    (tmp_path / "server.yaml").write_text(json.dumps(settings))
    with pytest.raises(ConfigError, match=r"field tls\.min_version: '1\.1'"):
        load_config(tmp_path / "server.yaml")
