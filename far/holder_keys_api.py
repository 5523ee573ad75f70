"""Holder keys over HTTP: REST for operators, and a SOAP operation beside Recipient v3 for existing senders.

=======  ==========================================  ==========================================================
GET      /api/v1/holder-keys/{recipient}             every key of the holder (read)
PUT      /api/v1/holder-keys/{recipient}             ``{"certificate": PEM}`` → the new current key (201)
DELETE   /api/v1/holder-keys/{recipient}/{key_id}    withdraw a key (204)
POST     /api/v1/holder-keys/current                 ``{"recipients": [...]}`` → ``{"results": [{recipient,
                                                     encryption_key}]}``; ``encryption_key`` null: none
=======  ==========================================  ==========================================================

Writes need ``write:operator=<the holder's operator>`` (or ``write``): another operator's token is 403 and the
attempt is audited. ``POST /api/v1/reachable`` carries ``encryption_key`` in each result as well.

SOAP (``POST /HolderKeys/v1``, SOAP 1.1, namespace ``urn:accesspoint:far:holder-keys:1``)::

    <hk:getEncryptionKeys><hk:recipientId>197001011234</hk:recipientId>…</hk:getEncryptionKeys>
    → <hk:getEncryptionKeysResponse><hk:return><hk:RecipientId>…</hk:RecipientId><hk:HasKey>true</hk:HasKey>
        <hk:EncryptionKey><hk:KeyId>sha-256 hex</hk:KeyId><hk:KeyType>rsa-oaep|x25519</hk:KeyType>
        <hk:Certificate>base64 DER</hk:Certificate><hk:NotAfter>…</hk:NotAfter></hk:EncryptionKey></hk:return>…

Faults as Recipient v3's (far/soap.py): 1001 not SOAP, 1002 another operation, 1003 outside the schema, 1004
more than 1,000 recipients, 5000 database.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from lxml import etree
from sqlalchemy.exc import SQLAlchemyError

from accesspoint.core.errors import EbmsError
from accesspoint.core.xml import holds_elements, parse_xml, string_value
from accesspoint.servicekit.problems import json_object
from accesspoint.servicekit.tokens import BearerAuth
from far import soap
from far.holder_keys import ForeignHolder, HolderKey, HolderKeyRegister, parse_certificate
from far.service import MAX_RECIPIENTS, InvalidInput, revoked_operators

PATH = "/api/v1/holder-keys"
SOAP_PATH = "/HolderKeys/v1"
NAMESPACE = "urn:accesspoint:far:holder-keys:1"
KEYS = web.AppKey("holder_keys", HolderKeyRegister)


def published(key: HolderKey | None) -> dict[str, Any] | None:
    """The ``encryption_key`` member of an answer: null when the holder has no current key."""
    return None if key is None else key.published()


def routes(app: web.Application, auth: web.AppKey[BearerAuth]) -> None:
    """Add the holder key routes and the SOAP operation to FaR's application."""

    async def write_allowed(request: web.Request, register: HolderKeyRegister, recipient: str) -> tuple[str, str]:
        """(actor, operator) when the token may write for the holder's operator; 403 (audited) otherwise."""
        token = request.app[auth].authenticate(request)
        operator = await register.operator_of(recipient)
        if operator is None or not token.allows("write", operator=operator):
            await register.refusal(recipient, token.name, "the token does not write for the holder's operator")
            raise request.app[auth].insufficient("write", {"operator": operator or "(none)"})
        if not token.allows("write") and operator in await revoked_operators(register.engine, [operator]):
            await register.refusal(recipient, token.name, f"operator {operator}'s approval is revoked")
            raise request.app[auth].insufficient("write", {"operator": operator})
        return token.name, operator

    async def list_keys(request: web.Request) -> web.Response:
        request.app[auth].authorize(request, "read")
        register = request.app[KEYS]
        recipient = register.recipient(request.match_info["recipient"])
        return web.json_response({"keys": [k.to_json() for k in await register.keys(recipient)]})

    async def put_key(request: web.Request) -> web.Response:
        register = request.app[KEYS]
        recipient = register.recipient(request.match_info["recipient"])
        actor, operator = await write_allowed(request, register, recipient)
        certificate = parse_certificate((await json_object(request, InvalidInput)).get("certificate"))
        try:
            key = await register.register(recipient, certificate, operator=operator, actor=actor)
        except ForeignHolder as exc:
            raise request.app[auth].insufficient("write", {"operator": exc.operator or "(none)"}) from None
        return web.json_response(key.to_json(), status=201)

    async def delete_key(request: web.Request) -> web.Response:
        register = request.app[KEYS]
        recipient = register.recipient(request.match_info["recipient"])
        actor, operator = await write_allowed(request, register, recipient)
        await register.revoke(recipient, request.match_info["key_id"], operator=operator, actor=actor)
        return web.Response(status=204)

    async def current(request: web.Request) -> web.Response:
        request.app[auth].authorize(request, "read")
        ids = (await json_object(request, InvalidInput)).get("recipients")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise InvalidInput("recipients must be a list of strings", field="recipients")
        if len(ids) > MAX_RECIPIENTS:
            raise InvalidInput(f"at most {MAX_RECIPIENTS} recipients at once", field="recipients")
        found = await request.app[KEYS].current(ids)
        results = [{"recipient": r, "encryption_key": published(found.get(r))} for r in ids]
        return web.json_response({"results": results})

    async def soap_endpoint(request: web.Request) -> web.Response:
        call_id = uuid.uuid4().hex
        try:
            ids = parse_get_encryption_keys(await request.content.read(soap.MAX_REQUEST_BYTES + 1))
            answer = get_encryption_keys_response(ids, await request.app[KEYS].current(ids))
        except soap.SoapFault as fault:
            return _soap(soap.fault_response(fault, call_id), 500)
        except SQLAlchemyError:
            failed = soap.SoapFault(soap.FaultCode.INTERNAL, "the register's database failed; retry later")
            return _soap(soap.fault_response(failed, call_id), 500)
        return _soap(answer, 200)

    app.router.add_post(PATH + "/current", current)
    app.router.add_get(PATH + "/{recipient}", list_keys)
    app.router.add_put(PATH + "/{recipient}", put_key)
    app.router.add_delete(PATH + "/{recipient}/{key_id}", delete_key)
    app.router.add_post(SOAP_PATH, soap_endpoint)


def _soap(body: bytes, status: int) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": soap.CONTENT_TYPE})


# ------------------------------------------------------------------------------------------------ SOAP


def _children(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def parse_get_encryption_keys(body: bytes) -> list[str]:
    """The recipient ids of a getEncryptionKeys request; SoapFault with Recipient v3's codes otherwise."""
    try:
        envelope = parse_xml(body, max_bytes=soap.MAX_REQUEST_BYTES, what="SOAP request")
    except EbmsError as exc:
        raise soap.SoapFault(soap.FaultCode.NOT_SOAP, exc.detail) from None
    bodies = [c for c in _children(envelope) if c.tag == f"{{{soap.SOAP11}}}Body"]
    if envelope.tag != f"{{{soap.SOAP11}}}Envelope" or len(bodies) != 1 or len(_children(bodies[0])) != 1:
        raise soap.SoapFault(soap.FaultCode.NOT_SOAP, "not a SOAP 1.1 Envelope with one request in its Body")
    operation = _children(bodies[0])[0]
    if operation.tag != f"{{{NAMESPACE}}}getEncryptionKeys":
        raise soap.SoapFault(soap.FaultCode.UNKNOWN_OPERATION, f"operation {operation.tag} is not offered here")
    ids: list[str] = []
    for child in _children(operation):
        if child.tag != f"{{{NAMESPACE}}}recipientId" or holds_elements(child):
            raise soap.SoapFault(soap.FaultCode.INVALID_REQUEST, f"unexpected element {child.tag}")
        ids.append(string_value(child).strip())
    if not ids:
        raise soap.SoapFault(soap.FaultCode.INVALID_REQUEST, "at least one recipientId")
    if len(ids) > MAX_RECIPIENTS:
        raise soap.SoapFault(soap.FaultCode.TOO_MANY_RECIPIENTS, f"at most {MAX_RECIPIENTS} recipientId")
    return ids


def get_encryption_keys_response(ids: Sequence[str], keys: dict[str, HolderKey]) -> bytes:
    """One ``return`` per recipient in request order: HasKey, and the current key when there is one."""
    items = []
    for recipient in ids:
        key = keys.get(recipient)
        has = "true" if key is not None else "false"
        item = f"<hk:RecipientId>{escape(recipient)}</hk:RecipientId><hk:HasKey>{has}</hk:HasKey>"
        if key is not None:
            der = base64.b64encode(key.certificate.public_bytes(serialization.Encoding.DER)).decode()
            item += (
                f"<hk:EncryptionKey><hk:KeyId>{key.key_id}</hk:KeyId><hk:KeyType>{key.key_type}</hk:KeyType>"
                f"<hk:Certificate>{der}</hk:Certificate><hk:NotAfter>{key.not_after.isoformat()}</hk:NotAfter>"
                "</hk:EncryptionKey>"
            )
        items.append(f"<hk:return>{item}</hk:return>")
    body = f'<hk:getEncryptionKeysResponse xmlns:hk="{NAMESPACE}">{"".join(items)}</hk:getEncryptionKeysResponse>'
    return (soap._ENVELOPE_START + body + soap._ENVELOPE_END).encode()
