"""What unauthenticated bodies may cost a running access point (a real process, measured from /proc): refused
messages leave no spool file open and no memory held; a body declared too large is refused before it is read;
past the budget of large bodies the answer is 503 with Retry-After, and a client that disconnects gives its share
back; half-sent headers are cut off after the header timeout (slowloris)."""

from __future__ import annotations

import http.client
import socket
import time
from pathlib import Path
from typing import Any

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import ErrorCode
from accesspoint.testing import services
from pmode import load_pmodes
from tests.test_msh_refusals import _user_message
from tests.test_msh_support import BE_KEY, Peer, agreements, error_codes

MiB = 1024 * 1024
BOUNDARY = "spool-test-boundary"


class Body:
    """A MIME body generated as it is read: the root part, then ``size`` bytes of attachment (never in memory)."""

    def __init__(self, root: bytes, size: int) -> None:
        head = (
            f"--{BOUNDARY}\r\nContent-Type: application/soap+xml; charset=UTF-8\r\nContent-ID: <root@x>\r\n\r\n"
        ).encode()
        self._pieces = [head, root, f"\r\n--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n".encode()]
        self._pieces.append(b"Content-ID: <big@x>\r\n\r\n")
        self._tail = f"\r\n--{BOUNDARY}--\r\n".encode()
        self._left = size
        self.length = sum(map(len, self._pieces)) + size + len(self._tail)

    def read(self, wanted: int = 256 * 1024) -> bytes:
        """The next bytes (http.client reads a body object like a file)."""
        if self._pieces:
            return self._pieces.pop(0)
        if self._left > 0:
            chunk = min(wanted, self._left, 1024 * 1024)
            self._left -= chunk
            return b"A" * chunk
        tail, self._tail = self._tail, b""
        return tail


CONTENT_TYPE = f'multipart/related; type="application/soap+xml"; boundary="{BOUNDARY}"; start="<root@x>"'


def post(port: int, body: Body) -> tuple[int, dict[str, str], bytes]:
    """POST a generated body to /as4 with its Content-Length; (status, headers, answer)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST", "/as4", body=body, headers={"Content-Type": CONTENT_TYPE, "Content-Length": str(body.length)}
        )
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def spool_files(pid: int) -> list[str]:
    """The deleted-but-open files a process holds (spooled parts nobody closed)."""
    return [path for path in services.open_files(pid) if path.endswith("(deleted)")]


def receiver(tmp_path: Path, **settings: Any) -> Peer:
    """Belgium alone, with the settings given."""
    port = services.free_port()
    url = f"http://127.0.0.1:{port}/as4"
    return Peer(tmp_path / "be", "partner-115", BE_KEY, port, agreements("partner-115", url, url), settings=settings)


def unknown_service(peer: Peer) -> bytes:
    """A well-formed, unsigned user message for a service no P-Mode has, without PartInfo: with an attachment it
    is refused (EBMS:0011, a part no PartInfo describes) once the whole body has been read and spooled."""
    (route,) = [r for r in load_pmodes(peer.folder / "pmodes.yaml").routes() if r.pmode.id == "se-to-be"]
    message = _user_message(route, "spool@se", service="urn:example:service:unknown", action="Unknown")
    return serialize(build_envelope(message))


def test_refused_messages_leave_no_spool_file_open_and_no_memory_held(tmp_path: Path) -> None:
    """Three 32 MiB messages read and refused, one declared as 1 GiB refused before it is read: afterwards no
    deleted spool file is open and RSS is back within a few MiB (the issue measured 3 x 1 GiB held open)."""
    peer = receiver(tmp_path, max_message_size=256 * MiB, limits={"spool": "512MiB"})
    peer.start()
    try:
        assert peer.process is not None
        pid = peer.process.pid
        root = unknown_service(peer)
        post(peer.port, Body(root, 1024))  # warm up: the first request loads what every later one uses
        rss_before, files_before = services.rss_bytes(pid), services.open_files(pid)
        started = time.monotonic()
        for _ in range(3):
            status, headers, answer = post(peer.port, Body(root, 32 * MiB))
            assert status == 200 and error_codes(headers["Content-Type"], answer) == [
                ErrorCode.EXTERNAL_PAYLOAD_ERROR.code
            ]
        read_seconds = time.monotonic() - started
        declared = Body(root, 1024 * MiB)
        started = time.monotonic()
        status, headers, answer = post_head_only(peer.port, declared.length)
        refused_seconds = time.monotonic() - started
        assert status == 200 and error_codes(headers["Content-Type"], answer) == [ErrorCode.POLICY_NONCOMPLIANCE.code]
        rss_after, files_after = services.rss_bytes(pid), services.open_files(pid)
        print(
            f"\n/as4: 3 x 32 MiB refused in {read_seconds:.1f} s, 1 GiB declared refused in {refused_seconds:.2f} s;"
            f" RSS {rss_before / MiB:.0f} -> {rss_after / MiB:.0f} MiB; open fds {len(files_before)} ->"
            f" {len(files_after)}; deleted files held: {len(spool_files(pid))}"
        )
        assert spool_files(pid) == []
        assert services.files_only(files_after) == services.files_only(files_before)
        assert rss_after - rss_before < 32 * MiB
    finally:
        peer.stop()


def post_head_only(port: int, length: int) -> tuple[int, dict[str, str], bytes]:
    """Send only the headers of a POST declaring ``length`` bytes and read the answer (none of the body follows)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        head = (
            f"POST /as4 HTTP/1.1\r\nHost: x\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
        sock.sendall(head)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, dict(response.getheaders()), response.read()


def test_past_the_large_request_budget_the_answer_is_503_and_a_disconnect_gives_the_share_back(tmp_path: Path) -> None:
    """One large body at a time: while one streams, another gets 503 with Retry-After before it is read; once the
    first client hangs up mid-body, its share and its spool file are released and a large body is taken again."""
    peer = receiver(tmp_path, max_message_size=64 * MiB, limits={"large_requests": 1, "retry_after": "7s"})
    peer.start()
    try:
        assert peer.process is not None
        pid = peer.process.pid
        root = unknown_service(peer)
        body = Body(root, 32 * MiB)
        holding = socket.create_connection(("127.0.0.1", peer.port), timeout=30)
        head = f"POST /as4 HTTP/1.1\r\nHost: x\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {body.length}\r\n\r\n"
        holding.sendall(head.encode())
        for _ in range(8):  # the root part and 7 MiB of the attachment: a spool file is open now
            holding.sendall(body.read(MiB))
        deadline = time.monotonic() + 10
        while not spool_files(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool_files(pid), "the first body is being spooled to a file"
        status, headers, _answer = post(peer.port, Body(root, 8 * MiB))
        assert (status, headers.get("Retry-After")) == (503, "7")
        holding.close()  # the client goes away mid-body
        deadline = time.monotonic() + 10
        while spool_files(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert spool_files(pid) == [], "the disconnected request's spool file is closed"
        status, headers, answer = post(peer.port, Body(root, 8 * MiB))
        assert status == 200 and error_codes(headers["Content-Type"], answer) == [ErrorCode.EXTERNAL_PAYLOAD_ERROR.code]
    finally:
        peer.stop()


def test_half_sent_headers_are_cut_off_after_the_header_timeout(tmp_path: Path) -> None:
    """A client trickling a header byte every 200 ms is disconnected once limits.header_timeout (1 s) has passed."""
    peer = receiver(tmp_path, limits={"header_timeout": "1s"})
    peer.start()
    try:
        with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
            sock.sendall(b"POST /as4 HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            closed_after = None
            for byte in b"X-Slow: " + b"a" * 200:
                time.sleep(0.2)
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed_after = time.monotonic() - started
                    break
                try:
                    if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":  # the server closed its side
                        closed_after = time.monotonic() - started
                        break
                except BlockingIOError:
                    continue  # still open, nothing to read
        print(f"\nslowloris: connection closed after {closed_after} s of trickled headers")
        assert closed_after is not None and closed_after < 5
    finally:
        peer.stop()
