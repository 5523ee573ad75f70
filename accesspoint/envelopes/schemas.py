"""Compiling the schemas other parties publish (XHE 1.0, DIGG's ApplicationResponse, Mina meddelanden v3).

They are not shipped in this package: they are read from a folder the caller names (the interop copies in
``../shared/interop/`` for the tests; a configured folder in a deployment). Each loader compiles once per
folder, offline: the parser loads no DTD, expands no entity and never touches the network, so a schemaLocation
that points outside the folder fails instead of being fetched.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, cast

from lxml import etree

# DIGG's cut-down UBL files import each other as "DIGG%20UBL-ApplicationResponse-2.1_<rest>.xsd" but ship as
# "Response-2.1_<rest>.xsd" (../shared/interop/sdk/README.md, "The schema set does not load as shipped").
_DIGG_UBL_PREFIXES = ("DIGG%20UBL-ApplicationResponse-2.1_", "DIGG UBL-ApplicationResponse-2.1_")
_DIGG_UBL_SHIPPED = "Response-2.1_"

MM_RECEIPT_NS = "http://minameddelanden.gov.se/schema/Receipt"


def _parser(resolver: etree.Resolver | None = None) -> etree.XMLParser:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    if resolver is not None:
        parser.resolvers.add(resolver)
    return parser


class _DiggUblResolver(etree.Resolver):
    """Maps DIGG's schemaLocation names onto the file names the schema set ships under."""

    # lxml calls resolve(url, public_id, context); lxml-stubs know neither the context nor resolve_filename.
    def resolve(self, system_url: str, public_id: str, context: object) -> Any:  # type: ignore[override]
        name = system_url.rsplit("/", 1)[-1]
        for prefix in _DIGG_UBL_PREFIXES:
            if name.startswith(prefix):
                shipped = Path(system_url.rsplit("/", 1)[0].removeprefix("file://")) / (
                    _DIGG_UBL_SHIPPED + name[len(prefix) :]
                )
                return cast(Any, self).resolve_filename(str(shipped), context)
        return None


@cache
def load_xhe_schema(xsd: Path) -> etree.XMLSchema:
    """OASIS XHE 1.0 from ``xsd`` (``XHE-1.0.xsd``, which imports ``fragments/*`` by relative path)."""
    return etree.XMLSchema(etree.parse(str(xsd), parser=_parser()))


@cache
def load_application_response_schema(xsd: Path) -> etree.XMLSchema:
    """DIGG's UBL ApplicationResponse 2.1 profile schema from ``xsd`` (``Response-2.1.xsd``), names remapped."""
    return etree.XMLSchema(etree.parse(str(xsd), parser=_parser(_DiggUblResolver())))


@cache
def load_minameddelanden_schema(contracts: Path) -> etree.XMLSchema:
    """Mina meddelanden v3 (Service, Message, Recipient) from the ``contracts`` folder (holding ``schema/``).

    The contracts define ``Receipt`` only as a type; this wrapper declares the element
    ``{http://minameddelanden.gov.se/schema/Receipt}Receipt`` of that type, the name our receipts carry."""
    schema_folder = (contracts / "schema").resolve()
    wrapper = f"""<schema xmlns="http://www.w3.org/2001/XMLSchema" xmlns:receipt="{MM_RECEIPT_NS}"
        targetNamespace="{MM_RECEIPT_NS}" elementFormDefault="qualified">
      <include schemaLocation="Receipt.xsd"/>
      <import namespace="http://minameddelanden.gov.se/schema/Service/v3" schemaLocation="v3/Service.xsd"/>
      <import namespace="http://minameddelanden.gov.se/schema/Recipient/v3" schemaLocation="v3/Recipient.xsd"/>
      <element name="Receipt" type="receipt:Receipt"/>
    </schema>"""
    document = etree.fromstring(wrapper.encode(), parser=_parser(), base_url=(schema_folder / "wrapper.xsd").as_uri())
    return etree.XMLSchema(document)


MM_REPLY_NS = "http://minameddelanden.gov.se/schema/Reply"


@cache
def load_reply_schema(contracts: Path) -> etree.XMLSchema:
    """Mina meddelanden's reply delivery (``schema/Reply.xsd``) from the ``contracts`` folder.

    The contract defines ``ReplyDelivery`` and ``SealedReplyDelivery`` as types only; this wrapper declares the
    elements ``{…/Reply}SignedDelivery`` and ``{…/Reply}SealedReplyDelivery`` of those types, the names a holder's
    answer carries (``envelopes/reply.py``)."""
    schema_folder = (contracts / "schema").resolve()
    wrapper = f"""<schema xmlns="http://www.w3.org/2001/XMLSchema" xmlns:reply="{MM_REPLY_NS}"
        targetNamespace="{MM_REPLY_NS}" elementFormDefault="qualified">
      <include schemaLocation="Reply.xsd"/>
      <element name="SignedDelivery" type="reply:ReplyDelivery"/>
      <element name="SealedReplyDelivery" type="reply:SealedReplyDelivery"/>
    </schema>"""
    base = (schema_folder / "reply-wrapper.xsd").as_uri()
    return etree.XMLSchema(etree.fromstring(wrapper.encode(), parser=_parser(), base_url=base))
