"""What the fuzzers (tests/fuzz, ``make fuzz``) found, each pinned by the smallest input that shows it."""

from __future__ import annotations

import pytest

from accesspoint.core.errors import EbmsError
from accesspoint.core.mime import MultipartParser, PartData


def _base64_part(encoded: bytes) -> bytes:
    return (
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + encoded
        + b"\r\n--b--\r\n"
    )


def _decoded(body: bytes, chunk: int) -> bytes | str:
    parser = MultipartParser("b")
    data = b""
    try:
        for start in range(0, len(body), chunk):
            data += b"".join(e.data for e in parser.feed(body[start : start + chunk]) if isinstance(e, PartData))
        parser.close()
    except EbmsError as exc:
        return exc.code
    return data


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (b"aGVs bG8(gd29y*bGQ=", b"hello world"),  # characters outside the alphabet are ignored (RFC 2045 6.8)
        (b"aGk=aGk=", "EBMS:0007"),  # base64 after the padding
        (b"aG=k", "EBMS:0007"),  # '=' inside a quantum
        (b"aGk=\r\n==", b"hi"),  # more '=' after the padding changes nothing
    ],
)
def test_base64_part_decodes_the_same_however_the_body_is_chunked(encoded: bytes, expected: bytes | str) -> None:
    """A base64 part decodes to the same bytes, or fails with EBMS:0007, whether fed whole or byte by byte."""
    body = _base64_part(encoded)
    assert {_decoded(body, size) for size in (len(body), 1, 2, 3, 5, 7)} == {expected}
