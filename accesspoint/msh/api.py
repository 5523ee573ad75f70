"""The backend REST API, the ``/api/v1`` sub-application: submit, search, read, download, acknowledge.

Every route but the OpenAPI document needs ``Authorization: Bearer <token>``; errors are RFC 9457 problem
bodies. Handlers are thin: they read the request, call ``Submissions`` or the store, answer with the JSON view.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from accesspoint.msh import end_to_end, mailings
from accesspoint.msh.context import Context
from accesspoint.msh.headers import stored_header
from accesspoint.msh.openapi import OPENAPI
from accesspoint.msh.problems import problem
from accesspoint.msh.submissions import Submissions, part_properties
from accesspoint.msh.views import message_json
from accesspoint.msh.wire import READ_CHUNK, file_chunks
from accesspoint.store import Direction, DuplicateMessage, MessageState, NewPayload, StoredMessage

METADATA_LIMIT = 1024 * 1024
OPEN_ROUTES = frozenset({"openapi"})  # route names answered without a token


class Api:
    """What the handlers of the API work with."""

    def __init__(self, ctx: Context, submissions: Submissions) -> None:
        self.ctx = ctx
        self.submissions = submissions

    def authorised(self, request: web.Request) -> None:
        """401 unless the request carries one of the API tokens."""
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not any(hmac.compare_digest(token, t) for t in self.ctx.settings.api_tokens):
            raise problem(401, "unauthorised", "a valid Bearer token is required")

    async def find(self, request: web.Request, direction: Direction | None = None) -> StoredMessage:
        """The message the path names (``?direction=`` when the id exists both ways; else outgoing first)."""
        message_id = request.match_info["id"]
        wanted = request.query.get("direction")
        try:
            if direction is not None:
                directions = [direction]
            else:
                directions = [Direction(wanted)] if wanted else [Direction.OUT, Direction.IN]
        except ValueError:
            raise problem(400, "invalid-query", f"direction {wanted!r} is neither in nor out") from None
        for candidate in directions:
            message = await self.ctx.store.get(candidate, message_id)
            if message is not None:
                return message
        raise problem(404, "not-found", f"no message {message_id!r}")

    async def read_multipart(
        self, request: web.Request, spooled: list[Path]
    ) -> tuple[dict[str, Any], list[NewPayload]]:
        """A ``metadata`` JSON part, then one file part per payload, each streamed to a file as it arrives.

        The part's form name is the payload's Content-ID (or ``metadata.payloads[i].part`` names it and gives
        content_id, mime_type and properties); its Content-Type is the payload's MIME type unless metadata says.
        """
        reader = await request.multipart()
        document: dict[str, Any] | None = None
        files: list[NewPayload] = []
        folder = self.ctx.settings.storage / "submissions"
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        total = 0
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader):
                raise problem(400, "invalid-submission", "nested multipart is not supported")
            if document is None:
                if part.name != "metadata":
                    raise problem(400, "invalid-submission", "the first part must be 'metadata' (JSON)")
                raw = await part.read()
                if len(raw) > METADATA_LIMIT:
                    raise problem(400, "invalid-submission", "the metadata part is too large")
                document = _object(raw)
                continue
            name = part.name or part.filename or f"part{len(files) + 1}"
            described = _described(document, name)
            handle, path_text = tempfile.mkstemp(dir=folder, prefix="upload-")
            path = Path(path_text)
            spooled.append(path)
            with os.fdopen(handle, "wb") as sink:
                while chunk := await part.read_chunk(READ_CHUNK):
                    total += len(chunk)
                    if total > self.ctx.settings.max_message_size:
                        raise problem(400, "invalid-submission", "the payloads are larger than this access point takes")
                    await asyncio.to_thread(sink.write, chunk)
            mime = str(described.get("mime_type") or part.headers.get("Content-Type") or "application/octet-stream")
            properties = described.get("properties") or {}
            given = {str(k): str(v) for k, v in properties.items()} if isinstance(properties, dict) else {}
            kept = part_properties(given, f"metadata: payload {name!r}: properties")
            files.append(NewPayload(str(described.get("content_id") or name), mime, file_chunks(path), kept))
        if document is None:
            raise problem(400, "invalid-submission", "no 'metadata' part")
        if not files:
            raise ValueError("payloads: at least one file part is required")
        return document, files


API = web.AppKey("api", Api)


def _api(request: web.Request) -> Api:
    return request.config_dict[API]


async def submit(request: web.Request) -> web.Response:
    """POST /api/v1/messages: submit a message (JSON with base64 payloads, or multipart/form-data)."""
    api = _api(request)
    spooled: list[Path] = []
    try:
        if request.content_type == "multipart/form-data":
            document, files = await api.read_multipart(request, spooled)
        else:
            document, files = await _json_submission(request), None
        stored = await api.submissions.submit(document, files)
    except ValueError as exc:
        raise problem(422, "invalid-submission", str(exc)) from None
    except DuplicateMessage as exc:
        raise problem(409, "duplicate", f"message id {exc} was already submitted") from None
    finally:
        for path in spooled:
            await asyncio.to_thread(path.unlink, missing_ok=True)
    return web.json_response(message_json(stored), status=202)


async def search(request: web.Request) -> web.Response:
    """GET /api/v1/messages?direction=&state=&pmode=&conversation_id=&ref_to_message_id=: list messages."""
    query = request.query
    try:
        direction = Direction(query["direction"]) if "direction" in query else None
        state = MessageState(query["state"]) if "state" in query else None
        limit = min(int(query.get("limit", "100")), 1000)
    except ValueError as exc:
        raise problem(400, "invalid-query", str(exc)) from None
    rows = await _api(request).ctx.store.search(
        direction=direction,
        state=state,
        pmode_id=query.get("pmode"),
        conversation_id=query.get("conversation_id"),
        ref_to_message_id=query.get("ref_to_message_id"),
        limit=limit,
    )
    return web.json_response({"messages": [message_json(m) for m in rows]})


async def read(request: web.Request) -> web.Response:
    """GET /api/v1/messages/{id}: a message's state, payloads, history and evidence."""
    api = _api(request)
    store = api.ctx.store
    message = await api.find(request)
    payloads = await store.payloads(message)
    history = await store.history(message)
    evidence = await store.evidence(message.direction, message.message_id)
    answer = await store.end_to_end(message.message_id) if message.direction is Direction.OUT else None
    document = message_json(message)
    if answer is not None:
        document["end_to_end"] = end_to_end.to_json(answer)
    document["header"] = await stored_header(store, message)
    document["payloads"] = [
        {"content_id": p.content_id, "mime_type": p.mime_type, "size": p.size, "sha256": p.sha256,
         "properties": p.properties}
        for p in payloads
    ]  # fmt: skip
    document["history"] = [
        {"from": None if t.source is None else str(t.source), "to": str(t.target), "at": t.at.isoformat(),
         "detail": t.detail}
        for t in history
    ]  # fmt: skip
    document["evidence"] = [{"kind": str(e.kind), "size": e.size, "sha256": e.sha256} for e in evidence]
    return web.json_response(document)


async def download(request: web.Request) -> web.StreamResponse:
    """GET /api/v1/messages/{id}/payloads/{cid}: stream a payload; a received message is then delivered."""
    api = _api(request)
    store = api.ctx.store
    message = await api.find(request)
    wanted = request.match_info["cid"]
    payload = next((p for p in await store.payloads(message) if p.content_id == wanted), None)
    if payload is None:
        raise problem(404, "not-found", f"message {message.message_id} has no payload {wanted!r}")
    response = web.StreamResponse(headers={"Content-Type": payload.mime_type})
    response.content_length = payload.size
    await response.prepare(request)
    async for chunk in store.read(payload):
        await response.write(chunk)
    await response.write_eof()
    if message.direction is Direction.IN and message.state is MessageState.RECEIVED:
        await store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=api.ctx.clock.now())
    return response


async def acknowledge(request: web.Request) -> web.Response:
    """POST /api/v1/messages/{id}/ack: the backend has taken a received message."""
    api = _api(request)
    store, now = api.ctx.store, api.ctx.clock.now()
    message = await api.find(request, Direction.IN)
    # A download that just finished may move the message to delivered_to_backend under our feet: then the
    # transition loses the race and the message is read again.
    for _ in range(3):
        if message.state is MessageState.RECEIVED:
            moved = await store.transition(message, MessageState.DELIVERED_TO_BACKEND, now=now)
            message = moved or await api.find(request, Direction.IN)
        if message.state is MessageState.DELIVERED_TO_BACKEND:
            moved = await store.transition(message, MessageState.ACKNOWLEDGED, now=now)
            message = moved or await api.find(request, Direction.IN)
        if message.state is MessageState.ACKNOWLEDGED:
            break
    if message.state is not MessageState.ACKNOWLEDGED:
        raise problem(409, "conflict", f"message is {message.state}")
    return web.json_response(message_json(message))


async def openapi(_request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json: the OpenAPI 3 document of this API."""
    return web.json_response(OPENAPI)


@web.middleware
async def _tokens(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Unknown routes and wrong methods answer 404 / 405 whoever asks.
    routed = request.match_info.http_exception is None
    if routed and request.match_info.route.name not in OPEN_ROUTES:
        _api(request).authorised(request)
    return await handler(request)


def api_application() -> web.Application:
    """The sub-application mounted at ``/api/v1``; its ``Api`` is put on the parent application at start."""
    app = web.Application(middlewares=[_tokens])
    app.router.add_post("/messages", submit)
    app.router.add_get("/messages", search)
    app.router.add_get("/messages/{id}", read)
    app.router.add_get("/messages/{id}/payloads/{cid}", download)
    app.router.add_post("/messages/{id}/ack", acknowledge)
    app.router.add_get("/openapi.json", openapi, name="openapi")
    mailings.add_routes(app)
    return app


async def _json_submission(request: web.Request) -> dict[str, Any]:
    try:
        return _object(await request.read())
    except ValueError:
        raise problem(400, "invalid-json", "the body is not a JSON object") from None


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
