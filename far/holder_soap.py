"""The Recipient contract's operations for operators (Recipient.wsdl, SOAP 1.1 document/literal) and Recipient
v4 for eIDAS holders, over :class:`far.holders.HolderService`.

Requests are read element by element as the schema lays them out (``schema/v3/Recipient.xsd``,
``schema/v2/Recipient.xsd``, the v1 types they use); answers are written in the contract's namespaces. The
caller is a TLS client certificate or a bearer token (``far/access.py``): the reads need the ``read`` scope, the
changes an operator's (or the administrator's) ``write`` scope.

=============================================  ================================================================
v3 register / deregister                       SignatureAuthorizationResult; ``accountRequest/ServiceSupplier``
                                               is the calling operator (organisationsnummer or its domain)
v3 getPendingAccountRequest / delete…          the registration waiting for signatures
v3 getAccountPreferences                       the accepted senders
v2 storeAccountPreferences                     accepted senders replace the holder's; those dropped are refused
v2 changeServiceSupplier                       a pending switch to ``ServiceSupplier`` (the caller)
v2 getPendingChangeServiceSupplier / delete…   the pending switch; delete cancels it
v2 isAuthorizedSigner                          AuthorizedAccount from the business register
v4 isReachable / isRegistered                  as v3, with ``recipientId`` a string of up to 256 characters so
                                               eIDAS identifiers (``XX/YY/…``) can be asked about
=============================================  ================================================================

Faults: :mod:`far.soap` (1003 outside the schema, 1005 not allowed, 1006 refused, 1007 not found, 1008 conflict,
5001 a register did not answer).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from lxml import etree

from accesspoint.core.xml import string_value
from accesspoint.envelopes.identity import SignatureData
from accesspoint.servicekit.problems import Problem
from far.access import Callers, Writer, standing_writer
from far.holders import AuthorizationResult, HolderService, Refused, Unavailable
from far.model import AccountStatus
from far.parties import mina_meddelanden_id
from far.registers import Person
from far.service import MAX_RECIPIENTS, Conflict, FarError, Forbidden, InvalidInput, NotFound, Operator
from far.soap import (
    RECIPIENT_V1,
    RECIPIENT_V3,
    SOAP11,
    FaultCode,
    SoapFault,
    is_reachable_response,
    is_registered_response,
)

RECIPIENT_V2 = "http://minameddelanden.gov.se/schema/Recipient/v2"
RECIPIENT_V4 = "urn:accesspoint:far:schema:Recipient:v4"
AUTHORITY = "http://minameddelanden.gov.se/schema/Authority"
COMMON = "http://minameddelanden.gov.se/schema/Common"
SENDER = "http://minameddelanden.gov.se/schema/Sender"
MAX_EIDAS = 256

V3_OPERATIONS = frozenset(
    f"{{{RECIPIENT_V3}}}{name}"
    for name in ("register", "deregister", "getPendingAccountRequest", "deletePendingAccountRequest",
                 "getAccountPreferences")
)  # fmt: skip
V2_OPERATIONS = frozenset(
    f"{{{RECIPIENT_V2}}}{name}"
    for name in ("changeServiceSupplier", "getPendingChangeServiceSupplier", "deletePendingChangeServiceSupplier",
                 "storeAccountPreferences", "getPendingAccountPreferences", "deletePendingAccountPreferences",
                 "isAuthorizedSigner")
)  # fmt: skip
V4_OPERATIONS = frozenset(f"{{{RECIPIENT_V4}}}{name}" for name in ("isReachable", "isRegistered"))
WRITES = frozenset(
    {f"{{{RECIPIENT_V3}}}{n}" for n in ("register", "deregister", "deletePendingAccountRequest")}
    | {f"{{{RECIPIENT_V2}}}{n}" for n in ("changeServiceSupplier", "deletePendingChangeServiceSupplier",
                                          "storeAccountPreferences", "deletePendingAccountPreferences")}
)  # fmt: skip


def handles(operation: etree._Element, *, version: str) -> bool:
    """Whether this module answers the operation (v4 answers only its own two)."""
    if version == "v4":
        return True
    return operation.tag in V3_OPERATIONS or operation.tag in V2_OPERATIONS


def fault_for(exc: FarError | Problem) -> SoapFault:
    """The fault a refusal becomes (see the module docstring)."""
    if isinstance(exc, Problem):
        return SoapFault(FaultCode.FORBIDDEN, exc.detail)
    code = {
        Forbidden: FaultCode.FORBIDDEN,
        Refused: FaultCode.REFUSED,
        NotFound: FaultCode.NOT_FOUND,
        Conflict: FaultCode.CONFLICT,
        Unavailable: FaultCode.UNAVAILABLE,
    }.get(type(exc), FaultCode.INVALID_REQUEST)
    detail = f"{exc.code}: {exc.detail}" if isinstance(exc, Refused) else exc.detail
    return SoapFault(code, detail)


# ------------------------------------------------------------------------------------------- reading


def _children(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def _text(element: etree._Element) -> str:
    # The element's whole string value (never .text alone), trimmed as the schema's whitespace rules would.
    return string_value(element).strip()


class _Reader:
    """Reads an element's children in schema order; a SoapFault (1003) names what is missing or unexpected."""

    def __init__(self, parent: etree._Element) -> None:
        self.parent = parent
        self.items = _children(parent)
        self.at = 0

    def _fail(self, what: str) -> SoapFault:
        name = etree.QName(self.parent).localname
        return SoapFault(FaultCode.INVALID_REQUEST, f"{name}: {what}")

    def one(self, namespace: str, name: str) -> etree._Element:
        found = self.optional(namespace, name)
        if found is None:
            raise self._fail(f"expected {name}")
        return found

    def optional(self, namespace: str, name: str) -> etree._Element | None:
        if self.at < len(self.items) and self.items[self.at].tag == f"{{{namespace}}}{name}":
            self.at += 1
            return self.items[self.at - 1]
        return None

    def many(self, namespace: str, name: str, *, minimum: int = 0, maximum: int = 1000) -> list[etree._Element]:
        found = []
        while (item := self.optional(namespace, name)) is not None:
            found.append(item)
        if not minimum <= len(found) <= maximum:
            raise self._fail(f"{minimum} to {maximum} {name}")
        return found

    def text(self, namespace: str, name: str) -> str:
        return _text(self.one(namespace, name))

    def done(self) -> None:
        if self.at != len(self.items):
            raise self._fail(f"unexpected {etree.QName(self.items[self.at]).localname}")


def _signature(element: etree._Element) -> SignatureData:
    read = _Reader(element)
    signature = read.text(COMMON, "Signature")
    certificate = read.text(COMMON, "Certificate")
    nonce = read.optional(COMMON, "Nonce")
    encoding = read.optional(COMMON, "EncodingOfSignedText")
    read.done()
    return SignatureData(signature, certificate, None if nonce is None else _text(nonce),
                         "UTF-8" if encoding is None else _text(encoding) or "UTF-8")  # fmt: skip


def _account_request(element: etree._Element, expected: str) -> tuple[str, str, str]:
    """(recipient, agreement text, service supplier) of a recipientv1:AccountRequest of type ``expected``."""
    read = _Reader(element)
    recipient = read.text(RECIPIENT_V1, "Id")
    kind = read.text(RECIPIENT_V1, "Type")
    text = read.text(RECIPIENT_V1, "AgreementText")
    read.text(RECIPIENT_V1, "Timestamp")
    supplier = read.text(RECIPIENT_V1, "ServiceSupplier")
    read.done()
    if kind != expected:
        raise SoapFault(FaultCode.INVALID_REQUEST, f"AccountRequest/Type must be {expected}, not {kind[:16]!r}")
    return recipient, text, supplier


# ------------------------------------------------------------------------------------------- writing


def _envelope(body: etree._Element) -> bytes:
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"S": SOAP11})
    etree.SubElement(envelope, f"{{{SOAP11}}}Body").append(body)
    return bytes(etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"))


def _sub(parent: etree._Element, namespace: str, name: str, text: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, f"{{{namespace}}}{name}")
    if text is not None:
        element.text = text
    return element


def _persons(parent: etree._Element, name: str, persons: Sequence[Person]) -> None:
    for person in persons:
        item = _sub(parent, AUTHORITY, name)
        _sub(item, AUTHORITY, "Id", person.id)
        _sub(item, AUTHORITY, "Name", person.name or person.id)


def _authorization(parent: etree._Element, result: AuthorizationResult) -> etree._Element:
    """Authority SignatureAuthorizationResult children (Id only when it is a schema RecipientId)."""
    if "/" not in result.recipient:
        _sub(parent, AUTHORITY, "Id", result.recipient)
    _persons(parent, "SignedBy", result.signed_by)
    _sub(parent, AUTHORITY, "Status", result.status.value)
    _sub(parent, AUTHORITY, "Timestamp", result.timestamp.isoformat(timespec="milliseconds"))
    _sub(parent, AUTHORITY, "Text", result.text)
    _persons(parent, "PossibleSigners", result.possible_signers)
    return parent


def _root(namespace: str, name: str) -> etree._Element:
    return etree.Element(f"{{{namespace}}}{name}", nsmap={"v": namespace, "a": AUTHORITY, "r": RECIPIENT_V1})


def _supplier(parent: etree._Element, name: str, namespace: str, operator: Operator) -> None:
    supplier = _sub(parent, namespace, name)
    _sub(supplier, RECIPIENT_V1, "Id", f"16{operator.id}")
    _sub(supplier, RECIPIENT_V1, "Name", operator.name)
    _sub(supplier, RECIPIENT_V1, "ServiceAdress", operator.service_address or operator.endpoint or "")
    if operator.ui_address:
        _sub(supplier, RECIPIENT_V1, "UIAdress", operator.ui_address)
    _sub(supplier, RECIPIENT_V1, "InternalServiceAdress", "")


# ------------------------------------------------------------------------------------------ answering


async def answer(operation: etree._Element, request: web.Request, holders: HolderService, callers: Callers) -> bytes:
    """The response envelope for one operation (SoapFault, FarError or Problem when refused)."""
    name = etree.QName(operation).localname
    namespace = etree.QName(operation).namespace
    if namespace == RECIPIENT_V4 or request.match_info.get("version") == "v4":
        return await _v4(operation, request, holders, callers)
    if operation.tag in WRITES:
        writer = callers.writer(request)
        attempted = f"Recipient v3 {name}"
        async with holders.far.refusal_audited(writer.name, "operator", ",".join(writer.operators), attempted):
            writer = await standing_writer(writer, holders.far)  # a revoked operator no longer writes
        return await _write(name, operation, writer, holders)
    callers.authorize(request, "read")
    return await _read(name, operation, holders)


async def _v4(operation: etree._Element, request: web.Request, holders: HolderService, callers: Callers) -> bytes:
    if operation.tag not in V4_OPERATIONS:
        raise SoapFault(
            FaultCode.UNKNOWN_OPERATION, f"Recipient v4 offers isReachable and isRegistered, not {operation.tag}"
        )
    callers.authorize(request, "read")
    read = _Reader(operation)
    reachable = operation.tag.endswith("}isReachable")
    sender = read.text(RECIPIENT_V4, "senderOrgNr") if reachable else None
    ids = [_text(e) for e in read.many(RECIPIENT_V4, "recipientId", minimum=0 if reachable else 1,
                                       maximum=MAX_RECIPIENTS + 1)]  # fmt: skip
    read.done()
    if len(ids) > MAX_RECIPIENTS:
        raise SoapFault(FaultCode.TOO_MANY_RECIPIENTS, f"at most {MAX_RECIPIENTS} recipientId per request")
    if any(not 1 <= len(value) <= MAX_EIDAS for value in ids):
        raise SoapFault(FaultCode.INVALID_REQUEST, f"a recipientId is 1 to {MAX_EIDAS} characters")
    far = holders.far
    if sender is not None:
        return is_reachable_response(await far.is_reachable(sender.removeprefix("16"), ids),
                                     operations=RECIPIENT_V4, types=RECIPIENT_V4)  # fmt: skip
    return is_registered_response(await far.is_registered(ids), operations=RECIPIENT_V4, types=RECIPIENT_V4)


async def _write(name: str, operation: etree._Element, writer: Writer, holders: HolderService) -> bytes:
    read = _Reader(operation)
    if name in ("register", "deregister"):
        request = read.one(RECIPIENT_V3, "accountRequest" if name == "register" else "deregisterAccount")
        kind = read.text(RECIPIENT_V3, "accountType") if name == "register" else None
        signatures = [_signature(s) for s in read.many(RECIPIENT_V3, "signature", minimum=1, maximum=10)]
        read.done()
        recipient, text, supplier = _account_request(request, "Create" if name == "register" else "Delete")
        operator = await holders.operator_by_supplier(supplier)
        if not writer.speaks_for(operator):
            raise Forbidden(f"{writer.name} does not act for the ServiceSupplier {supplier[:64]}")
        if name == "register":
            types = {"Secure": AccountStatus.SECURE, "Anonymous": AccountStatus.ANONYMOUS}
            if kind not in types:
                raise InvalidInput("accountType is Secure or Anonymous to register")
            result = await holders.register(writer, recipient, account_type=types[kind], text=text,
                                            signatures=signatures, operator=operator)  # fmt: skip
        else:
            result = await holders.deregister(writer, recipient, text=text, signatures=signatures)
        root = _root(RECIPIENT_V3, f"{name}Response")
        _authorization(_sub(root, RECIPIENT_V3, "return"), result)
        return _envelope(root)
    if name == "deletePendingAccountRequest":
        recipient = read.text(RECIPIENT_V3, "recipientId")
        read.text(RECIPIENT_V3, "userIdentity")
        read.done()
        await holders.delete_pending_registration(writer, recipient)
        return _envelope(_root(RECIPIENT_V3, "deletePendingAccountRequestResponse"))
    if name == "changeServiceSupplier":
        recipient = read.text(RECIPIENT_V2, "Id")
        user = read.text(RECIPIENT_V2, "UserIdentity")
        supplier = read.text(RECIPIENT_V2, "ServiceSupplier")
        text = read.text(RECIPIENT_V2, "AgreementText")
        signatures = [_signature(s) for s in read.many(RECIPIENT_V2, "SignatureData", minimum=1, maximum=10)]
        read.done()
        target = await holders.operator_by_supplier(supplier)
        result, _switch = await holders.change_service_supplier(writer, recipient, text=text, signatures=signatures,
                                                                to_operator=target)  # fmt: skip
        _acting(user, result)
        root = _root(RECIPIENT_V2, "changeServiceSupplierResponse")
        _authorization(_sub(root, RECIPIENT_V2, "signatureAuthorizationResult"), result)
        return _envelope(root)
    if name == "deletePendingChangeServiceSupplier":
        identity = _Reader(read.one(RECIPIENT_V2, "organizationIdentity"))
        read.done()
        recipient = identity.text(RECIPIENT_V2, "Id")
        identity.text(RECIPIENT_V2, "UserIdentity")
        identity.done()
        cancelled = await holders.cancel_switch(writer, recipient)
        root = _root(RECIPIENT_V2, "deletePendingChangeServiceSupplierResponse")
        _supplier(root, "serviceSupplier", RECIPIENT_V2, await holders.far.get_operator(cancelled.to_operator))
        return _envelope(root)
    if name == "storeAccountPreferences":
        recipient = read.text(RECIPIENT_V2, "Id")
        user = read.text(RECIPIENT_V2, "UserIdentity")
        preferences = _Reader(read.one(RECIPIENT_V2, "preferences"))
        text = read.text(RECIPIENT_V2, "AgreementText")
        signatures = [_signature(s) for s in read.many(RECIPIENT_V2, "SignatureData", minimum=1, maximum=10)]
        read.done()
        if preferences.text(RECIPIENT_V1, "Id") != recipient:
            raise InvalidInput("preferences/Id must be the recipient")
        accepted = []
        for sender in preferences.many(RECIPIENT_V1, "AcceptedSenders", maximum=10_000):
            item = _Reader(sender)
            accepted.append(Person(item.text(SENDER, "Id"), item.text(SENDER, "Name")))
            item.optional(SENDER, "Attention")
            item.done()
        preferences.done()
        result = await holders.store_preferences(writer, recipient, accepted=accepted, refused=None, text=text,
                                                 signatures=signatures)  # fmt: skip
        _acting(user, result)
        root = _root(RECIPIENT_V2, "storeAccountPreferencesResponse")
        _authorization(_sub(root, RECIPIENT_V2, "return"), result)
        return _envelope(root)
    # deletePendingAccountPreferences: preferences are stored at once, so nothing is ever pending.
    raise NotFound("no account preferences are pending: FaR stores them when they are signed")


def _acting(user: str, result: AuthorizationResult) -> None:
    """The contract's UserIdentity is whoever acts: it must be one of those who signed."""
    if user not in {p.id for p in result.signed_by}:
        raise Refused("identity", f"UserIdentity {user[:64]} did not sign the agreement")


async def _read(name: str, operation: etree._Element, holders: HolderService) -> bytes:
    read = _Reader(operation)
    if name == "getAccountPreferences":
        recipient = read.text(RECIPIENT_V3, "RecipientId")
        read.text(RECIPIENT_V3, "UserIdentity")
        read.done()
        found = await holders.preferences(recipient)
        root = _root(RECIPIENT_V3, "getAccountPreferencesResponse")
        preferences = _sub(root, RECIPIENT_V3, "return")
        _sub(preferences, RECIPIENT_V1, "Id", found.recipient)
        for sender in found.accepted:
            contract_id = mina_meddelanden_id(sender.id)
            if contract_id is None:
                continue  # the contract's Sender/Id is a Swedish RecipientId: other senders it cannot name
            item = _sub(preferences, RECIPIENT_V1, "AcceptedSenders")
            _sub(item, SENDER, "Id", contract_id)
            _sub(item, SENDER, "Name", sender.name if len(sender.name) >= 2 else sender.id)
        return _envelope(root)
    if name == "getPendingAccountRequest":
        ids = [_text(e) for e in read.many(RECIPIENT_V3, "recipientId")]
        read.text(RECIPIENT_V3, "userIdentity")
        read.done()
        root = _root(RECIPIENT_V3, "getPendingAccountRequestResponse")
        for recipient in ids:
            waiting = await holders.pending_registration(recipient)
            if waiting is None:
                continue
            item = _sub(root, RECIPIENT_V3, "return")
            account = _sub(item, RECIPIENT_V1, "AccountRequest")
            _sub(account, RECIPIENT_V1, "Id", recipient)
            _sub(account, RECIPIENT_V1, "Type", "Create")
            _sub(account, RECIPIENT_V1, "AgreementText", waiting["agreement_text"])
            _sub(account, RECIPIENT_V1, "Timestamp", waiting["created_at"][:10])
            _sub(account, RECIPIENT_V1, "ServiceSupplier", f"16{waiting['operator']}")
            status = _sub(item, RECIPIENT_V1, "SignatureStatus")
            _persons(status, "SignedBy", [Person(s["id"], s["name"]) for s in waiting["signed_by"]])
            _sub(status, AUTHORITY, "Status", "Incomplete")
        return _envelope(root)
    if name == "getPendingChangeServiceSupplier":
        recipient = read.text(RECIPIENT_V2, "Id")
        read.text(RECIPIENT_V2, "UserIdentity")
        read.done()
        switch = await holders.switch(recipient)
        root = _root(RECIPIENT_V2, "getPendingChangeServiceSupplierResponse")
        pending = _sub(root, RECIPIENT_V2, "return")
        _supplier(pending, "serviceSupplier", RECIPIENT_V2, await holders.far.get_operator(switch.to_operator))
        signatures = _sub(pending, RECIPIENT_V2, "pendingSignatures")
        signers = [Person(s["id"], s["name"]) for s in switch.agreement.get("signers", [])]
        _persons(signatures, "SignedBy", signers)
        _sub(signatures, AUTHORITY, "Status", "Complete")
        _sub(signatures, AUTHORITY, "Timestamp", switch.requested_at.isoformat(timespec="milliseconds"))
        return _envelope(root)
    if name == "isAuthorizedSigner":
        company = read.text(RECIPIENT_V2, "CompanyId")
        user = read.text(RECIPIENT_V2, "UserIdentity")
        read.done()
        signer = await holders.is_authorized_signer(company, user)
        root = _root(RECIPIENT_V2, "isAuthorizedSignerResponse")
        account = _sub(root, RECIPIENT_V2, "return")
        _sub(account, RECIPIENT_V2, "isAccountAuthorizedSigner", "true" if signer.authorized else "false")
        _sub(account, RECIPIENT_V2, "UserIdentity", user)
        _sub(account, RECIPIENT_V2, "CompanyId", signer.company)
        _sub(account, RECIPIENT_V2, "CompanyName", signer.company_name)
        _sub(account, RECIPIENT_V2, "CompanySignatureRuleText", signer.rule_text)
        for person in signer.possible_signers:
            possible = _sub(account, RECIPIENT_V2, "PossibleSigners")
            _sub(possible, AUTHORITY, "Id", person.id)
            _sub(possible, AUTHORITY, "Name", person.name)
        if signer.account_status is not None:
            information = _sub(account, RECIPIENT_V2, "AccountInformation")
            _sub(information, RECIPIENT_V2, "AccountStatus", signer.account_status)
            complete = "Complete" if signer.account_status == "Active" else "Incomplete"
            _sub(
                information, RECIPIENT_V2, "SignatureStatus", complete if signer.rule_supported else "RulesNotSupported"
            )
            _sub(information, RECIPIENT_V2, "serviceSupplier", signer.operator_name or "")
        return _envelope(root)
    # getPendingAccountPreferences
    raise NotFound("no account preferences are pending: FaR stores them when they are signed")
