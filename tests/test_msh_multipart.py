"""Multipart submissions to an access point: a metadata JSON part and file parts, delivered as sent."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable

from tests.inmemory import Pair

MB = 1024 * 1024


def _multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (form name, Content-Type, bytes) parts, and its Content-Type."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, content_type, data in parts:
        disposition = f'form-data; name="{name}"' + ("" if name == "metadata" else f'; filename="{name}.bin"')
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {content_type}\r\n\r\n"
        chunks += [head.encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


async def test_multipart_submission_streams_files_to_the_store_and_they_arrive_intact(
    pair_factory: Callable[..., Pair],
) -> None:
    """Metadata first, then a 3 MiB described part and an undescribed one; bad forms get problem bodies."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    metadata = {
        "pmode": "se-to-be",
        "message_id": "mp1@se",
        "properties": {"originalSender": "urn:se:sender"},
        "payloads": [{"part": "doc", "content_id": "doc@se", "mime_type": "application/pdf"}],
    }
    big, note = os.urandom(3 * MB), b"a note in plain text"
    body, content_type = _multipart(
        [
            ("metadata", "application/json", json.dumps(metadata).encode()),
            ("doc", "application/octet-stream", big),
            ("note@se", "text/plain", note),
        ]
    )
    await belgium.start()
    await sweden.start()
    status, stored = await sweden.call("POST", "/api/v1/messages", body, content_type)
    assert status == 202, stored
    assert stored["message_id"] == "mp1@se" and stored["state"] == "submitted"
    assert not any((sweden.folder / "data" / "submissions").iterdir())  # the spooled uploads are gone
    assert (await sweden.until("mp1@se", {"delivered", "failed"}))["state"] == "delivered"
    received = await belgium.until("mp1@se", {"received"}, direction="in")
    parts = {p["content_id"]: p for p in received["payloads"]}
    assert parts["doc@se"]["mime_type"] == "application/pdf"
    assert parts["doc@se"]["sha256"] == hashlib.sha256(big).hexdigest()
    assert (parts["note@se"]["mime_type"], parts["note@se"]["size"]) == ("text/plain", len(note))

    no_metadata, kind = _multipart([("doc", "application/octet-stream", b"x")])
    status, problem = await sweden.call("POST", "/api/v1/messages", no_metadata, kind)
    assert status == 400 and "metadata" in problem["detail"]
    only_metadata, kind = _multipart([("metadata", "application/json", json.dumps({"pmode": "se-to-be"}).encode())])
    status, problem = await sweden.call("POST", "/api/v1/messages", only_metadata, kind)
    assert status == 422 and "payloads" in problem["detail"]
