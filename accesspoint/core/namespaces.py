"""Every namespace and URI the AS4 core speaks, as Enums whose value is the URI."""

from __future__ import annotations

from enum import StrEnum


class NS(StrEnum):
    """XML namespaces used on the wire."""

    SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
    SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
    EBMS = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/"
    EBBP = "http://docs.oasis-open.org/ebxml-bp/ebbp-signals-2.0"
    WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
    WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
    WSSE11 = "http://docs.oasis-open.org/wss/oasis-wss-wssecurity-secext-1.1.xsd"
    DS = "http://www.w3.org/2000/09/xmldsig#"
    DSIG11 = "http://www.w3.org/2009/xmldsig11#"
    DSIG_MORE = "http://www.w3.org/2021/04/xmldsig-more#"
    XENC = "http://www.w3.org/2001/04/xmlenc#"
    XENC11 = "http://www.w3.org/2009/xmlenc11#"
    EC = "http://www.w3.org/2001/10/xml-exc-c14n#"
    XML = "http://www.w3.org/XML/1998/namespace"
    # ebMS 3 Part 2 split and join: a feature this MSH does not support (EBMS:0002).
    EBINT = "http://docs.oasis-open.org/ebxml-msg/ns/v3.0/mf/2010/04/"


class SoapVersion(StrEnum):
    """SOAP version, valued by its envelope namespace."""

    V12 = NS.SOAP12.value
    V11 = NS.SOAP11.value

    @property
    def content_type(self) -> str:
        """The media type of a bare envelope (and of the MIME root part) in this version."""
        return "application/soap+xml" if self is SoapVersion.V12 else "text/xml"


class MEP(StrEnum):
    """Message exchange patterns (ebMS 3 core, section 2.2)."""

    ONE_WAY = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/oneWay"
    TWO_WAY = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/twoWay"


class MEPBinding(StrEnum):
    """MEP channel bindings."""

    PUSH = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/push"
    PULL = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/pull"
    PUSH_AND_PUSH = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/pushAndPush"
    PUSH_AND_PULL = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/pushAndPull"
    PULL_AND_PUSH = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/pullAndPush"


DEFAULT_MPC = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultMPC"
DEFAULT_ROLE = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/defaultRole"
# The ebMS test service and action (AS4 TA16/17: such messages never reach a backend).
TEST_SERVICE = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/service"
TEST_ACTION = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/test"
# The EC conformance test bed's backend service (Submit, Deliver, Notify): unsigned, so never an AS4 P-Mode's.
CONFORMANCE_TEST_SERVICE = "http://www.esens.eu/as4/conformancetest"


class PartyIdType(StrEnum):
    """Well-known PartyId type URIs."""

    EBCORE_UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
    PEPPOL_AP = "urn:fdc:peppol.eu:2017:identifiers:ap"
    ISO6523_0088 = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088"
    ISO6523_0007 = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0007"
    ISO6523_0203 = "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0203"


class PartProperty(StrEnum):
    """PartProperties names the AS4 profile gives meaning to."""

    MIME_TYPE = "MimeType"
    CHARACTER_SET = "CharacterSet"
    COMPRESSION_TYPE = "CompressionType"


class MessageProperty(StrEnum):
    """MessageProperties names of the four-corner model (eDelivery AS4 1.15 section 1.5.1.2)."""

    ORIGINAL_SENDER = "originalSender"
    FINAL_RECIPIENT = "finalRecipient"
    TRACKING_IDENTIFIER = "trackingIdentifier"


GZIP = "application/gzip"
