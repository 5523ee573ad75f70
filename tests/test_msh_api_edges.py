"""The backend API at its edges: idempotent submissions, 503 while the database is away, bodies past their limits,
bad queries and multipart bodies, and tokens scoped to P-Modes or parties (an in-memory pair of access points)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accesspoint.core.envelope import parse_envelope
from accesspoint.core.model import UserMessage
from accesspoint.core.summary import header_json
from accesspoint.msh import end_to_end
from accesspoint.msh.views import message_json
from accesspoint.store import Direction, EvidenceKind
from tests.inmemory import AUTH, Node, Pair, database_away
from tests.test_msh import UNREGISTERED
from tests.test_msh_multipart import _multipart
from tests.test_msh_support import submission

READER = "reader-of-se-to-be-0123456789"
PARTY_READER = "reader-of-the-be-party-0123"
SUBMITTER = "submitter-on-request-reply-01"


async def post(node: Node, body: bytes, content_type: str, **headers: str) -> tuple[int, dict[str, str], Any]:
    """POST a submission with extra headers: (status, headers, JSON)."""
    assert node.http is not None
    sent = {**AUTH, "Content-Type": content_type, **headers}
    async with node.http.post(node.base + "/api/v1/messages", data=body, headers=sent) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def get(node: Node, path: str, token: str) -> tuple[int, Any]:
    """GET with another token: (status, JSON)."""
    assert node.http is not None
    async with node.http.get(node.base + path, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json(content_type=None)


def as_json(document: dict[str, Any]) -> bytes:
    """A submission's JSON body."""
    return json.dumps(document).encode()


async def test_a_retried_submission_gets_its_first_answer_and_another_request_under_its_key_is_refused(
    pair_factory: Callable[..., Pair],
) -> None:
    """Same key and content -> the original 202 and one message; other content under the key -> 409; MessageId
    alike, and a multipart retry with a new boundary is the same request."""
    pair = pair_factory()
    sweden = pair.se
    await sweden.start()
    first = as_json(submission("se-to-be", b"<a/>", "idem-1@se"))
    status, _h, answer = await post(sweden, first, "application/json", **{"Idempotency-Key": "order-17"})
    assert status == 202
    # The same document, laid out differently: the same request.
    relaid = json.dumps(json.loads(first), indent=2, sort_keys=True).encode()
    status, _h, again = await post(sweden, relaid, "application/json", **{"Idempotency-Key": "order-17"})
    assert (status, again) == (202, answer)
    other = as_json(submission("se-to-be", b"<b/>", "idem-2@se"))
    status, _h, problem = await post(sweden, other, "application/json", **{"Idempotency-Key": "order-17"})
    assert (status, problem["title"]) == (409, "idempotency-conflict")
    # Without a key, a MessageId names the request: the same body is answered again, another one is a duplicate.
    status, _h, again = await post(sweden, first, "application/json")
    assert (status, again) == (202, answer)
    changed = as_json(submission("se-to-be", b"<changed/>", "idem-1@se"))
    status, _h, problem = await post(sweden, changed, "application/json")
    assert (status, problem["title"]) == (409, "duplicate")
    # A generated MessageId under a key: the retry gets the message the first attempt made.
    unnamed = {k: v for k, v in submission("se-to-be", b"<c/>", "x").items() if k != "message_id"}
    status, _h, made = await post(sweden, as_json(unnamed), "application/json", **{"Idempotency-Key": "k-3"})
    assert status == 202
    status, _h, remade = await post(sweden, as_json(unnamed), "application/json", **{"Idempotency-Key": "k-3"})
    assert (status, remade["message_id"]) == (202, made["message_id"])
    # Multipart: each attempt has a boundary of its own, the content is what counts.
    parts = [("metadata", "application/json", as_json({"pmode": "se-to-be", "message_id": "idem-mp@se"}))]
    parts.append(("doc", "application/pdf", b"%PDF-1.7 a letter"))
    replies = [await post(sweden, *_multipart(parts)) for _ in range(2)]
    assert [status for status, _h, _a in replies] == [202, 202] and replies[0][2] == replies[1][2]
    outgoing = sorted(m["message_id"] for m in await sweden.messages(direction="out"))
    assert outgoing == sorted(["idem-1@se", "idem-mp@se", made["message_id"]])
    status, _h, problem = await post(sweden, first, "application/json", **{"Idempotency-Key": "bad key"})
    assert (status, problem["title"]) == (400, "invalid-idempotency-key")


async def test_while_the_database_is_away_a_submission_is_answered_503_and_nothing_is_stored(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """503 problem+json with Retry-After while the store cannot connect; stored nothing; then 202 on retry."""
    pair = pair_factory()
    sweden = pair.se
    await sweden.start()
    store = sweden.store
    body = as_json(submission("se-to-be", b"<a/>", "away-1@se"))
    async with database_away(store, tmp_path):
        status, headers, problem = await post(sweden, body, "application/json")
        assert (status, problem["title"], problem["status"]) == (503, "unavailable", 503)
        assert headers["Content-Type"].startswith("application/problem+json") and int(headers["Retry-After"]) > 0
    assert await store.get(Direction.OUT, "away-1@se") is None
    assert (await post(sweden, body, "application/json"))[0] == 202


async def test_a_json_submission_past_its_limit_is_refused_with_413_pointing_to_multipart(
    pair_factory: Callable[..., Pair],
) -> None:
    """limits.json_submission: a larger JSON body is 413 (declared or streamed) and names multipart instead."""
    pair = pair_factory()
    sweden = pair.se
    pair.configure(sweden, limits={"json_submission": "64KiB"})
    await sweden.start()
    body = as_json(submission("se-to-be", b"x" * 100_000, "big-1@se"))
    status, _h, problem = await post(sweden, body, "application/json")
    assert (status, problem["title"]) == (413, "too-large") and "multipart/form-data" in problem["detail"]

    async def chunked() -> Any:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    assert sweden.http is not None
    headers = {**AUTH, "Content-Type": "application/json"}
    async with sweden.http.post(sweden.base + "/api/v1/messages", data=chunked(), headers=headers) as response:
        assert response.status == 413
    small = as_json(submission("se-to-be", b"x" * 1000, "small-1@se"))
    assert (await post(sweden, small, "application/json"))[0] == 202


async def test_bad_queries_and_malformed_multipart_bodies_get_400_problems(pair_factory: Callable[..., Pair]) -> None:
    """limit outside 1..1000 or not a number is 400 (it once returned every row); a part header that does not
    parse is 400 (it once was a 500)."""
    pair = pair_factory()
    sweden = pair.se
    await sweden.start()
    for limit in ("-1", "0", "1001", "ten"):
        status, problem = await sweden.api("GET", f"/api/v1/messages?limit={limit}")
        assert (status, problem["title"]) == (400, "invalid-query"), limit
    boundary = uuid.uuid4().hex
    broken = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="metadata"\r\nno colon in this header line\r\n\r\n'
        f"{{}}\r\n--{boundary}--\r\n"
    ).encode()
    status, _h, problem = await post(sweden, broken, f"multipart/form-data; boundary={boundary}")
    assert (status, problem["title"]) == (400, "invalid-submission"), problem


async def test_a_token_scoped_to_a_pmode_or_party_sees_and_submits_only_those_messages(
    pair_factory: Callable[..., Pair],
) -> None:
    """read:pmode= and read:party= narrow searches and reads (others' messages are not found); submit:pmode=
    refuses other P-Modes with 403 before anything is stored."""
    pair = pair_factory()
    sweden = pair.se
    everything = AUTH["Authorization"].removeprefix("Bearer ")
    pair.configure(
        sweden,
        api_tokens=[
            everything,
            {"name": "se-to-be reader", "token": READER, "scopes": ["read:pmode=se-to-be"]},
            {"name": "party reader", "token": PARTY_READER, "scopes": [f"read:party={UNREGISTERED}::AP-BE-0115"]},
            {"name": "request-reply submitter", "token": SUBMITTER,
             "scopes": ["submit:pmode=se-be-request-reply", "read:pmode=se-be-request-reply"]},
        ],
    )  # fmt: skip
    await sweden.start()
    assert (await sweden.api("POST", "/api/v1/messages", submission("se-to-be", b"<a/>", "s1@se")))[0] == 202
    pulled = submission("be-pulls-from-se", b"<b/>", "s2@se")
    assert (await sweden.api("POST", "/api/v1/messages", pulled))[0] == 202
    status, found = await get(sweden, "/api/v1/messages?direction=out", READER)
    assert status == 200 and [m["message_id"] for m in found["messages"]] == ["s1@se"]
    assert (await get(sweden, "/api/v1/messages/s1@se", READER))[0] == 200
    assert (await get(sweden, "/api/v1/messages/s2@se", READER))[0] == 404
    # Belgium receives both (the pulled one too): a party scope follows From or To, whatever the P-Mode.
    status, found = await get(sweden, "/api/v1/messages", PARTY_READER)
    assert status == 200 and [m["message_id"] for m in found["messages"]] == ["s1@se", "s2@se"]
    assert (await get(sweden, "/api/v1/messages/s2@se", PARTY_READER))[0] == 200
    assert sweden.http is not None
    denied = {"Authorization": f"Bearer {SUBMITTER}", "Content-Type": "application/json"}
    body = as_json(submission("se-to-be", b"<c/>", "s3@se"))
    async with sweden.http.post(sweden.base + "/api/v1/messages", data=body, headers=denied) as response:
        assert response.status == 403 and (await response.json(content_type=None))["title"] == "forbidden"
    assert await sweden.store.get(Direction.OUT, "s3@se") is None
    writer = {"Authorization": f"Bearer {READER}", "Content-Type": "application/json"}
    async with sweden.http.post(sweden.base + "/api/v1/messages", data=body, headers=writer) as response:
        assert response.status == 403, "a token without the submit scope"


async def _composed(node: Node, message_id: str, direction: Direction) -> str:
    """The message's answer composed from the store's separate reads and a parse of its raw message (the
    reference ``GET /api/v1/messages/{id}`` must match byte for byte)."""
    store = node.store
    message = await store.get(direction, message_id)
    assert message is not None
    document = message_json(message)
    answer = await store.end_to_end(message_id) if direction is Direction.OUT else None
    if answer is not None:
        document["end_to_end"] = end_to_end.to_json(answer)
    raw = await store.evidence(direction, message_id, EvidenceKind.RAW_MESSAGE)
    header = parse_envelope(b"".join([c async for c in store.read(raw[0])])).messaging.message if raw else None
    document["header"] = header_json(header) if isinstance(header, UserMessage) else None
    document["payloads"] = [
        {"content_id": p.content_id, "mime_type": p.mime_type, "size": p.size, "sha256": p.sha256,
         "properties": p.properties}
        for p in await store.payloads(message)
    ]  # fmt: skip
    document["history"] = [
        {"from": None if t.source is None else str(t.source), "to": str(t.target), "at": t.at.isoformat(),
         "detail": t.detail}
        for t in await store.history(message)
    ]  # fmt: skip
    evidence = await store.evidence(direction, message_id)
    document["evidence"] = [{"kind": str(e.kind), "size": e.size, "sha256": e.sha256} for e in evidence]
    return json.dumps(document)


async def test_a_message_reads_as_its_stored_rows_and_header_byte_for_byte_sent_and_received(
    pair_factory: Callable[..., Pair],
) -> None:
    """GET /api/v1/messages/{id} answers a sent and a received message with its payloads, history, evidence and
    header exactly as the store's rows and the stored envelope give them."""
    pair = pair_factory()
    sweden, belgium = pair.se, pair.be
    await belgium.start()
    await sweden.start()
    letter = submission("se-to-be", b"<letter/>", "pinned@se", properties={"originalSender": "urn:se:s"})
    letter["payloads"].append({"content_id": "annex@se", "mime_type": "application/pdf", "data": "JVBERi0x",
                               "properties": {"role": "annex"}})  # fmt: skip
    assert (await sweden.api("POST", "/api/v1/messages", letter))[0] == 202
    sent = await sweden.until("pinned@se", {"delivered", "failed"})
    assert sent["state"] == "delivered", sent
    await belgium.until("pinned@se", {"received"}, direction="in")
    for node, direction in ((sweden, Direction.OUT), (belgium, Direction.IN)):
        assert node.http is not None
        path = f"/api/v1/messages/pinned@se?direction={direction}"
        async with node.http.get(node.base + path, headers=AUTH) as response:
            assert response.status == 200
            text = await response.text()
        assert text == await _composed(node, "pinned@se", direction)
        document = json.loads(text)
        assert [p["content_id"] for p in document["payloads"]] == ["letter@se", "annex@se"]
        assert document["payloads"][1]["properties"]["role"] == "annex"
        assert document["header"]["message_properties"][0]["value"] == "urn:se:s"
        assert "raw-message" in {e["kind"] for e in document["evidence"]} and document["history"]
    assert "partner-receipt" in {e["kind"] for e in sent["evidence"]}
