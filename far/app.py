"""FaR over HTTP: the REST JSON API and the Recipient v3 SOAP endpoint, thin shells over FarService.

REST (bearer token; ``read`` scope for GET and the queries, ``write`` for changes); errors are RFC 9457 problem
documents (``application/problem+json``: type, title, status, detail, and the offending field where known;
:mod:`accesspoint.servicekit.problems` and :mod:`accesspoint.servicekit.tokens` say how):

=======  =========================================  ==========================================================
POST     /api/v1/reachable                          ``{"sender", "recipients": [...]}`` → ``{"results": [...]}``
POST     /api/v1/registered                         ``{"recipients": [...]}`` → ``{"results": [...]}``
GET      /api/v1/recipients/{id}                    the recipient (an eIDAS id's ``/`` percent-encoded)
PUT      /api/v1/recipients/{id}                    ``{"status", "pending", "operator", "last_registration"}``
DELETE   /api/v1/recipients/{id}
GET      /api/v1/recipients/{id}/refusals           the senders it refuses
PUT      /api/v1/recipients/{id}/refusals/{sender}  refuse a sender (a party id, far/parties.py)
DELETE   /api/v1/recipients/{id}/refusals/{sender}  accept it again
GET      /api/v1/audit/{entity_id}                  the latest changes to a recipient, operator or refusal
GET      /api/v1/operators                          all operators
GET      /api/v1/operators/{orgnr}
PUT      /api/v1/operators/{orgnr}                  ``{"name", "party_id", "endpoint" (URL or "discovery"), …}``
DELETE   /api/v1/operators/{orgnr}                  409 while recipients use it
GET      /api/v1/operators/{orgnr}/approval         ``{operator, status, since, decided_by, reason, audit_id}``
PUT      /api/v1/operators/{orgnr}/approval         ``{"status": "approved"|"suspended"|"revoked", "reason",
                                                    "requested_by"?}``:
                                                    the ``approve`` scope only (never an operator's own)
=======  =========================================  ==========================================================

Operators write for their holders through ``far/holder_api.py`` (REST) and the Recipient contract's other
operations (``far/holder_soap.py``); a caller is a bearer token or a TLS client certificate (``far/access.py``),
and an operator's may change only its own record and holders (403 otherwise, audited).

The sender register (``/api/v1/senders``): :mod:`far.sender_api`. SOAP: ``POST /Recipient/v3`` (also
``/soap/Recipient/v3``), see :mod:`far.soap` and :mod:`far.holder_soap`; ``POST /Recipient/v4`` answers isReachable
and isRegistered for eIDAS identifiers too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from accesspoint.servicekit.metrics import http_metrics_middleware
from accesspoint.servicekit.observability import admin_context
from accesspoint.servicekit.problems import Problem, json_object, problem_middleware
from accesspoint.servicekit.tokens import CALLER, BearerAuth
from accesspoint.servicekit.tracing import trace_middleware, tracer_for
from far import holder_keys_api, holder_soap, sender_api, soap
from far.access import Callers, standing_writer
from far.holder_api import DORMANT_AFTER, HOLDERS, QUERIES, WRITER, add_routes
from far.holder_keys import HolderKeyRegister
from far.holders import HolderService, Refused
from far.metrics import FarMetrics
from far.model import AccountStatus, create_engine, upgrade_schema
from far.registers import Registers, RegistersClient
from far.senders import SenderRegister
from far.service import (
    DISCOVERY,
    FarError,
    FarService,
    Forbidden,
    InvalidInput,
    Operator,
    OperatorStatus,
    routes_answer,
)
from far.settings import FarSettings
from far.status import far_status

log = logging.getLogger("far")

SETTINGS = web.AppKey("settings", FarSettings)
SERVICE = web.AppKey("service", FarService)
AUTH = web.AppKey("auth", BearerAuth)
CALLERS = web.AppKey("callers", Callers)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(exc: Exception) -> Problem | None:
    """FaR's own refusals with their status and field; a database failure as 503 (the cause to the log only)."""
    if isinstance(exc, Forbidden):
        return Problem(403, exc.detail, kind="forbidden")
    if isinstance(exc, Refused):
        return Problem(422, exc.detail, kind="refused", field=exc.field, code=exc.code)
    if isinstance(exc, FarError):
        return Problem(exc.status, exc.detail, field=exc.field)
    if isinstance(exc, SQLAlchemyError):
        log.error("database failure", exc_info=exc)
        return Problem(503, "the register's database failed; retry later", headers={"Retry-After": "5"})
    return None


@web.middleware
async def _authorised(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Callers on /api/: the read scope for GET and the queries; for changes a write scope, the administrator's or
    an operator's (which the change then checks against what it touches)."""
    # The sender routes authorise in their handlers: a write may be narrowed to one sender (write:sender=…).
    # So do the holder key routes: a write may be narrowed to the holder's operator (write:operator=…).
    # So does an operator's approval: the approve scope, which no write scope implies.
    self_authorised = (sender_api.PATH, holder_keys_api.PATH)
    approval = request.path.startswith("/api/v1/operators/") and request.path.endswith(APPROVAL)
    if request.path.startswith("/api/") and not request.path.startswith(self_authorised):
        queries = request.method in {"GET", "HEAD"} or request.path.endswith(("/reachable", "/registered", *QUERIES))
        if queries:
            request.app[CALLERS].authorize(request, "read")
        elif not approval:
            writer = request.app[CALLERS].writer(request)
            # A revoked operator's credentials no longer write (audited as refused, with who tried).
            async with request.app[SERVICE].refusal_audited(writer.name, "operator", ",".join(writer.operators),
                                                            f"{request.method} {request.path[:200]}"):  # fmt: skip
                request[WRITER] = await standing_writer(writer, request.app[SERVICE])
    return await handler(request)


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise InvalidInput(f"{name} is required", field=name)
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise InvalidInput(f"{name} has the wrong type", field=name)
    return value


def _ids(body: dict[str, Any]) -> list[str]:
    ids = _field(body, "recipients", list)
    if not all(isinstance(item, str) for item in ids):
        raise InvalidInput("recipients must be strings", field="recipients")
    return [str(item) for item in ids]


def _actor(request: web.Request) -> str:
    return request[CALLER].name


# ----------------------------------------------------------------------------------------------- queries


async def reachable(request: web.Request) -> web.Response:
    """POST /api/v1/reachable (``"answer": "routes"``: the compact form for routers, ``service.routes_answer``)."""
    body = await json_object(request, InvalidInput)
    form = _field(body, "answer", str, required=False) or "full"
    if form not in ("full", "routes"):
        raise InvalidInput("answer is full or routes", field="answer")
    results = await request.app[SERVICE].is_reachable(_field(body, "sender", str), _ids(body))
    if form == "routes":
        return web.json_response(routes_answer(results))
    # Each result names the holder's current encryption key (or null): what end-to-end encryption needs.
    keys = await request.app[holder_keys_api.KEYS].current([r.recipient for r in results if r.reachable])
    return web.json_response(
        {
            "results": [
                {**r.to_json(), "encryption_key": holder_keys_api.published(keys.get(r.recipient))} for r in results
            ]
        }
    )


async def registered(request: web.Request) -> web.Response:
    """POST /api/v1/registered."""
    results = await request.app[SERVICE].is_registered(_ids(await json_object(request, InvalidInput)))
    return web.json_response(
        {
            "results": [
                {
                    "recipient": r.recipient,
                    "status": r.status.value,
                    "pending": r.pending,
                    "operator": None if r.operator is None else r.operator.id,
                    "last_registration": None if r.last_registration is None else r.last_registration.isoformat(),
                    "reason": None if r.reason is None else r.reason.value,
                }
                for r in results
            ]
        }
    )


# -------------------------------------------------------------------------------------------- recipients


async def get_recipient(request: web.Request) -> web.Response:
    """GET /api/v1/recipients/{id}."""
    found = await request.app[SERVICE].get_recipient(request.match_info["id"])
    return web.json_response(found.to_json())


async def put_recipient(request: web.Request) -> web.Response:
    """PUT /api/v1/recipients/{id}."""
    body = await json_object(request, InvalidInput)
    unknown = set(body) - {"status", "pending", "operator", "last_registration"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    status_text = _field(body, "status", str)
    try:
        status = AccountStatus(status_text)
    except ValueError:
        raise InvalidInput("status is secure, anonymous or none", field="status") from None
    last = _field(body, "last_registration", str, required=False)
    try:
        last_registration = None if last is None else datetime.fromisoformat(last)
    except ValueError:
        raise InvalidInput("last_registration is an ISO 8601 date-time", field="last_registration") from None
    stored, created = await request.app[SERVICE].put_recipient(
        request.match_info["id"],
        status=status,
        pending=bool(_field(body, "pending", bool, required=False)),
        operator_id=_field(body, "operator", str, required=False),
        last_registration=last_registration,
        actor=_actor(request),
        guard=request[WRITER].recipient_guard(),
    )
    return web.json_response(stored.to_json(), status=201 if created else 200)


async def delete_recipient(request: web.Request) -> web.Response:
    """DELETE /api/v1/recipients/{id}."""
    await request.app[SERVICE].delete_recipient(
        request.match_info["id"], actor=_actor(request), guard=request[WRITER].recipient_guard()
    )
    return web.Response(status=204)


async def list_refusals(request: web.Request) -> web.Response:
    """GET /api/v1/recipients/{id}/refusals."""
    service = request.app[SERVICE]
    recipient = request.match_info["id"]
    await service.get_recipient(recipient)
    return web.json_response({"recipient": recipient, "refused": await service.list_refusals(recipient)})


async def put_refusal(request: web.Request) -> web.Response:
    """PUT /api/v1/recipients/{id}/refusals/{sender}."""
    created = await request.app[SERVICE].refuse_sender(
        request.match_info["id"],
        request.match_info["sender"],
        actor=_actor(request),
        guard=request[WRITER].holder_guard(),
    )
    return web.json_response({"refused": True}, status=201 if created else 200)


async def delete_refusal(request: web.Request) -> web.Response:
    """DELETE /api/v1/recipients/{id}/refusals/{sender}."""
    await request.app[SERVICE].accept_sender(
        request.match_info["id"],
        request.match_info["sender"],
        actor=_actor(request),
        guard=request[WRITER].holder_guard(),
    )
    return web.Response(status=204)


async def get_audit(request: web.Request) -> web.Response:
    """GET /api/v1/audit/{entity_id}."""
    entity_id = request.match_info["entity_id"]
    return web.json_response({"entity_id": entity_id, "changes": await request.app[SERVICE].audit_trail(entity_id)})


# --------------------------------------------------------------------------------------------- operators


async def list_operators(request: web.Request) -> web.Response:
    """GET /api/v1/operators."""
    service = request.app[SERVICE]
    approvals = {a.operator_id: a.to_json() for a in await service.list_approvals()}
    listed = [{**o.to_json(), "approval": approvals.get(o.id)} for o in await service.list_operators()]
    return web.json_response({"operators": listed})


async def get_operator(request: web.Request) -> web.Response:
    """GET /api/v1/operators/{orgnr}."""
    return web.json_response((await request.app[SERVICE].get_operator(request.match_info["orgnr"])).to_json())


def _url(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = _field(body, name, str, required=required)
    if value is None or (name == "endpoint" and value == DISCOVERY):
        return None
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc or len(value) > 2048:
        raise InvalidInput(f"{name} must be an http(s) URL", field=name)
    return str(value)


async def put_operator(request: web.Request) -> web.Response:
    """PUT /api/v1/operators/{orgnr}."""
    body = await json_object(request, InvalidInput)
    # status: what GET shows, so a record read and written back is accepted; it is decided through …/approval.
    unknown = set(body) - {"name", "party_id", "endpoint", "service_address", "ui_address", "status"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    status = _field(body, "status", str, required=False)
    try:
        read = None if status is None else OperatorStatus(status)
    except ValueError:
        raise InvalidInput("status is approved, suspended or revoked", field="status") from None
    operator = Operator(
        id=request.match_info["orgnr"],
        name=_field(body, "name", str),
        party_id=_field(body, "party_id", str),
        endpoint=_url(body, "endpoint", required=True),
        service_address=_url(body, "service_address"),
        ui_address=_url(body, "ui_address"),
    )
    service = request.app[SERVICE]
    created = await service.put_operator(
        operator, actor=_actor(request), guard=request[WRITER].operator_guard(), status=read
    )
    stored = await service.get_operator(operator.id)
    return web.json_response(stored.to_json(), status=201 if created else 200)


APPROVAL = "/approval"


async def get_approval(request: web.Request) -> web.Response:
    """GET /api/v1/operators/{orgnr}/approval (read scope)."""
    return web.json_response((await request.app[SERVICE].get_approval(request.match_info["orgnr"])).to_json())


async def put_approval(request: web.Request) -> web.Response:
    """PUT /api/v1/operators/{orgnr}/approval: the ``approve`` scope decides; an operator never approves itself."""
    service, callers = request.app[SERVICE], request.app[CALLERS]
    caller = callers.identify(request)
    operator_id = request.match_info["orgnr"]
    if not caller.allows("approve"):
        why = "only the approve scope decides an operator's approval"
        await service.audit_refusal(caller.name, "operator", operator_id[:16], "decide operator approval", why)
        raise callers.auth.insufficient("approve")
    body = await json_object(request, InvalidInput)
    unknown = set(body) - {"status", "reason", "requested_by"}
    if unknown:
        raise InvalidInput(f"unknown field {sorted(unknown)[0]}", field=sorted(unknown)[0])
    try:
        status = OperatorStatus(_field(body, "status", str))
    except ValueError:
        raise InvalidInput("status is approved, suspended or revoked", field="status") from None
    reason = _field(body, "reason", str, required=False)
    # A console deciding for one of its users names that user: recorded as the caller's word, "console for ada".
    requested_by = _field(body, "requested_by", str, required=False)
    if requested_by is not None and not (0 < len(requested_by) <= 64 and requested_by.isprintable()):
        raise InvalidInput("requested_by must be 1 to 64 printable characters", field="requested_by")
    actor = caller.name if requested_by is None else f"{caller.name} for {requested_by}"
    approval, changed = await service.decide_operator(operator_id, status, reason=reason, actor=actor)
    if changed:
        log.warning("operator %s %s by %s: %s", approval.operator_id, status.value, actor, reason)
    return web.json_response(approval.to_json())


async def delete_operator(request: web.Request) -> web.Response:
    """DELETE /api/v1/operators/{orgnr}."""
    await request.app[SERVICE].delete_operator(
        request.match_info["orgnr"], actor=_actor(request), guard=request[WRITER].operator_guard()
    )
    return web.Response(status=204)


# -------------------------------------------------------------------------------------------------- SOAP


async def soap_endpoint(request: web.Request) -> web.Response:
    """POST /Recipient/v3: isReachable and isRegistered; faults with HTTP 500, as SOAP 1.1 over HTTP wants."""
    call_id = uuid.uuid4().hex
    service = request.app[SERVICE]
    try:
        body = await request.content.read(soap.MAX_REQUEST_BYTES + 1)
        operation = soap.operation_element(body)
        if holder_soap.handles(operation, version=request.match_info.get("version", "v3")):
            answer = await holder_soap.answer(operation, request, request.app[HOLDERS], request.app[CALLERS])
            return _soap(answer, 200)
        parsed = soap.parse_operation(operation)
        if isinstance(parsed, soap.IsReachable):
            answer = soap.is_reachable_response(await service.is_reachable(parsed.sender_orgnr, parsed.recipients))
        else:
            answer = soap.is_registered_response(await service.is_registered(parsed.recipients))
    except soap.SoapFault as fault:
        log.info("SOAP fault %s (call %s): %s", int(fault.code), call_id, fault.description)
        return _soap(soap.fault_response(fault, call_id), 500)
    except (FarError, Problem) as exc:
        refused = holder_soap.fault_for(exc)
        log.info("SOAP fault %s (call %s): %s", int(refused.code), call_id, refused.description)
        return _soap(soap.fault_response(refused, call_id), 500)
    except SQLAlchemyError:
        log.exception("database failure (call %s)", call_id)
        failed = soap.SoapFault(soap.FaultCode.INTERNAL, "the register's database failed; retry later")
        return _soap(soap.fault_response(failed, call_id), 500)
    return _soap(answer, 200)


def _soap(body: bytes, status: int) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": soap.CONTENT_TYPE})


async def _dormancy(holders: HolderService, settings: FarSettings) -> None:
    """The dormancy job: every ``dormancy.interval``, mark recipients quiet for ``dormancy.after`` dormant."""
    assert settings.dormancy is not None
    while True:
        try:
            marked = await holders.mark_dormant(after=settings.dormancy.after)
            if marked:
                log.info("dormancy: %d recipient(s) marked dormant", len(marked))
        except SQLAlchemyError:
            log.exception("dormancy: the database failed; trying again next round")
        await asyncio.sleep(settings.dormancy.interval.total_seconds())


async def health(_request: web.Request) -> web.Response:
    """GET /health."""
    return web.json_response({"ok": True})


# ---------------------------------------------------------------------------------------------- the app


def create_app(
    settings: FarSettings, *, service: FarService | None = None, registers: Registers | None = None
) -> web.Application:
    """The FaR web application; it opens (and at cleanup disposes) its engine unless ``service`` is given, and
    asks the registers of ``settings.registers`` unless ``registers`` is given.

    Its admin listener (``admin`` in the settings: ``GET /metrics``) runs while it does.
    """
    metrics = service.metrics if service is not None else FarMetrics()
    middlewares = [
        http_metrics_middleware(metrics),
        trace_middleware(tracer_for("far")),
        problem_middleware(_problem),
        _authorised,
    ]
    app = web.Application(middlewares=middlewares, client_max_size=2 * 1024 * 1024)
    app[SETTINGS] = settings
    app[AUTH] = BearerAuth(settings.tokens, realm="far")
    app[CALLERS] = Callers(app[AUTH], settings.clients)
    app[DORMANT_AFTER] = timedelta(days=730) if settings.dormancy is None else settings.dormancy.after

    async def database(app: web.Application) -> AsyncIterator[None]:
        engine = None
        if service is not None:
            app[SERVICE] = service
            app[sender_api.SENDERS] = SenderRegister(service.engine, policy=service.parties)
            app[holder_keys_api.KEYS] = HolderKeyRegister(service.engine, policy=service.policy, now=service.now)
        else:
            engine = create_engine(settings.database)
            await upgrade_schema(engine)
            app[SERVICE] = FarService(engine, policy=settings.policy, parties=settings.parties, metrics=metrics)
            app[sender_api.SENDERS] = SenderRegister(engine, policy=settings.parties)
            app[holder_keys_api.KEYS] = HolderKeyRegister(engine, policy=settings.policy, now=app[SERVICE].now)
        client = None
        if registers is None and settings.registers is not None:
            client = RegistersClient(settings.registers, timeout=settings.registers_timeout.total_seconds())
        app[HOLDERS] = HolderService(
            app[SERVICE],
            eid_anchors=settings.eid_anchors,
            eid_max_age=settings.eid_max_age,
            registers=registers or client,
            minors=settings.minors,
        )
        job = None if settings.dormancy is None else asyncio.create_task(_dormancy(app[HOLDERS], settings))
        yield
        if job is not None:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        if client is not None:
            await client.close()
        if engine is not None:
            await engine.dispose()

    app.cleanup_ctx.append(database)
    app.cleanup_ctx.append(
        admin_context(metrics, settings.observability.admin, lambda: far_status(app[SERVICE], settings.tls))
    )
    add_routes(app.router)
    recipient = "/api/v1/recipients/{id}"
    app.router.add_post("/api/v1/reachable", reachable)
    app.router.add_post("/api/v1/registered", registered)
    app.router.add_get(recipient, get_recipient)
    app.router.add_put(recipient, put_recipient)
    app.router.add_delete(recipient, delete_recipient)
    app.router.add_get(recipient + "/refusals", list_refusals)
    app.router.add_put(recipient + "/refusals/{sender}", put_refusal)
    app.router.add_delete(recipient + "/refusals/{sender}", delete_refusal)
    app.router.add_get("/api/v1/audit/{entity_id}", get_audit)
    app.router.add_get("/api/v1/operators", list_operators)
    app.router.add_get("/api/v1/operators/{orgnr}", get_operator)
    app.router.add_put("/api/v1/operators/{orgnr}", put_operator)
    app.router.add_delete("/api/v1/operators/{orgnr}", delete_operator)
    app.router.add_get("/api/v1/operators/{orgnr}" + APPROVAL, get_approval)
    app.router.add_put("/api/v1/operators/{orgnr}" + APPROVAL, put_approval)
    sender_api.routes(app, AUTH)
    holder_keys_api.routes(app, AUTH)
    app.router.add_post("/Recipient/v3", soap_endpoint)
    app.router.add_post("/soap/Recipient/v3", soap_endpoint)
    app.router.add_post("/Recipient/{version:v4}", soap_endpoint)
    app.router.add_get("/health", health)
    return app
