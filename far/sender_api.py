"""The sender register over REST, a thin shell over :class:`far.senders.SenderRegister`.

=======  ===============================  =================================================================
GET      /api/v1/senders                  ``?status=active|suspended&access_point=<sha256>&after=<id>&limit=``
POST     /api/v1/senders/import           a JSON lines body (``application/x-ndjson``) or CSV (``text/csv``)
GET      /api/v1/senders/{id}             the record and the dispatchers that send for it
PUT      /api/v1/senders/{id}             create or replace the record
PATCH    /api/v1/senders/{id}             ``{"status": "suspended"}`` or ``{"status": "active"}``
DELETE   /api/v1/senders/{id}
=======  ===============================  =================================================================

Scopes: ``read`` for GET; ``write`` for every change, or ``write:sender=<party id>`` for that sender's record only
(an intermediary keeping its own access points current). An eIDAS id's ``/`` is sent as ``%2F``. Changes are
audited with the token's name as actor (``GET /api/v1/audit/{id}``).
"""

from __future__ import annotations

from aiohttp import web

from accesspoint.servicekit.problems import json_object
from accesspoint.servicekit.tokens import BearerAuth
from far.sender_import import import_senders, lines_of
from far.senders import SenderRegister, SenderStatus, fingerprint, parse_sender
from far.service import InvalidInput

SENDERS = web.AppKey("senders", SenderRegister)
PATH = "/api/v1/senders"
MAX_IMPORT_BYTES = 64 * 1024 * 1024
_JSONL = frozenset({"application/x-ndjson", "application/jsonl", "application/x-jsonlines", "application/json"})


def _register(request: web.Request) -> SenderRegister:
    return request.app[SENDERS]


def _authorize(request: web.Request, auth: web.AppKey[BearerAuth], action: str, sender: str | None = None) -> str:
    token = request.app[auth].authorize(request, action, **({} if sender is None else {"sender": sender}))
    return token.name


def routes(app: web.Application, auth: web.AppKey[BearerAuth]) -> None:
    """Add the sender routes to FaR's application (``auth`` is the key of its BearerAuth)."""

    async def search(request: web.Request) -> web.Response:
        _authorize(request, auth, "read")
        query = request.query
        try:
            status = SenderStatus(query["status"]) if "status" in query else None
            limit = int(query.get("limit", "100"))
        except ValueError:
            raise InvalidInput("status is active or suspended; limit a number", field="status") from None
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit is 1 to 1000", field="limit")
        digest = fingerprint(query["access_point"], "access_point") if "access_point" in query else None
        register = _register(request)
        after = register.party(query["after"], "after") if "after" in query else None
        found = await register.search(status=status, certificate_sha256=digest, after=after, limit=limit)
        return web.json_response({"senders": [s.to_json() for s in found]})

    async def get(request: web.Request) -> web.Response:
        _authorize(request, auth, "read")
        return web.json_response((await _register(request).get(request.match_info["id"])).to_json())

    async def put(request: web.Request) -> web.Response:
        register = _register(request)
        sender_id = register.party(request.match_info["id"])
        actor = _authorize(request, auth, "write", sender_id)
        sender = parse_sender(await json_object(request, InvalidInput), sender_id=sender_id, policy=register.policy)
        created = await register.put(sender, actor=actor)
        return web.json_response((await register.get(sender.id)).to_json(), status=201 if created else 200)

    async def patch(request: web.Request) -> web.Response:
        register = _register(request)
        sender_id = register.party(request.match_info["id"])
        actor = _authorize(request, auth, "write", sender_id)
        body = await json_object(request, InvalidInput)
        if set(body) != {"status"}:
            raise InvalidInput("PATCH takes {status} only", field="status")
        try:
            status = SenderStatus(body["status"])
        except ValueError:
            raise InvalidInput("status is active or suspended", field="status") from None
        return web.json_response((await register.set_status(sender_id, status, actor=actor)).to_json())

    async def remove(request: web.Request) -> web.Response:
        register = _register(request)
        sender_id = register.party(request.match_info["id"])
        await register.delete(sender_id, actor=_authorize(request, auth, "write", sender_id))
        return web.Response(status=204)

    async def bulk(request: web.Request) -> web.Response:
        actor = _authorize(request, auth, "write")
        if request.content_length is not None and request.content_length > MAX_IMPORT_BYTES:
            raise InvalidInput(f"an import is at most {MAX_IMPORT_BYTES // 2**20} MiB; use the CLI for more")
        data = await request.content.read(MAX_IMPORT_BYTES + 1)
        if len(data) > MAX_IMPORT_BYTES:
            raise InvalidInput(f"an import is at most {MAX_IMPORT_BYTES // 2**20} MiB; use the CLI for more")
        try:
            lines = lines_of(data)
        except UnicodeDecodeError:
            raise InvalidInput("the import is not UTF-8") from None
        register = _register(request)
        report = await import_senders(
            register.engine, lines, jsonl=request.content_type in _JSONL, policy=register.policy, actor=actor
        )
        document = report.to_json()
        if not report.ok:
            return web.json_response(
                {
                    "type": "urn:accesspoint:problem:bad-rows",
                    "title": "bad-rows",
                    "status": 400,
                    "detail": f"{report.bad_rows} bad row(s); nothing was stored",
                    **document,
                },
                status=400,
                content_type="application/problem+json",
            )
        return web.json_response(document)

    app.router.add_get(PATH, search)
    app.router.add_post(PATH + "/import", bulk)
    app.router.add_get(PATH + "/{id}", get)
    app.router.add_put(PATH + "/{id}", put)
    app.router.add_patch(PATH + "/{id}", patch)
    app.router.add_delete(PATH + "/{id}", remove)


