"""Make the seed corpus and the dictionaries: ``python -m tests.fuzz.corpus [seeds|dicts]`` (rewrites them).

Seeds come from two places, each recorded in ``corpus/MANIFEST.md``:

- the project's own builders (``fixtures.py``): valid messages, receipts, envelopes and SMP documents, always;
- ``../shared/interop`` when it is there: small files (a few KB), never copied. Each is *derived*: XML is parsed
  with the hardened parser and written again without comments, blank text or the XML declaration, with every
  long base64 text cut to 16 characters; a MIME dump keeps its headers and has each part's body cut the same
  way (binary parts to 64 bytes) and its boundary renamed; JSON is re-encoded compactly. A derived seed that
  came out byte-identical to its source would be dropped (none does: the cuts always change it).

The structured targets (as4_*, receipt, signed_documents) take edit programs, not documents: their seeds are
the empty program (the valid document itself) and one program per document kind. Dictionaries are the tokens
the parsers compare against: media types, header names, element names, namespace and algorithm URIs, taken
from the code's own enums where it has them.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from lxml import etree

from accesspoint.core.envelope import build_envelope, serialize
from accesspoint.core.errors import ErrorCode
from accesspoint.core.message import Attachment, pack_bare, pack_message
from accesspoint.core.mime import MimePart, write_multipart
from accesspoint.core.model import ErrorInfo, MessageInfo, PullRequest, SignalMessage
from accesspoint.core.namespaces import NS, SoapVersion
from accesspoint.envelopes.kvittens import build_application_response
from accesspoint.envelopes.minameddelanden import to_deliver_secure
from pmode.document import dump_toml, dump_yaml
from smp.model import Flavour
from tests.fuzz import fixtures
from tests.fuzz.mutation import ALGORITHM_URIS
from tests.fuzz.targets import MIME_BOUNDARY, TARGETS
from tests.test_far_soap import request as far_request

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
DICTS = HERE / "dicts"
INTEROP = HERE.parent.parent.parent / "shared" / "interop"
MAX_SEED = 8 * 1024

_BASE64_RUN = re.compile(rb"[A-Za-z0-9+/=\r\n]{120,}")
_LONG_TEXT = re.compile(r"^[A-Za-z0-9+/=\s]{120,}$")

Seed = tuple[str, bytes, str]  # file name, bytes, provenance


# ------------------------------------------------------------------------------------------ derivation


def minimise_xml(data: bytes) -> bytes:
    """XML without comments, blank text, declaration; long base64 texts cut to 16 characters."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=True, remove_comments=True)
    root = etree.fromstring(data, parser=parser)
    for element in root.iter():
        if isinstance(element.tag, str) and element.text and _LONG_TEXT.match(element.text):
            element.text = "".join(element.text.split())[:16]
    return etree.tostring(root)


def _cut_part(body: bytes) -> bytes:
    head, separator, content = body.partition(b"\r\n\r\n")
    if not separator:
        head, separator, content = body.partition(b"\n\n")
    stripped = content.lstrip()
    if stripped.startswith(b"<"):
        try:
            content = minimise_xml(stripped.rstrip())
        except etree.XMLSyntaxError:
            content = _BASE64_RUN.sub(lambda m: m.group()[:16], content)
    else:
        content = content[:64]
    return head + separator + content


def minimise_mime(body: bytes, boundary: bytes, new_boundary: bytes) -> bytes:
    """A multipart body with each part cut (``_cut_part``) and the boundary renamed."""
    delimiter = b"--" + boundary
    pieces = body.split(delimiter)
    out = [pieces[0]]
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            out.append(piece)
            continue
        line_end = b"\r\n" if piece.startswith(b"\r\n") else b"\n"
        trailing = b"\r\n" if piece.endswith(b"\r\n") else b""
        inner = piece[len(line_end) : len(piece) - len(trailing)] if trailing else piece[len(line_end) :]
        out.append(line_end + _cut_part(inner) + trailing)
    return (b"--" + new_boundary).join(out)


def _dump_parts(data: bytes) -> tuple[bytes, bytes]:
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return data[:crlf], data[crlf + 4 :]
    return data[:lf], data[lf + 2 :]


_BOUNDARY = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)


def minimise_dump(data: bytes, new_boundary: bytes = b"=_fuzz") -> tuple[bytes, bytes]:
    """An HTTP dump's headers (boundary renamed) and its cut body."""
    head, body = _dump_parts(data)
    found = _BOUNDARY.search(head)
    if found is None:
        return head, body
    return head.replace(found.group(1), new_boundary), minimise_mime(body, found.group(1), new_boundary)


def _content_type(head: bytes) -> bytes:
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", head)
    for line in unfolded.splitlines():
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            return value.strip()
    return b"application/soap+xml"


def _interop(relative: str) -> bytes | None:
    path = INTEROP / relative
    return path.read_bytes() if path.is_file() else None


def _derived(relative: str, derive: str) -> Iterator[tuple[bytes, bytes]]:
    """(source, derived) for an interop file, ``derive`` in xml | json | dump | dump-body."""
    source = _interop(relative)
    if source is None:
        return
    if derive == "xml":
        try:
            yield source, minimise_xml(source)
        except etree.XMLSyntaxError:  # a negative vector that is not even well-formed: cut its base64 only
            yield source, _BASE64_RUN.sub(lambda m: m.group()[:16], source)
    elif derive == "json":
        yield source, json.dumps(json.loads(source), separators=(",", ":"), ensure_ascii=False).encode()
    else:
        head, body = minimise_dump(source)
        if derive == "dump":
            yield source, head + b"\r\n\r\n" + body
        else:
            yield source, _content_type(head) + b"\n" + body


def interop_seeds(files: Iterable[str], derive: str, prefix: bytes = b"") -> Iterator[Seed]:
    """Seeds derived from interop files (nothing when ../shared/interop is absent)."""
    for relative in files:
        for source, derived in _derived(relative, derive):
            seed = prefix + derived
            if hashlib.sha256(seed).digest() == hashlib.sha256(source).digest() or len(seed) > MAX_SEED:
                continue
            name = "interop-" + re.sub(r"[^A-Za-z0-9.-]+", "-", relative)
            yield name, seed, f"../shared/interop/{relative}, {derive} derivation (see corpus.py)"


# ------------------------------------------------------------------------------------------- the seeds


def _mime_bodies() -> list[tuple[str, bytes]]:
    envelope = fixtures.unsigned_envelope()
    parts = [
        MimePart("application/soap+xml; charset=UTF-8", "root@fuzz", (envelope,)),
        MimePart("application/gzip", "payload@fuzz", (fixtures.gzip_bytes(b"<a>payload</a>"),)),
    ]
    encoded = [
        MimePart("text/plain", "b64@fuzz", (b"aGVsbG8gd29ybGQ=\r\n",), (("Content-Transfer-Encoding", "base64"),)),
        MimePart(
            "text/plain",
            "qp@fuzz",
            (b"caf=C3=A9 =\r\nsoft break\r\n",),
            (("Content-Transfer-Encoding", "quoted-printable"),),
        ),
    ]
    binary = b"".join(write_multipart(parts, MIME_BOUNDARY))
    return [
        ("builder-binary.mime", binary),
        ("builder-encodings.mime", b"".join(write_multipart(encoded, MIME_BOUNDARY))),
        ("builder-lf.mime", binary.replace(b"\r\n", b"\n")),
        ("builder-preamble-epilogue.mime", b"preamble\r\n" + binary + b"epilogue"),
    ]


def _shrink_packed(content_type: str, body: bytes) -> bytes:
    found = _BOUNDARY.search(content_type.encode())
    assert found is not None
    return (
        content_type.replace(found.group(1).decode(), "=_fuzz").encode()
        + b"\n"
        + minimise_mime(body, found.group(1), b"=_fuzz")
    )


def _signals() -> list[tuple[str, bytes]]:
    info = MessageInfo("signal-1@fuzz", fixtures.NOW, "fuzz-1@sender.example")
    error = SignalMessage(
        info, errors=(ErrorInfo.from_code(ErrorCode.INVALID_HEADER, detail="bad", ref_to_message_in_error="x@y"),)
    )
    pull = SignalMessage(MessageInfo("pull-1@fuzz", fixtures.NOW), pull_request=PullRequest())
    return [
        ("builder-error-signal.xml", serialize(build_envelope(error))),
        ("builder-pull-request.xml", serialize(build_envelope(pull, soap_version=SoapVersion.V11))),
    ]


ENVELOPE_FILES = [
    "phase4/spec-examples/soap11/UserMessage.xml",
    "phase4/spec-examples/soap11/ReceiptMessage.xml",
    "phase4/spec-examples/soap11/ErrorMessage.xml",
    "phase4/spec-examples/soap11/PullRequest.xml",
    "phase4/spec-examples/soap11/BundledMessage.xml",
    "phase4/spec-examples/soap11/MessageInfoMissing.xml",
    "phase4/spec-examples/soap12/UserMessage12.xml",
    "phase4/spec-examples/soap12/UserMessageWithCompressedPayload12.xml",
    "phase4/spec-examples/soap12/PullRequest12.xml",
    "phase4/negative/ErrorMessageNoRefToMessageID.xml",
    "phase4/negative/TwoUserMessages.xml",
    "phase4/receipts/TestReceipt11.xml",
    "python-peers/as4.receipt-by-as4.xml",
    "python-peers/as4.error-EBMS0101-by-as4.xml",
    "domibus/harmony/messages/UserMessageReceipt.xml",
]
DUMP_FILES = [
    "python-peers/as4.usermessage.mime",
    "python-peers/peppol-py.usermessage.mime",
    "phase4/negative/WrongCompression.mime",
]


def seeds() -> dict[str, list[Seed]]:
    """Every target's seeds."""
    built = "tests/fuzz/fixtures.py builder"
    out: dict[str, list[Seed]] = {name: [] for name in TARGETS}
    out["mime"] += [(name, body, built) for name, body in _mime_bodies()]
    for source in DUMP_FILES:
        for _original, derived in _derived(source, "dump-body"):
            body = derived.partition(b"\n")[2]
            out["mime"].append(
                (
                    f"interop-{Path(source).stem}.mime",
                    body.replace(b"=_fuzz", MIME_BOUNDARY.encode()),
                    f"../shared/interop/{source}, dump body, boundary renamed",
                )
            )

    bare = pack_bare(fixtures.unsigned_envelope())
    bare11 = pack_bare(fixtures.unsigned_envelope(SoapVersion.V11), SoapVersion.V11)
    plain = pack_message(
        fixtures.unsigned_envelope(), [Attachment("payload@fuzz", "application/gzip", (fixtures.gzip_bytes(b"x"),))]
    )
    message_seeds = [
        ("builder-bare-12", f"{bare.content_type}\n".encode() + bare.to_bytes()),
        ("builder-bare-11", f"{bare11.content_type}\n".encode() + bare11.to_bytes()),
        ("builder-swa-unsigned", _shrink_packed(plain.content_type, plain.to_bytes())),
    ]
    for profile in ("1.15", "2.0"):
        secured = fixtures.as4_message(profile)
        message_seeds.append((f"builder-as4-{profile}", _shrink_packed(secured.content_type, secured.body)))
    out["message"] += [(name, data, built) for name, data in message_seeds]
    out["message"] += interop_seeds(DUMP_FILES, "dump-body")
    out["message"] += interop_seeds(ENVELOPE_FILES[:4], "xml", b"application/soap+xml\n")

    envelopes = [
        ("builder-user-12.xml", fixtures.unsigned_envelope()),
        ("builder-user-11.xml", fixtures.unsigned_envelope(SoapVersion.V11)),
        ("builder-receipt-1.15.xml", fixtures.signed_receipt("1.15")),
        ("builder-receipt-2.0.xml", minimise_xml(fixtures.signed_receipt("2.0"))),
        *_signals(),
    ]
    out["envelope"] += [(name, data, built) for name, data in envelopes]
    out["envelope"] += interop_seeds(ENVELOPE_FILES, "xml")

    out["httpdump"] += [
        (
            "builder-request.http",
            b"POST /as4 HTTP/1.1\r\nContent-Type: " + bare.content_type.encode() + b"\r\n\r\n" + bare.to_bytes(),
            built,
        ),
        ("builder-bare.xml", fixtures.unsigned_envelope(SoapVersion.V11), built),
        ("builder-lf.http", b"Content-Type: text/xml\n\n" + fixtures.unsigned_envelope(SoapVersion.V11), built),
    ]
    out["httpdump"] += interop_seeds(DUMP_FILES, "dump")

    out["compression"] += [
        ("builder-text.gz", fixtures.gzip_bytes(b"<Invoice>42</Invoice>" * 4), built),
        ("builder-empty.gz", fixtures.gzip_bytes(b""), built),
        ("builder-two-members.gz", fixtures.gzip_bytes(b"a") + fixtures.gzip_bytes(b"b"), built),
        ("builder-binary.gz", fixtures.gzip_bytes(bytes(range(256)) * 2), built),
    ]

    programs = [("program-empty", b""), ("program-each-layer", bytes([0, 1, 2, 3, 6, 7, 7, 1]))]
    for name in ("as4_1_15", "as4_2_0"):
        out[name] += [(seed, data, "edit program (mutation.py) over a fixtures.py message") for seed, data in programs]
    out["receipt"] += [
        (f"program-{profile}", bytes([index]), "edit program over fixtures.signed_receipt")
        for index, profile in enumerate(("1.15", "2.0"))
    ]
    out["signed_documents"] += [
        (f"program-document-{index}", bytes([index]), "edit program over a fixtures.py signed document")
        for index in range(10)
    ]

    sbd = fixtures.sbd()
    out["sbdh"] += [("builder-sbd.xml", sbd, built)]
    out["sbdh"] += interop_seeds(
        ["norway-dpi/eksempler/digitalpost_c2_c3.xml", "python-peers/as4.payload.sbd.xml"], "xml"
    )
    out["sbdh"] += interop_seeds(
        [
            "norway-dpi/eksempler/komplette/digital-forretningsmelding.json",
            "norway-dpi/eksempler/innbyggerpost_dpi_utskrift_1_0.json",
        ],
        "json",
    )

    response = build_application_response(fixtures.application_response())
    out["xhe"] += [("builder-xhe-signed.xml", fixtures.signed_xhe(), built), ("builder-kvittens.xml", response, built)]
    out["xhe"] += interop_seeds(
        [
            "sdk/xhe/examples/XHE-tm-base.xml",
            "sdk/xhe/examples/XHE-NonXML-tm-base.xml",
            "sdk/kvittens/examples/Kvittens_RE-AnnatFel.xml",
            "sdk/kvittens/examples/Kvittens_AP-Accepterat.xml",
        ],
        "xml",
    )

    deliver = etree.tostring(to_deliver_secure(fixtures.sealed_delivery()))
    out["minameddelanden"] += [
        ("builder-signed-delivery.xml", fixtures.signed_delivery(), built),
        ("builder-sealed-delivery.xml", fixtures.sealed_delivery(), built),
        ("builder-receipt.xml", fixtures.delivery_receipt(), built),
        ("builder-deliver-secure.xml", deliver, built),
    ]
    out["minameddelanden"] += interop_seeds(
        [
            "minameddelanden/soap/wiremock/deliverSecure-kivra.xml",
            "minameddelanden/soap/it/test1_sendDigitalMailToPrivatePerson/deliverSecure.xml",
        ],
        "xml",
    )

    out["operators_delivery"] += [
        ("builder-sealed-delivery.xml", fixtures.sealed_delivery(), built),
        ("builder-xhe.xml", fixtures.signed_xhe(), built),
        ("builder-sbd.xml", sbd, built),
    ]

    for flavour, label in ((Flavour.PEPPOL, "peppol"), (Flavour.OASIS1, "oasis1"), (Flavour.OASIS2, "oasis2")):
        out["smp"] += [
            (f"builder-metadata-{label}.xml", fixtures.signed_smp_metadata(flavour), built),
            (f"builder-redirect-{label}.xml", fixtures.smp_redirect(flavour), built),
            (f"builder-group-{label}.xml", fixtures.smp_service_group(flavour), built),
        ]
    out["smp"] += interop_seeds(
        [
            "smp/phoss/rest-files/peppol-service-metadata.xml",
            "smp/phoss/rest-files/bdxr1-service-metadata.xml",
            "smp/phoss/rest-files/peppol-service-group.xml",
            "smp/ph-xsds/servicemetadata3-unsigned.xml",
            "smp/phoss/cef-templates/Redirect-template.xml",
        ],
        "xml",
    )

    out["far_soap"] += [
        (name, far_request(operation, *children), "hand-written Recipient v3 request")
        for name, operation, children in FAR_REQUESTS
    ]
    out["far_soap"] += interop_seeds(
        ["minameddelanden/soap/it/test1_sendDigitalMailToPrivatePerson/recipient.xml"], "xml"
    )

    out["domibus"] += [("minimal-configuration.xml", fixtures.DOMIBUS_MINIMAL, "hand-written Domibus P-Mode")]
    out["domibus"] += interop_seeds(
        [
            "domibus/harmony/pmodes/domibus-gw-sample-pmode-blue.xml",
            "domibus/harmony/pmodes/oasis-dyn-PMode-domibus-senderDYN.xml",
            "sdk/domibus-pmode/p-mode.xml",
        ],
        "xml",
    )

    out["pmode"] += [
        ("demo-like.yaml", b"Y" + dump_yaml(PMODE_DOCUMENT).encode(), "hand-written P-Mode document, dump_yaml"),
        ("demo-like.toml", b"T" + dump_toml(PMODE_DOCUMENT).encode(), "hand-written P-Mode document, dump_toml"),
    ]
    examples = fixtures.REPO / "pmode" / "examples"
    out["pmode"] += [
        (
            f"example-{path.name}",
            (b"T" if path.suffix == ".toml" else b"Y") + path.read_bytes(),
            f"pmode/examples/{path.name}",
        )
        for path in sorted(examples.glob("*.*ml"))
    ]
    out["identifiers"] += [
        (f"identifier-{index}", text.encode(), "hand-written identifier") for index, text in enumerate(IDENTIFIERS)
    ]
    out["bdxl"] += [
        (f"naptr-{index}", text.encode(), "hand-written NAPTR regexp") for index, text in enumerate(NAPTR_REGEXPS)
    ]
    return out


FAR_REQUESTS = [
    (
        "is-reachable.xml",
        "isReachable",
        (("senderOrgNr", "162021005448"), ("recipientId", "197001011234"), ("recipientId", "165566778899")),
    ),
    ("is-registered.xml", "isRegistered", (("recipientId", "197001011234"),)),
]
PMODE_DOCUMENT = {
    "version": 1,
    "self": ["sweden"],
    "parties": {
        "sweden": {
            "party_ids": [{"value": "se", "type": "urn:oasis:names:tc:ebcore:partyid-type:unregistered"}],
            "signing_certificate": "sender.pem",
            "endpoint": "https://se.example/as4",
        },
        "norway": {
            "party_ids": [{"value": "no", "type": "urn:oasis:names:tc:ebcore:partyid-type:unregistered"}],
            "signing_certificate": "receiver.pem",
            "endpoint": "https://no.example/as4",
        },
    },
    "pmodes": [
        {
            "id": "letters-1.15",
            "network": "edelivery-1.15",
            "agreement": {"value": "urn:example:agreement", "type": "urn:example"},
            "initiator": {"party": "sweden"},
            "responder": {"party": "norway"},
            "legs": [
                {
                    "service": {"value": "urn:example:service", "type": "urn:example"},
                    "action": "Deliver",
                    "properties": ["originalSender", "finalRecipient"],
                    "security": {
                        "signature_algorithm": "rsa-sha256",
                        "token_reference": "bst-x509v3",
                        "trust": {"anchors": ["ca.pem"], "revocation": "off"},
                    },
                    "reception_awareness": {"retries": 2, "backoff_base": "500ms", "backoff_max": "2s", "jitter": 0.0},
                }
            ],
        }
    ],
}
IDENTIFIERS = [
    "iso6523-actorid-upis::0007:5566778899",
    "urn:oasis:names:tc:ebcore:partyid-type:iso6523:0088:4035811991021",
    "busdox-docid-qns::urn:oasis:names:specification:ubl:schema:xsd:Invoice-2::Invoice##1.0",
    "197001011234",
    "165566778899",
    "5566778899",
    "SE/NO/12345678",
]
NAPTR_REGEXPS = [
    "!^.*$!https://smp.example.eu!",
    "!^(.*)$!https://smp.example.eu/\\1!i",
    "#^([a-z0-9]+)\\..*$#https://\\1.smp.example.eu#",
]


# ---------------------------------------------------------------------------------------- dictionaries


def _dict_lines(tokens: Iterable[str]) -> list[str]:
    """libFuzzer dictionary entries; a token's characters below U+0100 are single bytes (latin-1), others UTF-8."""
    lines = []
    for token in dict.fromkeys(tokens):
        escaped = "".join(
            ch
            if 0x20 <= ord(ch) < 0x7F and ch not in '"\\'
            else "".join(f"\\x{b:02X}" for b in ch.encode("latin-1" if ord(ch) < 0x100 else "utf-8"))
            for ch in token
        )
        lines.append(f'"{escaped}"')
    return lines


_XML = [
    "<?xml",
    "?>",
    "<!--",
    "-->",
    "<![CDATA[",
    "]]>",
    "<!DOCTYPE",
    "<!ENTITY",
    "&amp;",
    "&#x",
    "xmlns",
    "xmlns:",
    '="',
    "</",
    "/>",
    'encoding="UTF-16"',
    "\xc3\xa9",  # é in UTF-8: a non-ASCII name character
]
_NAMESPACES = [str(member.value) for member in NS]
_ALGORITHMS = list(ALGORITHM_URIS)
_EBMS = [
    "eb:Messaging",
    "eb:UserMessage",
    "eb:SignalMessage",
    "eb:MessageInfo",
    "eb:Timestamp",
    "eb:MessageId",
    "eb:RefToMessageId",
    "eb:PartyInfo",
    "eb:From",
    "eb:To",
    "eb:PartyId",
    "eb:Role",
    "eb:CollaborationInfo",
    "eb:AgreementRef",
    "eb:Service",
    "eb:Action",
    "eb:ConversationId",
    "eb:MessageProperties",
    "eb:Property",
    "eb:PayloadInfo",
    "eb:PartInfo",
    "eb:PartProperties",
    "eb:Receipt",
    "eb:Error",
    "eb:PullRequest",
    "ebbp:NonRepudiationInformation",
    "ebbp:MessagePartNRInformation",
    "ds:Reference",
    "mustUnderstand",
    "wsu:Id",
    'href="cid:',
    "MimeType",
    "CompressionType",
    "application/gzip",
    "2026-11-29T10:00:00Z",
    "S12:Envelope",
    "S12:Header",
    "S12:Body",
    "MessageFragment",
    "wsse:Security",
    "ds:Signature",
]
_MIME = [
    "multipart/related",
    "application/soap+xml",
    "text/xml",
    "application/xop+xml",
    "boundary=",
    "type=",
    "start=",
    "start-info=",
    "charset=",
    "Content-Type:",
    "Content-ID:",
    "Content-Transfer-Encoding:",
    "base64",
    "quoted-printable",
    "binary",
    "8bit",
    "\r\n",
    "\r\n\r\n",
    "--",
    "\n",
    "--=_b",
    "--=_b--",
    "\r\n--=_b\r\n",
    "<root@fuzz>",
    '"',
    "\\",
    "HTTP/1.1",
    "POST /as4 HTTP/1.1",
]
_GZIP = ["\x1f\x8b\x08\x00", "\x00\x00\x00\x00", "\xff\xff", "\x03\x00"]
_SBDH = [
    "StandardBusinessDocument",
    "StandardBusinessDocumentHeader",
    "HeaderVersion",
    "Sender",
    "Receiver",
    "Identifier",
    "Authority",
    "DocumentIdentification",
    "Standard",
    "TypeVersion",
    "InstanceIdentifier",
    "Type",
    "CreationDateAndTime",
    "BusinessScope",
    "Scope",
    "DOCUMENTID",
    "PROCESSID",
    "COUNTRY_C1",
    "Innbyggerpost",
    "SignertForretningsmelding",
    "Dokumentpakke",
    "standardBusinessDocument",
    "standardBusinessDocumentHeader",
    "documentIdentification",
    "instanceIdentifier",
    "creationDateAndTime",
    "businessScope",
    "identifier",
    "authority",
    "headerVersion",
    "typeVersion",
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "null",
    "1.0",
]
_XHE = [
    "XHE",
    "Header",
    "Payloads",
    "Payload",
    "ID",
    "CreationDateTime",
    "FromParty",
    "ToParty",
    "PartyIdentification",
    "BusinessScope",
    "Scope",
    "TypeCode",
    "InstanceIdentifier",
    "ContentTypeCode",
    "DocumentTypeCode",
    "PayloadContent",
    "PayloadExpectedIndicator",
    "PayloadEncryptedIndicator",
    "InstanceEncryptionIndicator",
    "schemeID",
    "CustomizationID",
    "ProfileID",
    "XHEVersionID",
    "ApplicationResponse",
    "DocumentResponse",
    "LineResponse",
    "ResponseCode",
    "StatusReason",
    "IssueDate",
    "IssueTime",
    "EndpointID",
    "AP",
    "RE",
    "SV",
    "BV",
    "SIG",
    "tm-base-ext-sigenc",
    "urn:fdc:digg.se:edelivery:federation:sdk",
    "urn:oasis:names:specification:ubl:schema:xsd:ApplicationResponse-2",
    "http://docs.oasis-open.org/bdxr/ns/XHE/1/ExchangeHeaderEnvelope",
]
_MINAMEDDELANDEN = [
    "SignedDelivery",
    "SealedDelivery",
    "SecureDelivery",
    "Seal",
    "SignaturesOK",
    "ReceivedTime",
    "Header",
    "Sender",
    "Recipient",
    "Message",
    "Subject",
    "Body",
    "ContentType",
    "Attachment",
    "Checksum",
    "Filename",
    "ReceiptRequest",
    "SIGNED",
    "SIMPLE",
    "NOT",
    "deliverSecure",
    "deliverSecureResponse",
    "return",
    "TransId",
    "Status",
    "RecipientId",
    "Delivered",
    "Receipt",
    "MessageId",
    "ReceiptRecipient",
    "ReceiptSender",
    "AcknowledgedTime",
    "http://minameddelanden.gov.se/schema/Message/v3",
    "http://minameddelanden.gov.se/schema/Service/v3",
    "http://minameddelanden.gov.se/schema/Message",
    "http://minameddelanden.gov.se/schema/Receipt",
    "http://minameddelanden.gov.se/schema/Sender",
]
_SMP = [
    "SignedServiceMetadata",
    "ServiceMetadata",
    "ServiceInformation",
    "ServiceGroup",
    "ServiceMetadataReferenceCollection",
    "ServiceMetadataReference",
    "ParticipantIdentifier",
    "DocumentIdentifier",
    "ProcessList",
    "Process",
    "ProcessIdentifier",
    "ServiceEndpointList",
    "Endpoint",
    "EndpointReference",
    "Address",
    "EndpointURI",
    "transportProfile",
    "Certificate",
    "RequireBusinessLevelSignature",
    "ServiceActivationDate",
    "ServiceExpirationDate",
    "Redirect",
    "CertificateUID",
    "Extension",
    "ExtensionID",
    "ProcessMetadata",
    "TransportProfileID",
    "AddressURI",
    "PublisherURI",
    "ContentBinaryObject",
    "TypeCode",
    "ParticipantID",
    "SMPExtensions",
    "SMPExtension",
    "ExtensionContent",
    "scheme",
    "schemeID",
    "href",
    "http://busdox.org/serviceMetadata/publishing/1.0/",
    "http://busdox.org/transport/identifiers/1.0/",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2016/05",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2/ServiceMetadata",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2/ServiceGroup",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2/AggregateComponents",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2/BasicComponents",
    "http://docs.oasis-open.org/bdxr/ns/SMP/2/ExtensionComponents",
    "http://www.w3.org/2005/08/addressing",
    "urn:fdc:digg.se:edelivery:xml-extension:smp-certpub:1.0",
    "-----BEGIN CERTIFICATE-----",
    "2026-01-01T00:00:00Z",
]
_FAR = [
    "isReachable",
    "isRegistered",
    "senderOrgNr",
    "recipientId",
    "16",
    "19",
    "20",
    "http://minameddelanden.gov.se/schema/Recipient/v3",
    "http://minameddelanden.gov.se/schema/Recipient",
    "Envelope",
    "Body",
]
_DOMIBUS = [
    "configuration",
    "party",
    "mpcs",
    "mpc",
    "businessProcesses",
    "roles",
    "role",
    "parties",
    "partyIdTypes",
    "partyIdType",
    "identifier",
    "partyId",
    "endpoint",
    "meps",
    "mep",
    "binding",
    "properties",
    "property",
    "propertySet",
    "propertyRef",
    "payloadProfiles",
    "securities",
    "security",
    "signatureMethod",
    "errorHandlings",
    "agreements",
    "agreement",
    "services",
    "service",
    "actions",
    "action",
    "as4",
    "receptionAwareness",
    "retry",
    "reliability",
    "legConfigurations",
    "legConfiguration",
    "process",
    "initiatorParties",
    "initiatorParty",
    "responderParties",
    "responderParty",
    "legs",
    "leg",
    "name",
    "value",
    "type",
    "RSA_SHA256",
    "ECC_SHA256",
    "CONSTANT",
    "PROGRESSIVE",
    "true",
    "false",
    "http://domibus.eu/configuration",
]
_PMODE = [
    "version",
    "self",
    "parties",
    "party_ids",
    "signing_certificate",
    "encryption_certificate",
    "endpoint",
    "pmodes",
    "id",
    "network",
    "agreement",
    "initiator",
    "responder",
    "party",
    "legs",
    "service",
    "action",
    "properties",
    "security",
    "profile",
    "trust",
    "anchors",
    "pinned",
    "pin_partner",
    "revocation",
    "off",
    "soft-fail",
    "hard-fail",
    "reception_awareness",
    "retries",
    "backoff_base",
    "backoff_max",
    "jitter",
    "payload",
    "max_size",
    "max_parts",
    "compression",
    "decompression_limit",
    "retention",
    "mep",
    "mpc",
    "dynamic",
    "legacy_algorithms",
    "token_reference",
    "key_transport",
    "key_agreement",
    "edelivery-as4-1.15",
    "edelivery-as4-2.0",
    "500ms",
    "2s",
    "1h",
    "ca.pem",
    "sender.pem",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    "&a",
    "*a",
    "!!",
    "<<",
    "= ",
    "[[pmodes]]",
    '"',
    "'''",
]
_IDENTIFIERS = [
    "::",
    "iso6523-actorid-upis",
    "urn:oasis:names:tc:ebcore:partyid-type:",
    "iso6523:",
    "0007:",
    "0088:",
    "19",
    "20",
    "16",
    "SE/",
    "/",
    "#",
    "%",
    "\xc3\xa5",
]
_REGEX = [
    "!",
    "^",
    "$",
    ".*",
    "(.*)",
    "\\1",
    "\\9",
    "!i",
    "(",
    ")",
    "*",
    "+",
    "?",
    "{1000}",
    "[a-z]",
    "\\w+",
    "|",
    "(?:",
    "(?P<",
    "https://",
    "http://",
]

DICTIONARIES = {
    "mime": _MIME,
    "message": _MIME + _XML + _EBMS + _NAMESPACES,
    "envelope": _XML + _EBMS + _NAMESPACES + _ALGORITHMS,
    "httpdump": _MIME + _XML + ["Envelope", "POST", "HTTP/1.1 200 OK"] + _NAMESPACES[:4],
    "compression": _GZIP,
    "sbdh": _XML
    + _SBDH
    + ["http://www.unece.org/cefact/namespaces/StandardBusinessDocumentHeader", "http://begrep.difi.no/sdp/schema_v10"],
    "xhe": _XML + _XHE + [str(NS.DS.value)] + _ALGORITHMS[:10],
    "minameddelanden": _XML
    + _MINAMEDDELANDEN
    + [str(NS.DS.value), str(NS.SOAP11.value), str(NS.SOAP12.value)]
    + _ALGORITHMS[:10],
    "operators_delivery": _XML + _MINAMEDDELANDEN + _XHE + _SBDH[:16],
    "smp": _XML + _SMP + [str(NS.DS.value)] + _ALGORITHMS[:10],
    "far_soap": _XML + _FAR + [str(NS.SOAP11.value)],
    "domibus": _XML + _DOMIBUS,
    "pmode": _PMODE,
    "identifiers": _IDENTIFIERS,
    "bdxl": _REGEX,
}


def write_seeds() -> None:
    """Rewrite corpus/ and corpus/MANIFEST.md (signed seeds come out with fresh keys, so every file changes)."""
    if not INTEROP.is_dir():
        sys.stderr.write(f"note: {INTEROP} is absent: only builder seeds are written\n")
    shutil.rmtree(CORPUS, ignore_errors=True)
    manifest = [
        "# Seed corpus",
        "",
        "Made by `python -m tests.fuzz.corpus` (see its docstring for the derivations).",
        "",
        "| target | seed | bytes | origin |",
        "|---|---|---|---|",
    ]
    for name, items in seeds().items():
        folder = CORPUS / name
        folder.mkdir(parents=True)
        for file_name, data, origin in items:
            (folder / file_name).write_bytes(data)
            manifest.append(f"| {name} | {file_name} | {len(data)} | {origin} |")
    (CORPUS / "MANIFEST.md").write_text("\n".join(manifest) + "\n")


def write_dictionaries() -> None:
    """Rewrite dicts/."""
    shutil.rmtree(DICTS, ignore_errors=True)
    DICTS.mkdir()
    for name, tokens in DICTIONARIES.items():
        header = f"# libFuzzer dictionary for the {name} target (written by tests/fuzz/corpus.py)"
        (DICTS / f"{name}.dict").write_text("\n".join([header, *_dict_lines(tokens)]) + "\n")


def main() -> None:
    """``python -m tests.fuzz.corpus [seeds|dicts]``: rewrite both, or only the one named."""
    chosen = sys.argv[1:] or ["seeds", "dicts"]
    if "seeds" in chosen:
        write_seeds()
    if "dicts" in chosen:
        write_dictionaries()


if __name__ == "__main__":
    main()
