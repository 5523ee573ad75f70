"""The backend REST API, the ``/api/v1`` sub-application: submit, search, read, download, acknowledge.

Every route but the OpenAPI document needs ``Authorization: Bearer <token>`` with the scope of its action
(``submit``, ``read``, ``acknowledge``; a token given as a plain secret has all three). A scope narrowed to P-Modes
or parties (``read:pmode=se-to-no``, ``submit:party=0007:5567212345``) shows and takes only those messages: others
are not found. Errors are RFC 9457 problem bodies. Both come from ``accesspoint.servicekit``.

A submission is stored and answered 202, or not stored at all (a 4xx, or 503 with ``Retry-After`` while the
database is away). A retry under the same ``Idempotency-Key`` header or MessageId gets the original 202 answer and
stores nothing; another request under the same key is refused (409). Bodies are admitted before they are read
(``limits``): a JSON submission past ``limits.json_submission`` is refused with 413 pointing to multipart, where
payloads stream to disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint.msh import broadcasts, end_to_end, mailings
from accesspoint.msh.context import Context
from accesspoint.msh.headers import raw_header
from accesspoint.msh.holder_encryption import HolderKeyUnavailable
from accesspoint.msh.limits import Admission, BodyRefused, declared_length
from accesspoint.msh.openapi import OPENAPI
from accesspoint.msh.submissions import FieldRefused, Submissions, part_properties
from accesspoint.msh.views import message_json
from accesspoint.msh.wire import READ_CHUNK, file_chunks
from accesspoint.servicekit.problems import Problem
from accesspoint.servicekit.tokens import CALLER, BearerAuth, BearerToken
from accesspoint.store import Direction, DuplicateMessage, MessageState, NewPayload, StoredMessage
from accesspoint.store.idempotency import HEADER, MESSAGE_ID, IdempotencyHook, fingerprint, stored_key

METADATA_LIMIT = 1024 * 1024
SEARCH_LIMIT = 1000  # the most messages one search returns
_JSON = "a JSON submission"
OPEN_ROUTES = frozenset({"openapi"})  # route names answered without a token
SUBMIT_ROUTES = frozenset({"submit", "submit-mailing"})  # route names that need the submit scope


def bearer_auth(tokens: tuple[BearerToken, ...]) -> BearerAuth:
    """The API's tokens, with the scopes the settings give them."""
    return BearerAuth(tokens, realm="accesspoint")


def visible(token: BearerToken, action: str, message: StoredMessage) -> bool:
    """Whether a token may ``action`` a message: unrestricted, or its P-Mode or one of its parties is granted."""
    grant = token.grant(action)
    if grant.unrestricted:
        return True
    return (message.pmode_id or "") in grant.only.get("pmode", ()) or bool(
        {message.from_party, message.to_party} & set(grant.only.get("party", ()))
    )


class Api:
    """What the handlers of the API work with."""

    def __init__(self, ctx: Context, submissions: Submissions) -> None:
        self.ctx = ctx
        self.submissions = submissions
        self.auth = bearer_auth(ctx.settings.api_tokens)

    async def find(
        self, request: web.Request, direction: Direction | None = None, *, action: str = "read"
    ) -> StoredMessage:
        """The message the path names (``?direction=`` when the id exists both ways; else outgoing first), if the
        caller's token may ``action`` it: a message it may not see is not found, as one that does not exist."""
        message = await self.ctx.store.visible(*self.wanted(request, direction, action))
        if message is None:
            raise _not_found(request)
        return message

    def wanted(
        self, request: web.Request, direction: Direction | None = None, action: str = "read"
    ) -> tuple[str, list[Direction], Callable[[StoredMessage], bool]]:
        """What the store looks up for the path's message: its id, the directions in the order tried, and the
        check of the caller's token (400 for a ``?direction=`` that is neither)."""
        wanted = request.query.get("direction")
        try:
            if direction is not None:
                directions = [direction]
            else:
                directions = [Direction(wanted)] if wanted else [Direction.OUT, Direction.IN]
        except ValueError:
            raise Problem(400, kind="invalid-query", detail=f"direction {wanted!r} is neither in nor out") from None
        token: BearerToken = request[CALLER]
        return request.match_info["id"], directions, lambda message: visible(token, action, message)

    async def read_multipart(
        self, request: web.Request, spooled: list[Path], admission: Admission
    ) -> tuple[dict[str, Any], list[NewPayload], list[tuple[str, str, str]]]:
        """A ``metadata`` JSON part, then one file part per payload, each streamed to a file as it arrives; also
        each file part's (name, MIME type, SHA-256), for the submission's fingerprint.

        The part's form name is the payload's Content-ID (or ``metadata.payloads[i].part`` names it and gives
        content_id, mime_type and properties); its Content-Type is the payload's MIME type unless metadata says.
        A malformed multipart body (a part header that does not parse, a missing boundary) is a 400.
        """
        try:
            return await self._read_multipart(request, spooled, admission)
        except (ValueError, aiohttp.http_exceptions.HttpProcessingError, AssertionError) as exc:
            # aiohttp's multipart reader says "malformed" with these (an assert for a part without its boundary).
            raise Problem(400, kind="invalid-submission", detail=f"malformed multipart body: {exc}"[:300]) from None

    async def _read_multipart(
        self, request: web.Request, spooled: list[Path], admission: Admission
    ) -> tuple[dict[str, Any], list[NewPayload], list[tuple[str, str, str]]]:
        reader = await request.multipart()
        document: dict[str, Any] | None = None
        files: list[NewPayload] = []
        digests: list[tuple[str, str, str]] = []
        folder = self.ctx.settings.storage / "submissions"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise Problem(400, kind="invalid-submission", detail="nested multipart is not supported")
            if document is None:
                if part.name != "metadata":
                    raise Problem(400, kind="invalid-submission", detail="the first part must be 'metadata' (JSON)")
                raw = bytearray()
                while chunk := await part.read_chunk(READ_CHUNK):
                    raw += chunk
                    if len(raw) > METADATA_LIMIT:
                        raise Problem(400, kind="invalid-submission", detail="the metadata part is too large")
                admission.take(len(raw))
                try:
                    document = _object(bytes(raw))
                except ValueError:
                    raise Problem(400, kind="invalid-json", detail="the metadata part is not a JSON object") from None
                continue
            name = part.name or part.filename or f"part{len(files) + 1}"
            described = _described(document, name)
            handle, path_text = tempfile.mkstemp(dir=folder, prefix="upload-")
            path = Path(path_text)
            spooled.append(path)
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as sink:
                while chunk := await part.read_chunk(READ_CHUNK):
                    total += len(chunk)
                    admission.take(total)  # 413 past max_message_size, 503 past the server's budget
                    digest.update(chunk)
                    await asyncio.to_thread(sink.write, chunk)
            mime = str(described.get("mime_type") or part.headers.get("Content-Type") or "application/octet-stream")
            properties = described.get("properties") or {}
            given = {str(k): str(v) for k, v in properties.items()} if isinstance(properties, dict) else {}
            kept = part_properties(given, f"metadata: payload {name!r}: properties")
            files.append(NewPayload(str(described.get("content_id") or name), mime, file_chunks(path), kept))
            digests.append((name, mime, digest.hexdigest()))
        if document is None:
            raise Problem(400, kind="invalid-submission", detail="no 'metadata' part")
        if not files:
            raise Problem(422, kind="invalid-submission", detail="payloads: at least one file part is required")
        return document, files, digests


API = web.AppKey("api", Api)


def _api(request: web.Request) -> Api:
    return request.config_dict[API]


async def submit(request: web.Request) -> web.Response:
    """POST /api/v1/messages: submit a message (JSON with base64 payloads, or multipart/form-data)."""
    api = _api(request)
    settings = api.ctx.settings
    keys = _idempotency_key(request)
    spooled: list[Path] = []
    try:
        declared = declared_length(request.headers)
        if request.content_type == "multipart/form-data":
            with api.ctx.bodies.admit(declared, limit=settings.max_message_size, what="the submission") as admission:
                document, files, parts = await api.read_multipart(request, spooled, admission)
                return await _submit(request, api, document, files, keys, fingerprint(document, parts))
        with api.ctx.bodies.admit(declared, limit=settings.json_submission_limit, what=_JSON) as admission:
            document = await _json_submission(request, admission)
            return await _submit(request, api, document, None, keys, fingerprint(document))
    except BodyRefused as refused:
        raise _body_problem(refused, multipart=request.content_type != "multipart/form-data") from None
    finally:
        for path in spooled:
            await asyncio.to_thread(path.unlink, missing_ok=True)


async def _submit(
    request: web.Request,
    api: Api,
    document: dict[str, Any],
    files: list[NewPayload] | None,
    header_key: str | None,
    request_sha256: str,
) -> web.Response:
    """Store the submission with its answer under its keys, in one transaction; a retry gets that answer again."""
    token: BearerToken = request[CALLER]
    keys = [stored_key(HEADER, header_key)] if header_key is not None else []
    if document.get("message_id"):
        keys.append(stored_key(MESSAGE_ID, str(document["message_id"])))
    now = api.ctx.clock.now()
    answer = IdempotencyHook(
        token.name, keys, request_sha256, lambda stored: (202, json.dumps(message_json(stored))),
        now=now, keep=api.ctx.settings.idempotency_retention,
    )  # fmt: skip
    try:
        stored = await api.submissions.submit(document, files, hooks=[answer], allowed=_submittable(token))
    except ValueError as exc:
        field = exc.field if isinstance(exc, FieldRefused) else None
        raise Problem(422, kind="invalid-submission", detail=str(exc), field=field) from None
    except HolderKeyUnavailable as exc:
        raise Problem(503, kind="holder-key-unavailable", detail=str(exc), headers={"Retry-After": "30"}) from None
    except DuplicateMessage as exc:
        kept = await api.ctx.idempotency.get(token.name, keys)
        if kept is not None and kept.same_request(request_sha256):
            return web.Response(status=kept.status, text=kept.response, content_type="application/json")
        if kept is not None and header_key is not None:
            detail = f"Idempotency-Key {header_key!r} was used for another request (message {kept.message_id})"
            raise Problem(409, kind="idempotency-conflict", detail=detail) from None
        raise Problem(409, kind="duplicate", detail=f"message id {exc} was already submitted") from None
    return web.json_response(message_json(stored), status=202)


def _submittable(token: BearerToken) -> Callable[[str, str], None]:
    """The check a submission's P-Mode and sender party must pass for this token (403 when they do not)."""

    def check(pmode_id: str, party: str) -> None:
        grant = token.grant("submit")
        if not (grant.unrestricted or pmode_id in grant.only.get("pmode", ()) or party in grant.only.get("party", ())):
            raise Problem(403, kind="forbidden", detail=f"this token may not submit on {pmode_id} as {party}")

    return check


def _idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header (1 to 255 visible ASCII characters; quotes of a structured string dropped)."""
    value = request.headers.get("Idempotency-Key")
    if value is None:
        return None
    key = value.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not 0 < len(key) <= 255 or not all(33 <= ord(c) <= 126 for c in key):
        raise Problem(400, kind="invalid-idempotency-key", detail="Idempotency-Key: 1 to 255 visible ASCII characters")
    return key


def _body_problem(refused: BodyRefused, *, multipart: bool) -> Problem:
    detail = refused.detail
    if refused.status == 413 and multipart:
        detail += "; send larger payloads as multipart/form-data (a metadata part, then one file part per payload)"
    return Problem(refused.status, kind=refused.kind, detail=detail, headers=refused.headers())


async def search(request: web.Request) -> web.Response:
    """GET /api/v1/messages?direction=&state=&pmode=&conversation_id=&ref_to_message_id=&limit=: list messages."""
    query = request.query
    try:
        direction = Direction(query["direction"]) if "direction" in query else None
        state = MessageState(query["state"]) if "state" in query else None
        limit = int(query.get("limit", "100"))
    except ValueError as exc:
        raise Problem(400, kind="invalid-query", detail=str(exc)) from None
    if not 1 <= limit <= SEARCH_LIMIT:
        raise Problem(400, kind="invalid-query", detail=f"limit: {limit} is not between 1 and {SEARCH_LIMIT}")
    grant = request[CALLER].grant("read")
    rows = await _api(request).ctx.store.search(
        direction=direction,
        state=state,
        pmode_id=query.get("pmode"),
        conversation_id=query.get("conversation_id"),
        ref_to_message_id=query.get("ref_to_message_id"),
        limit=limit,
        only=None if grant.unrestricted else grant.only,
    )
    return web.json_response({"messages": [message_json(m) for m in rows]})


async def read(request: web.Request) -> web.Response:
    """GET /api/v1/messages/{id}: a message's state, payloads, history and evidence."""
    api = _api(request)
    store = api.ctx.store
    details = await store.details(*api.wanted(request))  # one transaction
    if details is None:
        raise _not_found(request)
    document = message_json(details.message)
    if details.end_to_end is not None:
        document["end_to_end"] = end_to_end.to_json(details.end_to_end)
    document["header"] = await raw_header(store, details.raw_message, details.raw_inline)
    document["payloads"] = [
        {"content_id": p.content_id, "mime_type": p.mime_type, "size": p.size, "sha256": p.sha256,
         "properties": p.properties}
        for p in details.payloads
    ]  # fmt: skip
    document["history"] = [
        {"from": None if t.source is None else str(t.source), "to": str(t.target), "at": t.at.isoformat(),
         "detail": t.detail}
        for t in details.history
    ]  # fmt: skip
    document["evidence"] = [{"kind": str(e.kind), "size": e.size, "sha256": e.sha256} for e in details.evidence]
    return web.json_response(document)


async def download(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/messages/{id}/payloads/{cid}: stream a payload; a received message is then delivered."""
    api = _api(request)
    store = api.ctx.store
    wanted = request.match_info["cid"]
    found = await store.visible_payload(*api.wanted(request), wanted)  # one transaction, inline bytes included
    if found is None:
        raise _not_found(request)
    message, payload = found
    if payload is None:
        raise Problem(404, kind="not-found", detail=f"message {message.message_id} has no payload {wanted!r}")
    response = web.StreamResponse(headers={"Content-Type": payload.mime_type})
    response.content_length = payload.size
    await response.prepare(request)
    async for chunk in store.read(payload):
        await response.write(chunk)
    await response.write_eof()
    if message.direction is Direction.IN and message.state is MessageState.RECEIVED:
        await store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=api.ctx.clock.now())
    return response


def _not_found(request: web.Request) -> Problem:
    return Problem(404, kind="not-found", detail=f"no message {request.match_info['id']!r}")


async def acknowledge(request: web.Request) -> web.Response:
    """POST /api/v1/messages/{id}/ack: the backend has taken a received message."""
    api = _api(request)
    store, now = api.ctx.store, api.ctx.clock.now()
    message = await api.find(request, Direction.IN, action="acknowledge")
    # A download that just finished may move the message to delivered_to_backend under our feet: then the
    # transition loses the race and the message is read again.
    for _ in range(3):
        if message.state is MessageState.RECEIVED:
            moved = await store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=now)
            message = moved or await api.find(request, Direction.IN, action="acknowledge")
        if message.state is MessageState.DELIVERED_TO_BACKEND:
            moved = await store.transition(message, MessageState.ACKNOWLEDGED, now=now)
            message = moved or await api.find(request, Direction.IN, action="acknowledge")
        if message.state is MessageState.ACKNOWLEDGED:
            break
    if message.state is not MessageState.ACKNOWLEDGED:
        raise Problem(409, kind="conflict", detail=f"message is {message.state}")
    return web.json_response(message_json(message))


async def openapi(_request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: the OpenAPI 3 document of this API."""
    return web.json_response(OPENAPI)


@web.middleware
async def _tokens(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Unknown routes and wrong methods answer 404 / 405 whoever asks.
    name = request.match_info.route.name
    if request.match_info.http_exception is None and name not in OPEN_ROUTES:
        action = "submit" if name in SUBMIT_ROUTES else "acknowledge" if name == "acknowledge" else "read"
        # The token must hold the action at all; what it may do it on (P-Modes, parties) the handler narrows.
        auth = _api(request).auth
        if auth.authenticate(request).grant(action).nothing:
            raise auth.insufficient(action)
    return await handler(request)


def api_application() -> web.Application:
    """The sub-application mounted at ``/api/v1``; its ``Api`` is put on the parent application at start."""
    app = web.Application(middlewares=[_tokens])
    app.router.add_post("/messages", submit, name="submit")
    app.router.add_get("/messages", search)
    app.router.add_get("/messages/{id}", read)
    app.router.add_get("/messages/{id}/payloads/{cid}", download)
    app.router.add_post("/messages/{id}/ack", acknowledge, name="acknowledge")
    app.router.add_get("/openapi.json", openapi, name="openapi")
    broadcasts.add_routes(app)  # operator broadcasts (msh/broadcasts.py)
    mailings.add_routes(app)
    return app


async def _json_submission(request: web.Request, admission: Admission) -> dict[str, Any]:
    raw = await admission.read_all(request.content)  # 413 past limits.json_submission, however it is sent
    try:
        return _object(raw)
    except ValueError:
        raise Problem(400, kind="invalid-json", detail="the body is not a JSON object") from None


def _object(raw: bytes) -> dict[str, Any]:
    """A JSON object (ValueError for anything else)."""
    document = json.loads(raw)
    if not isinstance(document, dict):
        raise ValueError("expected a JSON object")
    return document


def _described(document: dict[str, Any], name: str) -> dict[str, Any]:
    """What the metadata says about the file part with that form name (empty when it says nothing)."""
    for item in document.get("payloads") or ():
        if isinstance(item, dict) and item.get("part") == name:
            return item
    return {}
