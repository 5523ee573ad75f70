"""FaR's REST API for operators writing for their holders: the Recipient contract's operations in JSON.

Reads need the ``read`` scope; changes a ``write`` scope, ``write:operator=<orgnr>`` for an operator (which may
change only its own holders, far/access.py). Signatures are ``{signature, certificate, nonce, encoding}``
(:class:`accesspoint.envelopes.identity.SignatureData`) over ``agreement_text``.

=======  ==========================================  =======================================================
POST     /api/v1/registrations                       register: ``{recipient, account_type, agreement_text,
                                                     signatures, operator?}`` → 201 Complete, 202 waiting
GET      /api/v1/registrations/{id}                  getPendingAccountRequest
DELETE   /api/v1/registrations/{id}                  deletePendingAccountRequest
POST     /api/v1/deregistrations                     deregister: ``{recipient, agreement_text, signatures}``
POST     /api/v1/switches                            changeServiceSupplier: ``{recipient, agreement_text,
                                                     signatures, operator?, switch_at?}`` → 201
GET      /api/v1/switches?operator=&state=           the switches to or from an operator
GET      /api/v1/switches/{recipient}                getPendingChangeServiceSupplier
POST     /api/v1/switches/{recipient}/complete       the current operator hands the holder over
DELETE   /api/v1/switches/{recipient}                deletePendingChangeServiceSupplier (cancel)
GET/PUT  /api/v1/recipients/{id}/preferences         get/storeAccountPreferences: ``{accepted: [{id, name}],
                                                     refused: [orgnr], agreement_text, signatures}``
GET      /api/v1/recipients/{id}/consent             a guardian's consent to a minor's account
POST     /api/v1/activity                            ``{recipients, at?}``: holders used their mailbox
POST     /api/v1/dormancy/run                        the dormancy job now (administrators): ``{quiet_for?,
                                                     recipients?}``
POST     /api/v1/authorized-signers                  isAuthorizedSigner: ``{company, person}``
GET      /api/v1/access-rights/{company}/{person}    what the person may do with the company's mailbox
=======  ==========================================  =======================================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from accesspoint.envelopes.identity import AssertionRefused, SignatureData
from accesspoint.servicekit.problems import json_object
from far.access import Writer
from far.holders import AuthorizationStatus, HolderService, Refused, SwitchState
from far.model import AccountStatus
from far.registers import Person
from far.service import Forbidden, InvalidInput

HOLDERS = web.AppKey("holders", HolderService)
# The configured dormancy period (``[far.dormancy] after``; two years when no job is configured).
DORMANT_AFTER = web.AppKey("dormant_after", timedelta)
WRITER = web.RequestKey("writer", Writer)
# The POST routes that only ask (the read scope suffices).
QUERIES = ("/api/v1/authorized-signers",)
_ACCOUNT_TYPES = {"secure": AccountStatus.SECURE, "anonymous": AccountStatus.ANONYMOUS}


async def _body(request: web.Request, known: set[str]) -> dict[str, Any]:
    body = await json_object(request, InvalidInput)
    unknown = sorted(set(body) - known)
    if unknown:
        raise InvalidInput(f"unknown field {unknown[0]}", field=unknown[0])
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{name} is required, a string", field=name)
    return value


def _signed(body: dict[str, Any]) -> tuple[str, list[SignatureData]]:
    text = _text(body, "agreement_text")
    items = body.get("signatures")
    if not isinstance(items, list):
        raise InvalidInput("signatures is a list of {signature, certificate, nonce}", field="signatures")
    try:
        return str(text), [SignatureData.from_json(item) for item in items]
    except AssertionRefused as exc:
        raise Refused(exc.code.value, exc.reason, field="signatures") from None


def _moment(body: dict[str, Any], name: str) -> datetime | None:
    value = _text(body, name, required=False)
    try:
        return None if value is None else datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{name} is an ISO 8601 date-time", field=name) from None


def _holders(request: web.Request) -> HolderService:
    return request.app[HOLDERS]


async def register(request: web.Request) -> web.Response:
    """POST /api/v1/registrations."""
    body = await _body(request, {"recipient", "account_type", "agreement_text", "signatures", "operator"})
    kind = _ACCOUNT_TYPES.get(str(body.get("account_type", "secure")).lower())
    if kind is None:
        raise InvalidInput("account_type is secure or anonymous", field="account_type")
    text, signatures = _signed(body)
    result = await _holders(request).register(
        request[WRITER],
        str(_text(body, "recipient")),
        account_type=kind,
        text=text,
        signatures=signatures,
        operator=_text(body, "operator", required=False),
    )
    return web.json_response(result.to_json(), status=201 if result.status is AuthorizationStatus.COMPLETE else 202)


async def pending_registration(request: web.Request) -> web.Response:
    """GET /api/v1/registrations/{id}."""
    found = await _holders(request).pending_registration(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text=f"no registration of {request.match_info['id'][:64]} is waiting")
    return web.json_response(found)


async def delete_pending_registration(request: web.Request) -> web.Response:
    """DELETE /api/v1/registrations/{id}."""
    await _holders(request).delete_pending_registration(request[WRITER], request.match_info["id"])
    return web.Response(status=204)


async def deregister(request: web.Request) -> web.Response:
    """POST /api/v1/deregistrations."""
    body = await _body(request, {"recipient", "agreement_text", "signatures"})
    text, signatures = _signed(body)
    result = await _holders(request).deregister(
        request[WRITER], str(_text(body, "recipient")), text=text, signatures=signatures
    )
    return web.json_response(result.to_json())


async def request_switch(request: web.Request) -> web.Response:
    """POST /api/v1/switches."""
    body = await _body(request, {"recipient", "agreement_text", "signatures", "operator", "switch_at"})
    text, signatures = _signed(body)
    result, switch = await _holders(request).change_service_supplier(
        request[WRITER],
        str(_text(body, "recipient")),
        text=text,
        signatures=signatures,
        to_operator=_text(body, "operator", required=False),
        switch_at=_moment(body, "switch_at"),
    )
    return web.json_response({"authorization": result.to_json(), "switch": switch.to_json()}, status=201)


async def list_switches(request: web.Request) -> web.Response:
    """GET /api/v1/switches?operator=&state=."""
    operator = request.query.get("operator")
    if not operator:
        raise InvalidInput("operator is required", field="operator")
    state_text = request.query.get("state")
    try:
        state = None if state_text is None else SwitchState(state_text)
    except ValueError:
        raise InvalidInput("state is pending, switched or cancelled", field="state") from None
    found = await _holders(request).switches_of(_holders(request).far._orgnr(operator, "operator"), state=state)
    return web.json_response({"switches": [s.to_json() for s in found]})


async def pending_switch(request: web.Request) -> web.Response:
    """GET /api/v1/switches/{recipient}; ``?id=`` for one switch in any state."""
    found = await _holders(request).switch(request.match_info["recipient"], switch_id=request.query.get("id"))
    return web.json_response(found.to_json())


async def complete_switch(request: web.Request) -> web.Response:
    """POST /api/v1/switches/{recipient}/complete."""
    done = await _holders(request).complete_switch(request[WRITER], request.match_info["recipient"])
    return web.json_response(done.to_json())


async def cancel_switch(request: web.Request) -> web.Response:
    """DELETE /api/v1/switches/{recipient}."""
    done = await _holders(request).cancel_switch(request[WRITER], request.match_info["recipient"])
    return web.json_response(done.to_json())


async def get_preferences(request: web.Request) -> web.Response:
    """GET /api/v1/recipients/{id}/preferences."""
    return web.json_response((await _holders(request).preferences(request.match_info["id"])).to_json())


async def put_preferences(request: web.Request) -> web.Response:
    """PUT /api/v1/recipients/{id}/preferences."""
    body = await _body(request, {"accepted", "refused", "agreement_text", "signatures"})
    accepted = body.get("accepted", [])
    refused = body.get("refused", [])
    if not isinstance(accepted, list) or not all(
        isinstance(a, dict) and isinstance(a.get("id"), str) and isinstance(a.get("name"), str) for a in accepted
    ):
        raise InvalidInput("accepted is a list of {id, name}", field="accepted")
    if not isinstance(refused, list) or not all(isinstance(r, str) for r in refused):
        raise InvalidInput("refused is a list of organisation numbers", field="refused")
    text, signatures = _signed(body)
    result = await _holders(request).store_preferences(
        request[WRITER],
        request.match_info["id"],
        accepted=[Person(a["id"], a["name"]) for a in accepted],
        refused=refused,
        text=text,
        signatures=signatures,
    )
    return web.json_response(result.to_json())


async def consent(request: web.Request) -> web.Response:
    """GET /api/v1/recipients/{id}/consent."""
    found = await _holders(request).consent(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound(text="no consent is recorded for this recipient")
    return web.json_response(found)


async def activity(request: web.Request) -> web.Response:
    """POST /api/v1/activity."""
    body = await _body(request, {"recipients", "at"})
    ids = body.get("recipients")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InvalidInput("recipients is a list of identifiers", field="recipients")
    return web.json_response(await _holders(request).report_activity(request[WRITER], ids, at=_moment(body, "at")))


async def run_dormancy(request: web.Request) -> web.Response:
    """POST /api/v1/dormancy/run: the dormancy job now (the administrator), ``{quiet_for?: seconds,
    recipients?: [...]}`` (default: the configured period, every recipient)."""
    writer = request[WRITER]
    if not writer.admin:
        raise Forbidden(f"{writer.name} may not run the dormancy job (the register's administrators do)")
    body = await _body(request, {"quiet_for", "recipients"})
    quiet_for = body.get("quiet_for", request.app[DORMANT_AFTER].total_seconds())
    only = body.get("recipients")
    if not isinstance(quiet_for, int | float) or isinstance(quiet_for, bool) or quiet_for < 0:
        raise InvalidInput("quiet_for is a number of seconds", field="quiet_for")
    if only is not None and (not isinstance(only, list) or not all(isinstance(r, str) for r in only)):
        raise InvalidInput("recipients is a list of identifiers", field="recipients")
    marked = await _holders(request).mark_dormant(after=timedelta(seconds=quiet_for), only=only, actor=writer.name)
    return web.json_response({"dormant": marked})


async def authorized_signer(request: web.Request) -> web.Response:
    """POST /api/v1/authorized-signers."""
    body = await _body(request, {"company", "person"})
    found = await _holders(request).is_authorized_signer(str(_text(body, "company")), str(_text(body, "person")))
    return web.json_response(found.to_json())


async def access_rights(request: web.Request) -> web.Response:
    """GET /api/v1/access-rights/{company}/{person}."""
    found = await _holders(request).access_rights(request.match_info["company"], request.match_info["person"])
    return web.json_response(found.to_json())


def add_routes(router: web.UrlDispatcher) -> None:
    """The holder routes (see the module docstring)."""
    routes: list[tuple[str, str, Callable[[web.Request], Any]]] = [
        ("POST", "/api/v1/registrations", register),
        ("GET", "/api/v1/registrations/{id}", pending_registration),
        ("DELETE", "/api/v1/registrations/{id}", delete_pending_registration),
        ("POST", "/api/v1/deregistrations", deregister),
        ("POST", "/api/v1/switches", request_switch),
        ("GET", "/api/v1/switches", list_switches),
        ("GET", "/api/v1/switches/{recipient}", pending_switch),
        ("POST", "/api/v1/switches/{recipient}/complete", complete_switch),
        ("DELETE", "/api/v1/switches/{recipient}", cancel_switch),
        ("GET", "/api/v1/recipients/{id}/preferences", get_preferences),
        ("PUT", "/api/v1/recipients/{id}/preferences", put_preferences),
        ("GET", "/api/v1/recipients/{id}/consent", consent),
        ("POST", "/api/v1/activity", activity),
        ("POST", "/api/v1/dormancy/run", run_dormancy),
        ("POST", "/api/v1/authorized-signers", authorized_signer),
        ("GET", "/api/v1/access-rights/{company}/{person}", access_rights),
    ]
    for method, path, handler in routes:
        router.add_route(method, path, handler)
