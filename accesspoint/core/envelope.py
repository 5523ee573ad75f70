"""SOAP envelopes carrying eb:Messaging: the model to XML and back (no MIME here; see ``mime``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from lxml import etree

from accesspoint.core.conformance import Deviation, message_id_deviation, soap_deviations
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
from accesspoint.core.xml import check_unique_ids, parse_xml, string_value, validate_messaging

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
#
# The envelope's structure is written once, by the ``_write_*`` functions, against a writer with two
# implementations. ``_TreeWriter`` makes the tree with lxml calls (SubElement, text, set) in the order the
# structure gives. ``_TextWriter`` writes the same elements as XML text, which lxml parses into the same tree
# several times faster than the API builds it (one C parse instead of a Python call per element, text and
# attribute). The text writer takes no risk with the values: it inserts them unescaped, and it is used only
# when none of them holds a markup character (& < > "), whitespace the parser would normalise (tab, CR, LF),
# or a character lxml refuses; any other value, an empty text, a value that is not a string or any surprise
# sends the whole envelope to the tree writer, which behaves (and fails) exactly as the API does.

# A name as the two writers need it: Clark notation for lxml, the prefixed name for text.
_Name = tuple[str, str]
# An attribute: its name, whether it is left out when its value is None, and the value.
_Attribute = tuple[_Name, bool, str | None]


def _eb(local: str) -> _Name:
    return f"{EB}{local}", f"eb:{local}"


def _ds(local: str) -> _Name:
    return f"{DS}{local}", f"ds:{local}"


def _unqualified(name: str) -> _Name:
    return name, name


_MESSAGE_INFO_NAME: Final = _eb("MessageInfo")
_TIMESTAMP_NAME: Final = _eb("Timestamp")
_MESSAGE_ID_NAME: Final = _eb("MessageId")
_REF_TO_MESSAGE_ID_NAME: Final = _eb("RefToMessageId")
_FROM_NAME: Final = _eb("From")
_TO_NAME: Final = _eb("To")
_PARTY_ID_NAME: Final = _eb("PartyId")
_ROLE_NAME: Final = _eb("Role")
_PROPERTY_NAME: Final = _eb("Property")
_USER_MESSAGE_NAME: Final = _eb("UserMessage")
_PARTY_INFO_NAME: Final = _eb("PartyInfo")
_COLLABORATION_INFO_NAME: Final = _eb("CollaborationInfo")
_AGREEMENT_REF_NAME: Final = _eb("AgreementRef")
_SERVICE_NAME: Final = _eb("Service")
_ACTION_NAME: Final = _eb("Action")
_CONVERSATION_ID_NAME: Final = _eb("ConversationId")
_MESSAGE_PROPERTIES_NAME: Final = _eb("MessageProperties")
_PAYLOAD_INFO_NAME: Final = _eb("PayloadInfo")
_PART_INFO_NAME: Final = _eb("PartInfo")
_SCHEMA_NAME: Final = _eb("Schema")
_DESCRIPTION_NAME: Final = _eb("Description")
_PART_PROPERTIES_NAME: Final = _eb("PartProperties")
_SIGNAL_MESSAGE_NAME: Final = _eb("SignalMessage")
_PULL_REQUEST_NAME: Final = _eb("PullRequest")
_RECEIPT_NAME: Final = _eb("Receipt")
_ERROR_NAME: Final = _eb("Error")
_ERROR_DETAIL_NAME: Final = _eb("ErrorDetail")
_MESSAGING_NAME: Final = _eb("Messaging")
_NRI_NAME: Final = f"{EBBP}NonRepudiationInformation", "ebbp:NonRepudiationInformation"
_PART_NRI_NAME: Final = f"{EBBP}MessagePartNRInformation", "ebbp:MessagePartNRInformation"
_REFERENCE_NAME: Final = _ds("Reference")
_TRANSFORMS_NAME: Final = _ds("Transforms")
_TRANSFORM_NAME: Final = _ds("Transform")
_DIGEST_METHOD_NAME: Final = _ds("DigestMethod")
_DIGEST_VALUE_NAME: Final = _ds("DigestValue")
_INCLUSIVE_NAME: Final = EC_INCLUSIVE, "ec:InclusiveNamespaces"
_WSU_ID_NAME: Final = WSU_ID, "wsu:Id"
_XML_LANG_NAME: Final = XML_LANG, "xml:lang"
_TYPE_ATTRIBUTE: Final = _unqualified("type")
_NAME_ATTRIBUTE: Final = _unqualified("name")
_MPC_ATTRIBUTE: Final = _unqualified("mpc")
_PMODE_ATTRIBUTE: Final = _unqualified("pmode")
_HREF_ATTRIBUTE: Final = _unqualified("href")
_LOCATION_ATTRIBUTE: Final = _unqualified("location")
_VERSION_ATTRIBUTE: Final = _unqualified("version")
_NAMESPACE_ATTRIBUTE: Final = _unqualified("namespace")
_URI_ATTRIBUTE: Final = _unqualified("URI")
_ALGORITHM_ATTRIBUTE: Final = _unqualified("Algorithm")
_PREFIX_LIST_ATTRIBUTE: Final = _unqualified("PrefixList")
_CATEGORY_ATTRIBUTE: Final = _unqualified("category")
_REF_TO_MESSAGE_IN_ERROR_ATTRIBUTE: Final = _unqualified("refToMessageInError")
_ERROR_CODE_ATTRIBUTE: Final = _unqualified("errorCode")
_ORIGIN_ATTRIBUTE: Final = _unqualified("origin")
_SEVERITY_ATTRIBUTE: Final = _unqualified("severity")
_SHORT_DESCRIPTION_ATTRIBUTE: Final = _unqualified("shortDescription")
_DS_NSMAP: Final = {"ds": NS.DS.value}
_EBBP_NSMAP: Final = {"ebbp": NS.EBBP.value}
_EC_NSMAP: Final = {"ec": NS.EC.value}


@dataclass(frozen=True, slots=True)
class _SoapNames:
    """What the writers need of one SOAP version, worked out once."""

    envelope: _Name
    header: _Name
    body: _Name
    must_understand: _Name
    must_understand_value: str
    nsmap: dict[str, str]
    text_start: str  # the Envelope's start tag as the text writer writes it, namespace declarations included
    text_end: str


def _soap_names(version: SoapVersion) -> _SoapNames:
    prefix = _SOAP_PREFIX[version]
    clark = f"{{{version.value}}}"
    nsmap = {prefix: version.value, "eb": NS.EBMS.value, "wsu": NS.WSU.value}
    declarations = "".join(f' xmlns:{name}="{uri}"' for name, uri in nsmap.items())
    return _SoapNames(
        envelope=(f"{clark}Envelope", f"{prefix}:Envelope"),
        header=(f"{clark}Header", f"{prefix}:Header"),
        body=(f"{clark}Body", f"{prefix}:Body"),
        must_understand=(f"{clark}mustUnderstand", f"{prefix}:mustUnderstand"),
        must_understand_value="true" if version is SoapVersion.V12 else "1",
        nsmap=nsmap,
        text_start=f"<{prefix}:Envelope{declarations}>",
        text_end=f"</{prefix}:Envelope>",
    )


_SOAP_NAMES: Final = {version: _soap_names(version) for version in SoapVersion}


class _TreeWriter:
    """Builds the tree with lxml's API, element by element."""

    def __init__(self, tag: str, nsmap: dict[str, str]) -> None:
        self.root = etree.Element(tag, nsmap=nsmap)
        self._open = [self.root]

    def start(self, name: _Name, attributes: Sequence[_Attribute] = (), nsmap: dict[str, str] | None = None) -> None:
        self._open.append(self._element(name, None, attributes, nsmap))

    def end(self) -> None:
        self._open.pop()

    def leaf(self, name: _Name, text: str | None, attributes: Sequence[_Attribute] = ()) -> None:
        self._element(name, text, attributes, None)

    def empty(self, name: _Name, attributes: Sequence[_Attribute], nsmap: dict[str, str] | None = None) -> None:
        self._element(name, None, attributes, nsmap)

    def _element(
        self, name: _Name, text: str | None, attributes: Sequence[_Attribute], nsmap: dict[str, str] | None
    ) -> etree._Element:
        element = etree.SubElement(self._open[-1], name[0], nsmap=nsmap)
        if text is not None:
            element.text = text
        for (attribute, _), optional, value in attributes:
            if value is not None or not optional:
                element.set(attribute, value)  # type: ignore[arg-type]  # None: lxml's TypeError, as ever
        return element


# Bytes that make a value unfit for the text writer (see above): markup, C0 controls (among them the tab, CR
# and LF the parser normalises in attributes). Surrogates fail to encode; U+FFFE and U+FFFF are checked apart.
_NOT_PLAIN_BYTES = bytes(range(0x20)) + b'&<>"'
_NON_CHARACTERS = ("\ufffe".encode(), "\uffff".encode())


def _plain_text(text: str) -> bool:
    """True when ``text`` holds no character that the text writer may not insert as it is."""
    try:
        data = text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    if len(data.translate(None, _NOT_PLAIN_BYTES)) != len(data):
        return False
    return text.isascii() or not any(character in data for character in _NON_CHARACTERS)


# The text writer's output is this module's own, but it goes through the same safe settings all the same.
_TEXT_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, collect_ids=False
)


class _TextWriter:
    """Writes the elements as XML text, keeping every value aside for the check that it is plain."""

    def __init__(self, start: str, end: str) -> None:
        self._out = [start]
        self._close = [end]
        self._values: list[str | None] = []
        self._empty_text = False

    def start(self, name: _Name, attributes: Sequence[_Attribute] = (), nsmap: dict[str, str] | None = None) -> None:
        tag = name[1]
        self._out.append(f"<{tag}{self._attributes(attributes, nsmap)}>" if attributes or nsmap else f"<{tag}>")
        self._close.append(f"</{tag}>")

    def end(self) -> None:
        self._out.append(self._close.pop())

    def leaf(self, name: _Name, text: str | None, attributes: Sequence[_Attribute] = ()) -> None:
        if not text:
            self._empty_text = True  # "" is an empty text node for lxml, and no text at all once parsed
        self._values.append(text)
        tag = name[1]
        if attributes:
            self._out.append(f"<{tag}{self._attributes(attributes, None)}>{text}</{tag}>")
        else:
            self._out.append(f"<{tag}>{text}</{tag}>")

    def empty(self, name: _Name, attributes: Sequence[_Attribute], nsmap: dict[str, str] | None = None) -> None:
        self._out.append(f"<{name[1]}{self._attributes(attributes, nsmap)}/>")

    def _attributes(self, attributes: Sequence[_Attribute], nsmap: dict[str, str] | None) -> str:
        # Only ds, ebbp and ec are declared below the Envelope, each where no ancestor declares it (lxml adds a
        # declaration only then), so the parsed tree declares them where the API does.
        text = "".join([f' xmlns:{prefix}="{uri}"' for prefix, uri in nsmap.items()]) if nsmap else ""
        for (_, attribute), optional, value in attributes:
            if value is not None or not optional:
                self._values.append(value)
                text += f' {attribute}="{value}"'
        return text

    def text(self) -> str | None:
        """The document as text, or None when a value is not plain (the caller then uses the tree writer)."""
        if self._empty_text:
            return None
        try:
            values = "".join(self._values)  # type: ignore[arg-type]  # a None or non-string: TypeError
        except TypeError:
            return None
        if not _plain_text(values):
            return None
        return "".join(self._out) + "".join(reversed(self._close))


_Writer = _TreeWriter | _TextWriter


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
    soap = _SOAP_NAMES[soap_version]
    text = _text_envelope(header, soap, messaging_id, body_id)
    envelope = None
    if text is not None:
        try:
            envelope = etree.fromstring(text.encode(), _TEXT_PARSER)
        except etree.XMLSyntaxError:  # pragma: no cover - plain values always parse; the API path decides
            envelope = None
    if envelope is None:
        tree = _TreeWriter(soap.envelope[0], soap.nsmap)
        _write_envelope(tree, header, soap, messaging_id, body_id)
        envelope = tree.root
    if body_payload is not None:
        envelope[-1].append(body_payload)  # the Body is the Envelope's last child
    return envelope


def serialize(envelope: etree._Element) -> bytes:
    """The envelope as UTF-8 bytes with an XML declaration."""
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


_XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"


def envelope_bytes(header: UserMessage, *, soap_version: SoapVersion = SoapVersion.V12) -> bytes:
    """``serialize(build_envelope(header))``, the same bytes, without parsing the text into a tree to serialise it.

    For an envelope that is kept rather than signed (a submission's header, kept to rebuild each attempt from).
    User messages only: a signal may hold an element without children, which lxml writes as ``<x/>``.
    """
    text = _text_envelope(header, _SOAP_NAMES[soap_version], DEFAULT_MESSAGING_ID, DEFAULT_BODY_ID)
    if text is None:
        return serialize(build_envelope(header, soap_version=soap_version))
    return (_XML_DECLARATION + text).encode()


def _text_envelope(header: AS4Header, soap: _SoapNames, messaging_id: str, body_id: str) -> str | None:
    """The envelope as the text writer writes it, or None when the tree writer must (a value not plain)."""
    writer = _TextWriter(soap.text_start, soap.text_end)
    try:
        _write_envelope(writer, header, soap, messaging_id, body_id)
        return writer.text()
    except Exception:  # any surprise (a bad model, a naive timestamp) is the API path's to raise
        return None


def _write_envelope(writer: _Writer, header: AS4Header, soap: _SoapNames, messaging_id: str, body_id: str) -> None:
    writer.start(soap.header)
    writer.start(
        _MESSAGING_NAME,
        ((soap.must_understand, False, soap.must_understand_value), (_WSU_ID_NAME, False, messaging_id)),
    )
    if isinstance(header, UserMessage):
        _write_user_message(writer, header)
    else:
        _write_signal_message(writer, header)
    writer.end()
    writer.end()
    writer.empty(soap.body, ((_WSU_ID_NAME, False, body_id),))


def _write_message_info(writer: _Writer, info: MessageInfo) -> None:
    writer.start(_MESSAGE_INFO_NAME)
    writer.leaf(_TIMESTAMP_NAME, format_timestamp(info.timestamp))
    writer.leaf(_MESSAGE_ID_NAME, info.message_id)
    if info.ref_to_message_id is not None:
        writer.leaf(_REF_TO_MESSAGE_ID_NAME, info.ref_to_message_id)
    writer.end()


def _write_party(writer: _Writer, name: _Name, party: Party) -> None:
    writer.start(name)
    for party_id in party.party_ids:
        writer.leaf(_PARTY_ID_NAME, party_id.value, ((_TYPE_ATTRIBUTE, True, party_id.type),))
    writer.leaf(_ROLE_NAME, party.role)
    writer.end()


def _write_properties(writer: _Writer, name: _Name, properties: Sequence[Property]) -> None:
    if not properties:
        return
    writer.start(name)
    for prop in properties:
        writer.leaf(
            _PROPERTY_NAME, prop.value, ((_NAME_ATTRIBUTE, False, prop.name), (_TYPE_ATTRIBUTE, True, prop.type))
        )
    writer.end()


def _write_user_message(writer: _Writer, message: UserMessage) -> None:
    writer.start(_USER_MESSAGE_NAME, ((_MPC_ATTRIBUTE, True, message.mpc),))
    _write_message_info(writer, message.message_info)
    writer.start(_PARTY_INFO_NAME)
    _write_party(writer, _FROM_NAME, message.party_info.sender)
    _write_party(writer, _TO_NAME, message.party_info.receiver)
    writer.end()
    collaboration = message.collaboration_info
    writer.start(_COLLABORATION_INFO_NAME)
    agreement = collaboration.agreement_ref
    if agreement is not None:
        writer.leaf(
            _AGREEMENT_REF_NAME,
            agreement.value,
            ((_TYPE_ATTRIBUTE, True, agreement.type), (_PMODE_ATTRIBUTE, True, agreement.pmode)),
        )
    writer.leaf(_SERVICE_NAME, collaboration.service.value, ((_TYPE_ATTRIBUTE, True, collaboration.service.type),))
    writer.leaf(_ACTION_NAME, collaboration.action)
    writer.leaf(_CONVERSATION_ID_NAME, collaboration.conversation_id)
    writer.end()
    _write_properties(writer, _MESSAGE_PROPERTIES_NAME, message.message_properties)
    if message.payload_info:
        writer.start(_PAYLOAD_INFO_NAME)
        for part in message.payload_info:
            writer.start(_PART_INFO_NAME, ((_HREF_ATTRIBUTE, True, part.href),))
            if part.schema is not None:
                schema = part.schema
                writer.empty(
                    _SCHEMA_NAME,
                    (
                        (_LOCATION_ATTRIBUTE, False, schema.location),
                        (_VERSION_ATTRIBUTE, True, schema.version),
                        (_NAMESPACE_ATTRIBUTE, True, schema.namespace),
                    ),
                )
            if part.description is not None:
                writer.leaf(_DESCRIPTION_NAME, part.description.text, ((_XML_LANG_NAME, False, part.description.lang),))
            _write_properties(writer, _PART_PROPERTIES_NAME, part.properties)
            writer.end()
        writer.end()
    writer.end()


def _write_reference(writer: _Writer, reference: ReferenceEcho) -> None:
    writer.start(_REFERENCE_NAME, ((_URI_ATTRIBUTE, False, reference.uri),), _DS_NSMAP)
    if reference.transforms:
        writer.start(_TRANSFORMS_NAME)
        for transform in reference.transforms:
            writer.start(_TRANSFORM_NAME, ((_ALGORITHM_ATTRIBUTE, False, transform.algorithm),))
            if transform.inclusive_prefixes is not None:
                prefixes = " ".join(transform.inclusive_prefixes)
                writer.empty(_INCLUSIVE_NAME, ((_PREFIX_LIST_ATTRIBUTE, False, prefixes),), _EC_NSMAP)
            writer.end()
        writer.end()
    writer.empty(_DIGEST_METHOD_NAME, ((_ALGORITHM_ATTRIBUTE, False, reference.digest_method),))
    writer.leaf(_DIGEST_VALUE_NAME, reference.digest_value)
    writer.end()


def _write_signal_message(writer: _Writer, signal: SignalMessage) -> None:
    writer.start(_SIGNAL_MESSAGE_NAME)
    _write_message_info(writer, signal.message_info)
    if signal.pull_request is not None:
        writer.empty(_PULL_REQUEST_NAME, ((_MPC_ATTRIBUTE, False, signal.pull_request.mpc),))
    if signal.receipt is not None:
        writer.start(_RECEIPT_NAME)
        if signal.receipt.references:
            writer.start(_NRI_NAME, (), _EBBP_NSMAP)
            for reference in signal.receipt.references:
                writer.start(_PART_NRI_NAME)
                _write_reference(writer, reference)
                writer.end()
            writer.end()
        elif signal.receipt.user_message is not None:
            # AS4 section 5.1.8: the receipt of an unsigned message carries a copy of its eb:UserMessage.
            _write_user_message(writer, signal.receipt.user_message)
        writer.end()
    for error in signal.errors:
        writer.start(
            _ERROR_NAME,
            (
                (_CATEGORY_ATTRIBUTE, True, error.category),
                (_REF_TO_MESSAGE_IN_ERROR_ATTRIBUTE, True, error.ref_to_message_in_error),
                (_ERROR_CODE_ATTRIBUTE, False, error.error_code),
                (_ORIGIN_ATTRIBUTE, True, error.origin),
                (_SEVERITY_ATTRIBUTE, False, error.severity),
                (_SHORT_DESCRIPTION_ATTRIBUTE, True, error.short_description),
            ),
        )
        if error.description is not None:
            writer.leaf(_DESCRIPTION_NAME, error.description.text, ((_XML_LANG_NAME, False, error.description.lang),))
        if error.detail is not None:
            writer.leaf(_ERROR_DETAIL_NAME, error.detail)
        writer.end()
    writer.end()


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True, slots=True)
class ParsedEnvelope:
    """A parsed SOAP envelope: the typed header plus the tree, kept for the security layer."""

    messaging: Messaging
    envelope: etree._Element
    messaging_element: etree._Element
    body: etree._Element
    ids: dict[str, etree._Element]
    # Departures from the AS4 wire format the envelope was read despite (``conformance.check_wire`` refuses them).
    deviations: tuple[Deviation, ...] = ()

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
    parts = _first_children(root)
    soap_header = parts.get(f"{soap}Header")
    body = parts.get(f"{soap}Body")
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
    users = _children(messaging, _USER_MESSAGE)
    signals = _children(messaging, _SIGNAL_MESSAGE)
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
    info = header.message_info
    bad_id = message_id_deviation(info.message_id, info.ref_to_message_id)
    deviations = soap_deviations(soap_version, messaging.get(f"{soap}mustUnderstand"), info.message_id)
    return ParsedEnvelope(
        messaging=Messaging(header, soap_version),
        envelope=root,
        messaging_element=messaging,
        body=body,
        ids=ids,
        deviations=deviations if bad_id is None else (*deviations, bad_id),
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


def _first_children(parent: etree._Element) -> dict[object, etree._Element]:
    """The first child of each tag (what ``_child`` finds), for all tags in one pass over the children.

    Each ``child.tag`` builds a new ``{ns}name`` string and each child a new proxy, so scanning the children
    once per wanted tag costs a header's reader several times what one pass does.
    """
    first: dict[object, etree._Element] = {}
    for child in parent:
        first.setdefault(child.tag, child)
    return first


def _value(element: etree._Element | None, what: str, detail: str = "") -> str:
    """Whitespace-stripped text of a required element (pretty-printing peers pad values with newlines).

    ``what`` and ``detail`` name it in the error, concatenated only when there is one.
    """
    if element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what}{detail} is missing")
    text = string_value(element).strip()
    if not text:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"{what}{detail} is empty")
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
_FROM: Final = f"{EB}From"
_TO: Final = f"{EB}To"
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
    children = _first_children(info)
    timestamp_text = _value(children.get(_TIMESTAMP), where, "/MessageInfo/Timestamp")
    message_id = _value(children.get(_MESSAGE_ID), where, "/MessageInfo/MessageId")
    ref = children.get(_REF_TO_MESSAGE_ID)
    return MessageInfo(
        message_id=message_id,
        timestamp=parse_timestamp(timestamp_text),
        ref_to_message_id=None if ref is None else _value(ref, where, "/MessageInfo/RefToMessageId"),
        timestamp_text=timestamp_text,
    )


def _read_party(party_info: dict[object, etree._Element], tag: str, name: str) -> Party:
    element = party_info.get(name)
    if element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:PartyInfo has no eb:{tag}")
    items = []
    role = None
    for child in element:
        child_tag = child.tag
        if child_tag == _PARTY_ID:
            items.append(child)
        elif child_tag == _ROLE and role is None:
            role = child
    party_ids = tuple([PartyId(_value(item, tag, "/PartyId"), _attr(item, "type")) for item in items])
    if not party_ids:
        raise EbmsError(ErrorCode.INVALID_HEADER, f"eb:{tag} has no eb:PartyId")
    return Party(party_ids, _value(role, tag, "/Role"))


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
        value = string_value(item).strip()
        if not value:
            raise EbmsError(ErrorCode.INVALID_HEADER, f"{where} Property {name!r} is empty")
        properties.append(Property(name, value, _attr(item, "type")))  # positional: kwargs cost a third more
    return tuple(properties)


def _read_description(element: etree._Element | None) -> Description | None:
    if element is None:
        return None
    return Description(string_value(element).strip(), element.get(XML_LANG) or "en")


def _read_part_info(part: etree._Element) -> PartInfo:
    children = _first_children(part)
    schema = children.get(_SCHEMA)
    return PartInfo(
        href=_attr(part, "href") or None,
        properties=_read_properties(children.get(_PART_PROPERTIES), "PartProperties"),
        schema=None
        if schema is None
        else PartSchema(schema.get("location", ""), schema.get("version"), schema.get("namespace")),
        description=_read_description(children.get(_DESCRIPTION)),
    )


def read_user_message(user: etree._Element) -> UserMessage:
    """Read eb:UserMessage into the model."""
    # Each parent's children are read in one pass (``_first_children``); the checks and the order in which
    # they fail are those of one ``find`` per element.
    children = _first_children(user)
    message_info = _read_message_info(children.get(_MESSAGE_INFO), "eb:UserMessage")
    party_info = children.get(_PARTY_INFO)
    if party_info is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:UserMessage has no eb:PartyInfo")
    collab_element = children.get(_COLLABORATION_INFO)
    if collab_element is None:
        raise EbmsError(ErrorCode.INVALID_HEADER, "eb:UserMessage has no eb:CollaborationInfo")
    collab = _first_children(collab_element)
    agreement = collab.get(_AGREEMENT_REF)
    service = collab.get(_SERVICE)
    payload_info = children.get(_PAYLOAD_INFO)
    parts: tuple[PartInfo, ...] = ()
    if payload_info is not None:
        parts = tuple([_read_part_info(part) for part in payload_info if part.tag == _PART_INFO])
    parties = _first_children(party_info)
    return UserMessage(
        message_info=message_info,
        party_info=PartyInfo(sender=_read_party(parties, "From", _FROM), receiver=_read_party(parties, "To", _TO)),
        collaboration_info=CollaborationInfo(
            service=Service(
                _value(service, "CollaborationInfo/Service"), None if service is None else _attr(service, "type")
            ),
            action=_value(collab.get(_ACTION), "CollaborationInfo/Action"),
            conversation_id=_value(collab.get(_CONVERSATION_ID), "CollaborationInfo/ConversationId"),
            agreement_ref=None
            if agreement is None
            else AgreementRef(_value(agreement, "AgreementRef"), _attr(agreement, "type"), _attr(agreement, "pmode")),
        ),
        message_properties=_read_properties(children.get(_MESSAGE_PROPERTIES), "MessageProperties"),
        payload_info=parts,
        mpc=_attr(user, "mpc") or None,
    )


def read_reference(reference: etree._Element) -> ReferenceEcho:
    """Read a ds:Reference (URI, transforms, digest) as a receipt echoes it."""
    # One pass over the children, as ``iterfind(Transforms/Transform)``, ``find(DigestMethod)`` and
    # ``findtext(DigestValue)`` read them (every Transform of every Transforms; the first DigestMethod and
    # DigestValue), without ElementPath: a verification reads three references, a receipt's check its echoes.
    transforms = []
    digest_method: etree._Element | None = None
    digest_value: etree._Element | None = None
    for child in reference:
        tag = child.tag
        if tag == _DS_TRANSFORMS:
            for transform in child:
                if transform.tag != _DS_TRANSFORM:
                    continue
                inclusive = _child(transform, EC_INCLUSIVE)
                prefixes = None if inclusive is None else tuple(inclusive.get("PrefixList", "").split())
                transforms.append(Transform(algorithm=transform.get("Algorithm", ""), inclusive_prefixes=prefixes))
        elif tag == _DS_DIGEST_METHOD:
            digest_method = child if digest_method is None else digest_method
        elif tag == _DS_DIGEST_VALUE:
            digest_value = child if digest_value is None else digest_value
    return ReferenceEcho(
        uri=reference.get("URI", ""),
        digest_method="" if digest_method is None else digest_method.get("Algorithm", ""),
        digest_value="" if digest_value is None else "".join(string_value(digest_value).split()),
        transforms=tuple(transforms),
    )


_DS_TRANSFORMS: Final = f"{DS}Transforms"
_DS_TRANSFORM: Final = f"{DS}Transform"
_DS_DIGEST_METHOD: Final = f"{DS}DigestMethod"
_DS_DIGEST_VALUE: Final = f"{DS}DigestValue"


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
        detail=None if detail is None else string_value(detail).strip() or None,
    )
