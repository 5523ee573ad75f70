"""SOAP envelopes carrying eb:Messaging: the model to XML and back (no MIME here; see ``mime``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lxml import etree

from accesspoint.core.errors import EbmsError, ErrorCode
from accesspoint.core.model import (
    AgreementRef,
    AS4Header,
    CollaborationInfo,
    Description,
    ErrorInfo,
    MessageInfo,
    Messaging,
    PartInfo,
    PartSchema,
    Party,
    PartyId,
    PartyInfo,
    Property,
    PullRequest,
    Receipt,
    ReferenceEcho,
    Service,
    SignalMessage,
    Transform,
    UserMessage,
)
from accesspoint.core.namespaces import NS, SoapVersion
from accesspoint.core.timestamps import format_timestamp, parse_timestamp
from accesspoint.core.xml import check_unique_ids, parse_xml, validate_messaging

EB: Final = f"{{{NS.EBMS}}}"
DS: Final = f"{{{NS.DS}}}"
EBBP: Final = f"{{{NS.EBBP}}}"
WSU_ID: Final = f"{{{NS.WSU}}}Id"
WSSE_SECURITY: Final = f"{{{NS.WSSE}}}Security"
XML_LANG: Final = f"{{{NS.XML}}}lang"
EC_INCLUSIVE: Final = f"{{{NS.EC}}}InclusiveNamespaces"

DEFAULT_MESSAGING_ID: Final = "_ebmsMessaging"
DEFAULT_BODY_ID: Final = "_soapBody"

_SOAP_PREFIX = {SoapVersion.V12: "env", SoapVersion.V11: "soapenv"}
_SOAP12_ENVELOPE: Final = f"{{{NS.SOAP12}}}Envelope"
_SOAP11_ENVELOPE: Final = f"{{{NS.SOAP11}}}Envelope"
_MESSAGING: Final = f"{EB}Messaging"
_USER_MESSAGE: Final = f"{EB}UserMessage"
_SIGNAL_MESSAGE: Final = f"{EB}SignalMessage"
_RECEIPT: Final = f"{EB}Receipt"
_MESSAGE_FRAGMENT: Final = f"{{{NS.EBINT}}}MessageFragment"


# --------------------------------------------------------------------------------------------- building


def build_envelope(
    header: AS4Header,
    *,
    soap_version: SoapVersion = SoapVersion.V12,
    messaging_id: str = DEFAULT_MESSAGING_ID,
    body_id: str = DEFAULT_BODY_ID,
    body_payload: etree._Element | None = None,
) -> etree._Element:
    """Build a SOAP envelope whose header is eb:Messaging (mustUnderstand, wsu:Id) and whose Body has a wsu:Id.

    The Body is empty unless ``body_payload`` is given (AS4 puts payloads in MIME parts).
    """
    soap = f"{{{soap_version.value}}}"
    nsmap = {_SOAP_PREFIX[soap_version]: soap_version.value, "eb": NS.EBMS.value, "wsu": NS.WSU.value}
    envelope = etree.Element(f"{soap}Envelope", nsmap=nsmap)
    soap_header = etree.SubElement(envelope, f"{soap}Header")
    messaging = etree.SubElement(soap_header, f"{EB}Messaging")
    messaging.set(f"{soap}mustUnderstand", "true" if soap_version is SoapVersion.V12 else "1")
    messaging.set(WSU_ID, messaging_id)
    if isinstance(header, UserMessage):
        _add_user_message(messaging, header)
    else:
        _add_signal_message(messaging, header)
    body = etree.SubElement(envelope, f"{soap}Body")
    body.set(WSU_ID, body_id)
    if body_payload is not None:
        body.append(body_payload)
    return envelope


def serialize(envelope: etree._Element) -> bytes:
    """The envelope as UTF-8 bytes with an XML declaration."""
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _text(parent: etree._Element, tag: str, text: str) -> etree._Element:
    element = etree.SubElement(parent, tag)
    element.text = text
    return element


def _opt(element: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        element.set(name, value)


def _add_message_info(parent: etree._Element, info: MessageInfo) -> None:
    message_info = etree.SubElement(parent, f"{EB}MessageInfo")
    _text(message_info, f"{EB}Timestamp", format_timestamp(info.timestamp))
    _text(message_info, f"{EB}MessageId", info.message_id)
    if info.ref_to_message_id is not None:
        _text(message_info, f"{EB}RefToMessageId", info.ref_to_message_id)


def _add_party(parent: etree._Element, tag: str, party: Party) -> None:
    element = etree.SubElement(parent, f"{EB}{tag}")
    for party_id in party.party_ids:
        _opt(_text(element, f"{EB}PartyId", party_id.value), "type", party_id.type)
    _text(element, f"{EB}Role", party.role)


def _add_properties(parent: etree._Element, tag: str, properties: Sequence[Property]) -> None:
    if not properties:
        return
    container = etree.SubElement(parent, f"{EB}{tag}")
    for prop in properties:
        element = _text(container, f"{EB}Property", prop.value)
        element.set("name", prop.name)
        _opt(element, "type", prop.type)


def _add_user_message(messaging: etree._Element, message: UserMessage) -> None:
    user = etree.SubElement(messaging, f"{EB}UserMessage")
    _opt(user, "mpc", message.mpc)
    _add_message_info(user, message.message_info)
    party_info = etree.SubElement(user, f"{EB}PartyInfo")
    _add_party(party_info, "From", message.party_info.sender)
    _add_party(party_info, "To", message.party_info.receiver)
    collaboration = message.collaboration_info
    collab = etree.SubElement(user, f"{EB}CollaborationInfo")
    if collaboration.agreement_ref is not None:
        agreement = _text(collab, f"{EB}AgreementRef", collaboration.agreement_ref.value)
        _opt(agreement, "type", collaboration.agreement_ref.type)
        _opt(agreement, "pmode", collaboration.agreement_ref.pmode)
    _opt(_text(collab, f"{EB}Service", collaboration.service.value), "type", collaboration.service.type)
    _text(collab, f"{EB}Action", collaboration.action)
    _text(collab, f"{EB}ConversationId", collaboration.conversation_id)
    _add_properties(user, "MessageProperties", message.message_properties)
    if message.payload_info:
        payload_info = etree.SubElement(user, f"{EB}PayloadInfo")
        for part in message.payload_info:
            part_info = etree.SubElement(payload_info, f"{EB}PartInfo")
            _opt(part_info, "href", part.href)
            if part.schema is not None:
                schema = etree.SubElement(part_info, f"{EB}Schema")
                schema.set("location", part.schema.location)
                _opt(schema, "version", part.schema.version)
                _opt(schema, "namespace", part.schema.namespace)
            if part.description is not None:
                _text(part_info, f"{EB}Description", part.description.text).set(XML_LANG, part.description.lang)
            _add_properties(part_info, "PartProperties", part.properties)


def _add_reference(parent: etree._Element, reference: ReferenceEcho) -> None:
    element = etree.SubElement(parent, f"{DS}Reference", nsmap={"ds": NS.DS.value})
    element.set("URI", reference.uri)
    if reference.transforms:
        transforms = etree.SubElement(element, f"{DS}Transforms")
        for transform in reference.transforms:
            item = etree.SubElement(transforms, f"{DS}Transform")
            item.set("Algorithm", transform.algorithm)
            if transform.inclusive_prefixes is not None:
                inclusive = etree.SubElement(item, EC_INCLUSIVE, nsmap={"ec": NS.EC.value})
                inclusive.set("PrefixList", " ".join(transform.inclusive_prefixes))
    etree.SubElement(element, f"{DS}DigestMethod").set("Algorithm", reference.digest_method)
    _text(element, f"{DS}DigestValue", reference.digest_value)


def _add_signal_message(messaging: etree._Element, signal: SignalMessage) -> None:
    element = etree.SubElement(messaging, f"{EB}SignalMessage")
    _add_message_info(element, signal.message_info)
    if signal.pull_request is not None:
        etree.SubElement(element, f"{EB}PullRequest").set("mpc", signal.pull_request.mpc)
    if signal.receipt is not None:
        receipt = etree.SubElement(element, f"{EB}Receipt")
        if signal.receipt.references:
            nri = etree.SubElement(receipt, f"{EBBP}NonRepudiationInformation", nsmap={"ebbp": NS.EBBP.value})
            for reference in signal.receipt.references:
                _add_reference(etree.SubElement(nri, f"{EBBP}MessagePartNRInformation"), reference)
        elif signal.receipt.user_message is not None:
            # AS4 section 5.1.8: the receipt of an unsigned message carries a copy of its eb:UserMessage.
            _add_user_message(receipt, signal.receipt.user_message)
    for error in signal.errors:
        item = etree.SubElement(element, f"{EB}Error")
        _opt(item, "category", error.category)
        _opt(item, "refToMessageInError", error.ref_to_message_in_error)
        item.set("errorCode", error.error_code)
        _opt(item, "origin", error.origin)
        item.set("severity", error.severity)
        _opt(item, "shortDescription", error.short_description)
        if error.description is not None:
            _text(item, f"{EB}Description", error.description.text).set(XML_LANG, error.description.lang)
        if error.detail is not None:
            _text(item, f"{EB}ErrorDetail", error.detail)


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """A parsed SOAP envelope: the typed header plus the tree, kept for the security layer."""

    messaging: Messaging
    envelope: etree._Element
    messaging_element: etree._Element
    body: etree._Element
    ids: dict[str, etree._Element]

    @property
    def soap_version(self) -> SoapVersion:
        """The SOAP version of the envelope."""
        return self.messaging.soap_version

    @property
    def header(self) -> AS4Header:
        """The user or signal message."""
        return self.messaging.message

    @property
    def security_header(self) -> etree._Element | None:
        """The wsse:Security header, if any."""
        soap_header = self.messaging_element.getparent()
        return None if soap_header is None else soap_header.find(WSSE_SECURITY)

    @property
    def body_payload(self) -> etree._Element | None:
        """The first element child of the Body (a payload or a SOAP Fault), if any."""
        for child in self.body:
            if isinstance(child.tag, str):
                return child
        return None


def parse_envelope(data: bytes, *, validate: bool = True) -> ParsedEnvelope:
    """Parse a SOAP 1.2 or 1.1 envelope carrying exactly one ebMS user or signal message.

    Raises EbmsError: EBMS:0009 for anything structurally invalid, EBMS:0003 for bundling and inconsistent
    values, EBMS:0002 for ebMS Part 2 features.
    """
    root = parse_xml(data)
    return parse_envelope_tree(root, validate=validate)


def parse_envelope_tree(root: etree._Element, *, validate: bool = True) -> ParsedEnvelope:
    """Like ``parse_envelope``, over an already (safely) parsed tree."""
    tag = root.tag
    if tag == _SOAP12_ENVELOPE:
        soap_version = SoapVersion.V12
    elif tag == _SOAP11_ENVELOPE:
        soap_version = SoapVersion.V11
    else:
        etree.QName(root)  # a node that is no element fails here, as it always has
        raise EbmsError(ErrorCode.INVALID_HEADER, f"root element {root.tag!r} is not a SOAP envelope")
    soap = f"{{{soap_version.value}}}"
    parts = _by_tag(root)
    soap_header = _first(parts, f"{soap}Header")
    body = _first(parts, f"{soap}Body")
    if body is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, "SOAP envelope has no Body")
    # A receipt may carry a copy of the received message, eb:Messaging included (ph-as4 does so); every
    # other eb:Messaging than the one Header child is a signature-wrapping sign.
    messagings = [m for m in root.iter(_MESSAGING) if not _inside_receipt(m)]
    if not messagings:
        raise EbmsError(ErrorCode.INVALID_HEADER, "SOAP header has no eb:Messaging")
    if len(messagings) > 1:
        raise EbmsError(ErrorCode.INVALID_HEADER, "the envelope carries more than one eb:Messaging")
    messaging = messagings[0]
    if soap_header is None or messaging.getparent() is not soap_header:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:Messaging is not a child of the SOAP Header")
    ids = check_unique_ids(root)
    if validate:
        validate_messaging(messaging)
    # A MessageFragment anywhere below the Envelope (a Header block, or inside eb:Messaging) is Part 2; the
    # root itself is the Envelope, so iterating from it finds exactly the descendants (in C, no ElementPath).
    if next(root.iter(_MESSAGE_FRAGMENT), None) is not None:
        raise EbmsError(ErrorCode.FEATURE_NOT_SUPPORTED, "ebMS 3 Part 2 split and join is not supported")
    messages = _by_tag(messaging)
    users = messages.get(_USER_MESSAGE, _NO_CHILDREN)
    signals = messages.get(_SIGNAL_MESSAGE, _NO_CHILDREN)
    if not users and not signals:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:Messaging holds neither a UserMessage nor a SignalMessage")
    if len(users) + len(signals) > 1:
        raise EbmsError(
            ErrorCode.VALUE_INCONSISTENT,
            f"AS4 forbids bundling: eb:Messaging holds {len(users)} UserMessage and {len(signals)} SignalMessage",
        )
    header: AS4Header = read_user_message(users[0]) if users else read_signal_message(signals[0])
    if isinstance(header, UserMessage):
        _check_body_parts(header, body, ids)
    return ParsedEnvelope(
        messaging=Messaging(header, soap_version),
        envelope=root,
        messaging_element=messaging,
        body=body,
        ids=ids,
    )


def _inside_receipt(element: etree._Element) -> bool:
    return next(element.iterancestors(_RECEIPT), None) is not None


def _check_body_parts(message: UserMessage, body: etree._Element, ids: dict[str, etree._Element]) -> None:
    # ebMS 3 section 5.2.2.13: no href means the Body; "#id" means an element of the Body.
    body_parts = [part for part in message.payload_info if part.href is None or part.href.startswith("#")]
    has_payload = any(isinstance(child.tag, str) for child in body)
    if len(body_parts) > 1:
        raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "more than one PartInfo refers to the SOAP Body")
    if body_parts and not has_payload:
        raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "a PartInfo refers to the SOAP Body, which is empty")
    if has_payload and not body_parts:
        raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "the SOAP Body carries a payload that no PartInfo describes")
    for part in body_parts:
        if part.href is None:
            continue
        target = ids.get(part.href[1:])
        if target is None or not (target is body or any(a is body for a in target.iterancestors())):
            raise EbmsError(ErrorCode.EXTERNAL_PAYLOAD_ERROR, f"PartInfo href {part.href!r} is not in the SOAP Body")
    hrefs = [part.href for part in message.payload_info if part.href is not None]
    if len(set(hrefs)) != len(hrefs):
        raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "two PartInfo elements share an href")


def _child(parent: etree._Element, tag: str) -> etree._Element | None:
    """``parent.find(tag)`` for a plain ``{ns}name`` tag: the first such child, without ElementPath's overhead."""
    for child in parent:
        if child.tag == tag:
            return child
    return None


def _children(parent: etree._Element, tag: str) -> list[etree._Element]:
    """``parent.findall(tag)`` for a plain ``{ns}name`` tag: those children in document order."""
    return [child for child in parent if child.tag == tag]


_NO_CHILDREN: Final[list[etree._Element]] = []


def _by_tag(parent: etree._Element) -> dict[object, list[etree._Element]]:
    """The children of ``parent`` grouped by tag, each group in document order, in one pass.

    Each ``child.tag`` builds a new ``{ns}name`` string and each child a new proxy, so scanning the children
    once per wanted tag (as ``_child`` does) costs a header's reader several times what one pass does.
    """
    groups: dict[object, list[etree._Element]] = {}
    for child in parent:
        group = groups.get(child.tag)
        if group is None:
            groups[child.tag] = [child]
        else:
            group.append(child)
    return groups


def _first(groups: dict[object, list[etree._Element]], tag: str) -> etree._Element | None:
    """The first child with that tag, from ``_by_tag``'s groups."""
    group = groups.get(tag)
    return None if group is None else group[0]


def _value(element: etree._Element | None, what: str) -> str:
    """Whitespace-stripped text of a required element (pretty-printing peers pad values with newlines)."""
    if element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} is missing")
    text = (element.text or "").strip()
    if not text:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what} is empty")
    return text


def _attr(element: etree._Element, name: str) -> str | None:
    value = element.get(name)
    return None if value is None else value.strip()


# The tags the readers look for, built once (an f-string per lookup is measurable on a small header).
_MESSAGE_INFO: Final = f"{EB}MessageInfo"
_TIMESTAMP: Final = f"{EB}Timestamp"
_MESSAGE_ID: Final = f"{EB}MessageId"
_REF_TO_MESSAGE_ID: Final = f"{EB}RefToMessageId"
_PARTY_INFO: Final = f"{EB}PartyInfo"
_PARTY_ID: Final = f"{EB}PartyId"
_ROLE: Final = f"{EB}Role"
_COLLABORATION_INFO: Final = f"{EB}CollaborationInfo"
_AGREEMENT_REF: Final = f"{EB}AgreementRef"
_SERVICE: Final = f"{EB}Service"
_ACTION: Final = f"{EB}Action"
_CONVERSATION_ID: Final = f"{EB}ConversationId"
_MESSAGE_PROPERTIES: Final = f"{EB}MessageProperties"
_PROPERTY: Final = f"{EB}Property"
_PAYLOAD_INFO: Final = f"{EB}PayloadInfo"
_PART_INFO: Final = f"{EB}PartInfo"
_SCHEMA: Final = f"{EB}Schema"
_PART_PROPERTIES: Final = f"{EB}PartProperties"
_DESCRIPTION: Final = f"{EB}Description"


def read_message_info(parent: etree._Element, where: str) -> MessageInfo:
    """Read eb:MessageInfo (Timestamp, MessageId, RefToMessageId)."""
    return _read_message_info(_child(parent, _MESSAGE_INFO), where)


def _read_message_info(info: etree._Element | None, where: str) -> MessageInfo:
    if info is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{where} has no eb:MessageInfo")
    children = _by_tag(info)
    timestamp_text = _value(_first(children, _TIMESTAMP), f"{where}/MessageInfo/Timestamp")
    message_id = _value(_first(children, _MESSAGE_ID), f"{where}/MessageInfo/MessageId")
    ref = _first(children, _REF_TO_MESSAGE_ID)
    return MessageInfo(
        message_id=message_id,
        timestamp=parse_timestamp(timestamp_text),
        ref_to_message_id=None if ref is None else _value(ref, f"{where}/MessageInfo/RefToMessageId"),
        timestamp_text=timestamp_text,
    )


def _read_party(party_info: dict[object, list[etree._Element]], tag: str) -> Party:
    element = _first(party_info, f"{EB}{tag}")
    if element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:PartyInfo has no eb:{tag}")
    children = _by_tag(element)
    where = f"{tag}/PartyId"
    party_ids = tuple(
        PartyId(_value(item, where), _attr(item, "type")) for item in children.get(_PARTY_ID, _NO_CHILDREN)
    )
    if not party_ids:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:{tag} has no eb:PartyId")
    return Party(party_ids=party_ids, role=_value(_first(children, _ROLE), f"{tag}/Role"))


def _read_properties(container: etree._Element | None, where: str) -> tuple[Property, ...]:
    if container is None:
        return ()
    properties = []
    for item in container:
        if item.tag != _PROPERTY:
            continue
        name = _attr(item, "name")
        if not name:
            raise EbmsError(ErrorCode.INVALID_HEADER, f"a {where} Property has no name")
        properties.append(
            Property(name=name, value=_value(item, f"{where} Property {name!r}"), type=_attr(item, "type"))
        )
    return tuple(properties)


def _read_description(element: etree._Element | None) -> Description | None:
    if element is None:
        return None
    return Description((element.text or "").strip(), element.get(XML_LANG) or "en")


def _read_part_info(part: etree._Element) -> PartInfo:
    children = _by_tag(part)
    schema = _first(children, _SCHEMA)
    return PartInfo(
        href=_attr(part, "href") or None,
        properties=_read_properties(_first(children, _PART_PROPERTIES), "PartProperties"),
        schema=None
        if schema is None
        else PartSchema(schema.get("location", ""), schema.get("version"), schema.get("namespace")),
        description=_read_description(_first(children, _DESCRIPTION)),
    )


def read_user_message(user: etree._Element) -> UserMessage:
    """Read eb:UserMessage into the model."""
    # Every lookup below reads one pass over a parent's children (``_by_tag``); the checks and the order in
    # which they fail are those of one ``find`` per element.
    children = _by_tag(user)
    message_info = _read_message_info(_first(children, _MESSAGE_INFO), "eb:UserMessage")
    party_info = _first(children, _PARTY_INFO)
    if party_info is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:UserMessage has no eb:PartyInfo")
    collab_element = _first(children, _COLLABORATION_INFO)
    if collab_element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:UserMessage has no eb:CollaborationInfo")
    collab = _by_tag(collab_element)
    agreement = _first(collab, _AGREEMENT_REF)
    service = _first(collab, _SERVICE)
    payload_info = _first(children, _PAYLOAD_INFO)
    parts: tuple[PartInfo, ...] = ()
    if payload_info is not None:
        parts = tuple(_read_part_info(part) for part in payload_info if part.tag == _PART_INFO)
    parties = _by_tag(party_info)
    return UserMessage(
        message_info=message_info,
        party_info=PartyInfo(sender=_read_party(parties, "From"), receiver=_read_party(parties, "To")),
        collaboration_info=CollaborationInfo(
            service=Service(
                _value(service, "CollaborationInfo/Service"), None if service is None else _attr(service, "type")
            ),
            action=_value(_first(collab, _ACTION), "CollaborationInfo/Action"),
            conversation_id=_value(_first(collab, _CONVERSATION_ID), "CollaborationInfo/ConversationId"),
            agreement_ref=None
            if agreement is None
            else AgreementRef(_value(agreement, "AgreementRef"), _attr(agreement, "type"), _attr(agreement, "pmode")),
        ),
        message_properties=_read_properties(_first(children, _MESSAGE_PROPERTIES), "MessageProperties"),
        payload_info=parts,
        mpc=_attr(user, "mpc") or None,
    )


def read_reference(reference: etree._Element) -> ReferenceEcho:
    """Read a ds:Reference (URI, transforms, digest) as a receipt echoes it."""
    transforms = []
    for transform in reference.iterfind(f"{DS}Transforms/{DS}Transform"):
        inclusive = transform.find(EC_INCLUSIVE)
        transforms.append(
            Transform(
                algorithm=transform.get("Algorithm", ""),
                inclusive_prefixes=None if inclusive is None else tuple(inclusive.get("PrefixList", "").split()),
            )
        )
    digest_method = reference.find(f"{DS}DigestMethod")
    return ReferenceEcho(
        uri=reference.get("URI", ""),
        digest_method="" if digest_method is None else digest_method.get("Algorithm", ""),
        digest_value="".join((reference.findtext(f"{DS}DigestValue") or "").split()),
        transforms=tuple(transforms),
    )


def read_signal_message(signal: etree._Element) -> SignalMessage:
    """Read eb:SignalMessage (receipt, errors or pull request) into the model."""
    message_info = read_message_info(signal, "eb:SignalMessage")
    receipt_element = _child(signal, f"{EB}Receipt")
    pull = _child(signal, f"{EB}PullRequest")
    errors = tuple(_read_error(item) for item in _children(signal, f"{EB}Error"))
    receipt = None
    if receipt_element is not None:
        references = tuple(
            read_reference(item)
            for item in receipt_element.iterfind(
                f"{EBBP}NonRepudiationInformation/{EBBP}MessagePartNRInformation/{DS}Reference"
            )
        )
        # The copy of an unsigned message: eb:UserMessage directly (AS4) or inside a whole envelope (ph-as4).
        copied = next(receipt_element.iter(f"{EB}UserMessage"), None)
        receipt = Receipt(references=references, user_message=None if copied is None else read_user_message(copied))
        if message_info.ref_to_message_id is None:
            raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "a Receipt signal must carry RefToMessageId")
    kinds = sum(x is not None and x != () for x in (receipt, errors, pull))
    if kinds == 0:
        raise EbmsError(ErrorCode.VALUE_NOT_RECOGNIZED, "eb:SignalMessage holds no Receipt, Error or PullRequest")
    if kinds > 1:
        raise EbmsError(ErrorCode.VALUE_INCONSISTENT, "eb:SignalMessage mixes Receipt, Error and PullRequest")
    return SignalMessage(
        message_info=message_info,
        receipt=receipt,
        errors=errors,
        pull_request=None if pull is None else PullRequest(_attr(pull, "mpc") or PullRequest().mpc),
    )


def _read_error(element: etree._Element) -> ErrorInfo:
    detail = _child(element, f"{EB}ErrorDetail")
    return ErrorInfo(
        error_code=_attr(element, "errorCode") or "",
        severity=_attr(element, "severity") or "",
        category=_attr(element, "category"),
        short_description=_attr(element, "shortDescription"),
        ref_to_message_in_error=_attr(element, "refToMessageInError") or None,
        origin=_attr(element, "origin"),
        description=_read_description(_child(element, f"{EB}Description")),
        detail=None if detail is None else (detail.text or "").strip() or None,
    )
