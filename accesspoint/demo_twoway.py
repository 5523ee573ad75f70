"""The third part of ``make demo``, and the federation the two-way tests run: digital post that goes both ways.

The federation of ``demo_federation`` (FaR, the Nordic agency's access point, the Swedish router, two operators)
with what two-way post needs beside it:

- a time-stamp authority (``accesspoint tsa serve``, development only) whose certificate under the development
  CA has the critical id-kp-timeStamping usage; the operators time-stamp their delgivningskvitton there;
- the agency's backend: a webhook listener on the Nordic access point (``message-received``), which checks each
  event's HMAC, plus the REST API it reads the messages with;
- for each operator: a token per mailbox for the holder's app, the two-way settings (a one-second sweep, the
  time-stamp authority, the presentation policy) and the Nordic access point as a trusted intermediary: it seals
  the agency's Mina meddelanden letters as the agency's förmedlare.

Letters are built here in each network's form (``mm_letter``, ``sdk_letter``, ``sbdh_letter``) and sent from the
agency through the router to a mailbox. The demo shows a holder's answer reaching the agency, correlated to its
letter, a served letter acknowledged with e-ID and its time-stamped kvitto at the agency, and an invoice found by
its due date and paid once, with the signed confirmation back at the agency.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from accesspoint import demo_federation as fed
from accesspoint.demo_common import Child, DemoFailure, free_port, say
from accesspoint.envelopes.letter import (
    LETTER_DOCUMENT_TYPE,
    LETTER_NS,
    InlineFile,
    LetterDocument,
    LetterTerms,
    ReplyTerms,
    build_letter,
    with_terms,
)
from accesspoint.envelopes.minameddelanden import (
    ReplyOption,
    SecureDelivery,
    SecureMessage,
    Sender,
    SupportInfo,
    build_sealed_delivery,
    build_signed_delivery,
)
from accesspoint.envelopes.payment import AccountKind, PaymentData, luhn_digit
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, build_sbd
from accesspoint.envelopes.xhe import Xhe, XheParty, XhePayload, build_xhe, sdk_scope
from accesspoint.keys_cli import DevelopmentPki, generate_keys
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.security.tsa import authority_certificate
from accesspoint.servicekit.webhooks import SIGNATURE_HEADER, signature
from operators.holders import login_text
from operators.sender import TwoWayStatus, two_way_status

FEDERATION_ID = "urn:fdc:digg.se:edelivery:federation:test"
AGENCY_NAME = "Skatteverket (demo)"
# The agency of the two-way letters: Swedish (Mina meddelanden senders are organisationsnummer), connected through
# the Nordic access point in FaR's sender register.
AGENCY = fed.SWEDISH_AGENCY
AGENCY_ORGNR = AGENCY.removeprefix("0007:")


class _Events(BaseHTTPRequestHandler):
    """The agency backend's webhook endpoint: records each event and whether its HMAC matched."""

    secret: str
    received: list[tuple[dict[str, Any], bool]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        expected = signature(type(self).secret, body)
        signed = hmac.compare_digest(self.headers.get(SIGNATURE_HEADER) or "", expected)
        type(self).received.append((json.loads(body), signed))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        return


class AgencyBackend:
    """The agency's backend: its webhook listener (start it after the processes: it is a thread)."""

    def __init__(self) -> None:
        self.secret = "agency-webhook-" + secrets.token_hex(8)
        self.port = free_port()
        self.handler: type[_Events] = type("Events", (_Events,), {"secret": self.secret, "received": []})
        self.server: ThreadingHTTPServer | None = None

    def hook(self) -> dict[str, Any]:
        """The Nordic access point's webhook setting."""
        return {
            "url": f"http://127.0.0.1:{self.port}/events",
            "events": ["message-received"],
            "secret": self.secret,
            "backoff": "200ms",
        }

    def start(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def events(self, message_id: str) -> list[tuple[dict[str, Any], bool]]:
        """The ``message-received`` events about the message ``message_id``."""
        received: list[tuple[dict[str, Any], bool]] = self.handler.received
        return [(e, ok) for e, ok in list(received) if e.get("data", {}).get("message_id") == message_id]


@dataclass
class TwoWayFederation:
    """The federation, the time-stamp authority, the agency's backend and the holders' tokens."""

    federation: fed.Federation
    pki: DevelopmentPki
    tsa: Child
    tsa_ca: Path
    backend: AgencyBackend
    holder_tokens: dict[str, str] = field(default_factory=dict)  # mailbox -> its holder's token

    @property
    def nordic(self) -> fed.AccessPointServer:
        return self.federation.nordic

    @property
    def agency_keys(self) -> KeyPair:
        """The agency's signing key (its access point's, which also seals as its förmedlare)."""
        issued = self.pki.parties["nordic"].rsa
        return load_key_pair(issued.key_path, None, certificate=issued.certificate_path)

    def operator_certificates(self) -> list[x509.Certificate]:
        """The operators' signing certificates, as the federation publishes them."""
        return [self.pki.parties[o.key].rsa.certificate for o in fed.OPERATORS]

    def tsa_anchors(self) -> list[x509.Certificate]:
        return x509.load_pem_x509_certificates(self.tsa_ca.read_bytes())

    def operator_url(self, recipient: str) -> str:
        """The mailbox API of the operator that holds ``recipient``'s mailbox."""
        operator = next(o for o in fed.OPERATORS if recipient in o.mailboxes)
        return self.federation.operators[operator.key].url


def _tsa(folder: Path, pki: DevelopmentPki) -> tuple[Child, Path]:
    """The development time-stamp authority, its certificate under the development CA."""
    folder.mkdir(parents=True)
    ca_key = serialization.load_pem_private_key(pki.ca.key_path.read_bytes(), None)
    ca = KeyPair(ca_key, pki.ca.certificate)  # type: ignore[arg-type]
    now = datetime.now(UTC)
    keys = authority_certificate(
        ca,
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Demo Time-Stamp Authority")]),
        not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=1),
    )
    key_path, certificate_path = folder / "tsa.key", folder / "tsa.pem"
    key_path.write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate_path.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    port = free_port()
    argv = ["tsa", "serve", "--key", str(key_path), "--certificate", str(certificate_path), "--port", str(port)]
    return Child("tsa", folder, port, argv), pki.ca.certificate_path


def build(folder: Path, *, mailing: int = 0, nordic_hooks: tuple[dict[str, Any], ...] = ()) -> TwoWayFederation:
    """Write every process's settings (nothing runs yet); ``mailing``: recipients of the demo's mass mailing;
    ``nordic_hooks``: more webhooks of the Nordic access point, beside the agency backend's."""
    pki = generate_keys(folder / "keys", fed.PARTY_IDS, days=1)
    backend = AgencyBackend()
    hooks = [backend.hook(), *nordic_hooks]
    federation = fed.build(folder, pki, nordic_settings={"webhooks": hooks}, mailing=mailing)
    tsa, tsa_ca = _tsa(folder / "tsa", pki)
    tokens: dict[str, str] = {}
    nordic_certificate = pki.parties["nordic"].rsa.certificate_path
    for operator in fed.OPERATORS:
        settings = federation.operators[operator.key].argv[-1]
        path = Path(settings)
        text = path.read_text()
        sweden = str(pki.parties["sweden"].rsa.certificate_path)
        text = text.replace(f'intermediaries = ["{sweden}"]', f'intermediaries = ["{sweden}", "{nordic_certificate}"]')
        text += '\n[operator.two_way]\nsweep_interval = "500ms"\n\n'
        text += f'[operator.timestamping]\nurl = "{tsa.url}/"\ntrust = ["{tsa_ca}"]\n\n'
        shown = '["application/pdf", "text/plain", "text/html", "application/xml"]'
        text += f'[operator.presentation]\ncontent_types = {shown}\nmax_part_size = "3GiB"\n'
        text += '\n[[operator.tokens]]\ntoken = "operator-admin-' + secrets.token_hex(8) + '"\n'
        for mailbox in operator.mailboxes:
            tokens[mailbox] = "holder-" + secrets.token_hex(12)
            text += f'\n[[operator.tokens]]\ntoken = "{tokens[mailbox]}"\nrecipients = ["{mailbox}"]\n'
        path.write_text(text)
    return TwoWayFederation(federation, pki, tsa, tsa_ca, backend, tokens)


def start(world: TwoWayFederation) -> None:
    """Start the time-stamp authority and the federation; then the agency's webhook listener."""
    world.tsa.start()
    fed.start(world.federation, world.pki)
    world.tsa.wait_ready()
    world.backend.start()


def stop(world: TwoWayFederation) -> dict[str, int | None]:
    """Stop everything (the agency's listener last: an access point still delivering an event must get its
    answer to stop promptly); the processes' exit codes."""
    codes = fed.stop(world.federation)
    codes["tsa"] = world.tsa.stop()
    world.backend.stop()
    return codes


# --- letters in each network's form ---


@dataclass(frozen=True, slots=True)
class LetterContent:
    """What a demo letter says in every network's form: to whom, its terms, subject, text and id."""

    recipient: str
    terms: LetterTerms
    subject: str
    body: bytes
    content_type: str
    letter_id: str

    def document(self) -> bytes:
        """The letter document (the SDK and SBDH forms carry it; an empty body gives a letter without a file)."""
        file = InlineFile(self.content_type, self.body) if self.body else None
        return build_letter(LetterDocument(self.letter_id, self.subject, self.terms, file))


LetterBuilder = Callable[..., bytes]


def _letter_form(build: Callable[[TwoWayFederation, LetterContent], bytes]) -> LetterBuilder:
    """The builder callers use, ``(world, recipient, terms, *, subject, body, content_type, letter_id)``, over
    ``build`` of one network's form; a letter without an id gets a fresh UUID."""

    def letter(
        world: TwoWayFederation,
        recipient: str,
        terms: LetterTerms,
        *,
        subject: str,
        body: bytes,
        content_type: str = "text/plain",
        letter_id: str | None = None,
    ) -> bytes:
        content = LetterContent(recipient, terms, subject, body, content_type, letter_id or str(uuid.uuid4()))
        return build(world, content)

    letter.__name__ = letter.__qualname__ = build.__name__
    letter.__doc__ = build.__doc__
    return letter


@_letter_form
def mm_letter(world: TwoWayFederation, letter: LetterContent) -> bytes:
    """A Mina meddelanden letter: signed by the agency, sealed by its förmedlare (its access point)."""
    message = SecureMessage(
        letter.letter_id, letter.subject, SupportInfo("Ring 0771-567 567"), letter.content_type, letter.body
    )
    delivery = SecureDelivery(
        Sender("16" + AGENCY_ORGNR, AGENCY_NAME),
        letter.recipient,
        (with_terms(message, letter.terms),),
        reference=letter.terms.case_reference,
    )
    keys = world.agency_keys
    signed = build_signed_delivery(delivery, keys)
    return build_sealed_delivery(signed, keys, received=datetime.now(UTC).date())


@_letter_form
def sdk_letter(world: TwoWayFederation, letter: LetterContent) -> bytes:
    """An SDK letter: the letter document in an XHE from the agency to the holder, signed by the agency."""
    xhe = Xhe(
        letter.letter_id,
        datetime.now(UTC).replace(microsecond=0),
        sdk_scope(f"busdox-docid-qns::{LETTER_NS}::Letter##1::tm-base-ext-sigenc", FEDERATION_ID),
        XheParty(AGENCY),
        XheParty(letter.recipient),
        XhePayload(LETTER_DOCUMENT_TYPE, "application/xml", letter.document()),
    )
    return build_xhe(xhe, keys=world.agency_keys)


@_letter_form
def sbdh_letter(world: TwoWayFederation, letter: LetterContent) -> bytes:
    """A Peppol-style letter: the letter document in an SBD from the agency to the holder."""
    del world
    moment = datetime.now(UTC).replace(microsecond=0)
    header = Sbdh(
        sender=(Partner(AGENCY),),
        receiver=(Partner(letter.recipient),),
        document=DocumentIdentification(LETTER_NS, "1", letter.letter_id, "Letter", moment),
    )
    return build_sbd(header, letter.document())


FORMS: dict[str, LetterBuilder] = {"minameddelanden": mm_letter, "sdk": sdk_letter, "sbdh": sbdh_letter}


def send(world: TwoWayFederation, recipient: str, payload: bytes, *, message_id: str | None = None) -> str:
    """Submit a letter at the Nordic access point, routed through FaR to ``recipient``; its MessageId."""
    message_id = message_id or f"{uuid.uuid4()}@agency.demo"
    document = {
        "pmode": "nordic-to-se",
        "message_id": message_id,
        "properties": {
            "originalSender": {"value": AGENCY, "type": "iso6523-actorid-upis"},
            "finalRecipient": recipient,
        },
        "payloads": [
            {"content_id": "letter@agency", "mime_type": "application/xml", "data": base64.b64encode(payload).decode()}
        ],
    }
    code, answer = world.nordic.api("POST", "/api/v1/messages", document)
    if code != 202:
        raise DemoFailure(f"the agency's access point refused {message_id}: HTTP {code} {answer}")
    return message_id


def holder(
    world: TwoWayFederation, recipient: str, method: str, path: str, body: Any = None, *, session: str | None = None
) -> tuple[int, Any]:
    """The holder's app calling their operator's mailbox API (``path`` after ``/api/v1/mailboxes/{recipient}``)
    with the holder's token, or with ``session`` (an e-ID session's bearer, see ``login``)."""
    url = f"{world.operator_url(recipient)}/api/v1/mailboxes/{recipient}{path}"
    return fed._call(url, session or world.holder_tokens[recipient], method, body)


def login(world: TwoWayFederation, recipient: str) -> str:
    """The holder logs in at their operator with e-ID (the development e-ID CA); the session's bearer."""
    operator = next(o for o in fed.OPERATORS if recipient in o.mailboxes)
    text = login_text(f"16{operator.orgnr}", operator.name)
    body = {"agreement_text": text, "signatures": world.federation.signed(text, recipient)}
    code, session = fed._operator_api(world.federation, operator.key, "POST", "/api/v1/sessions", body)
    if code != 201:
        raise DemoFailure(f"{recipient} could not log in at {operator.name}: HTTP {code} {session}")
    return str(session["token"])


def mail_id(world: TwoWayFederation, recipient: str, message_id: str, timeout: float = fed.ANSWER_TIMEOUT) -> int:
    """The id of the letter ``message_id`` (as forwarded by the router) in ``recipient``'s mailbox, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, listing = holder(world, recipient, "GET", "/messages")
        if code == 200:
            found = [m["id"] for m in listing["messages"] if m["as4_message_id"] == f"fwd-{message_id}"]
            if found:
                return int(found[0])
        time.sleep(0.1)
    raise DemoFailure(f"{message_id} did not reach the mailbox of {recipient} within {timeout:.0f} s")


def status(world: TwoWayFederation, message_id: str) -> TwoWayStatus:
    """What came back about a letter, each piece verified, as the agency sees it."""
    return asyncio.run(
        two_way_status(
            world.nordic.url,
            world.nordic.token,
            message_id,
            world.operator_certificates(),
            tsa_anchors=world.tsa_anchors(),
        )
    )


def wait_for(
    world: TwoWayFederation, message_id: str, holds: Callable[[TwoWayStatus], bool], what: str
) -> TwoWayStatus:
    """Poll the agency's view of a letter until ``holds``; DemoFailure naming ``what`` after the timeout."""
    deadline = time.monotonic() + fed.ANSWER_TIMEOUT
    found = status(world, message_id)
    while not holds(found):
        if time.monotonic() > deadline:
            raise DemoFailure(f"{message_id}: no {what} within {fed.ANSWER_TIMEOUT:.0f} s: {found.to_json()}")
        time.sleep(0.2)
        found = status(world, message_id)
    return found


# --- the demo's third part ---


def run(folder: Path, number: int) -> int:
    """Parts two and three of ``make demo`` in one federation (``demo_federation.run`` with the time-stamp
    authority and the agency's listener beside it, and the two-way sections before it stops); the next number."""
    world = build(folder, mailing=fed.MAILING)
    return fed.run(
        folder,
        number,
        made=(world.federation, world.pki),
        begin=lambda: start(world),
        end=lambda: stop(world),
        more=lambda first: show(world, first),
    )


def show(world: TwoWayFederation, number: int) -> int:
    """Part three: Bertil answers a letter, acknowledges a served one with e-ID, pays an invoice once; what the
    agency gets back, each piece verified with the operator's certificate. The next section's number."""
    say("Part 3: two-way digital post: answers, e-delgivning and invoices paid from the mailbox", 0)
    say(
        f"{number}. A letter to {fed.BERTIL} ({fed.OPERATORS[1].name}) asks for an answer within 14 days; he answers "
        "in his mailbox app and the answer travels back: operator, its access point, the router, the agency's "
        f"access point (a time-stamp authority runs at {world.tsa.url} for the next part):"
    )
    terms = LetterTerms(reply=ReplyTerms(ReplyOption.REQUESTED, datetime.now(UTC) + timedelta(days=14)),
                        case_reference="Dnr 2026/1234")  # fmt: skip
    message_id, mail = _delivered(world, terms, "Beslut om bostadsbidrag", b"Svara senast om 14 dagar.")
    code, sent = holder(world, fed.BERTIL, "POST", f"/messages/{mail}/replies", {"text": "Jag godtar beslutet."})
    if code != 202:
        raise DemoFailure(f"the answer was refused: HTTP {code} {sent}")
    (reply,) = wait_for(world, message_id, lambda s: bool(s.replies), "answer").replies
    say(
        f"   OK answer {reply['message_id']} at the agency (signature verified) in reply to {message_id} (case "
        f"{reply['case_reference']}), {reply['text']!r}",
        indent=6,
    )
    say()
    say(
        f"{number + 1}. A served letter (e-delgivning, deadline in an hour): Bertil logs in with e-ID and signs "
        "that he has read it; the operator sends the agency a signed delgivningskvitto with an RFC 3161 time-stamp:"
    )
    terms = LetterTerms(delgivning_deadline=datetime.now(UTC) + timedelta(hours=1))
    message_id, mail = _delivered(world, terms, "Föreläggande", b"Ni ska inkomma med ritningar.")
    session = login(world, fed.BERTIL)
    text = holder(world, fed.BERTIL, "GET", f"/messages/{mail}/two-way", session=session)[1]["delgivning"]
    signatures = world.federation.signed(text["acknowledgement_text"], fed.BERTIL)
    code, served = holder(world, fed.BERTIL, "POST", f"/messages/{mail}/acknowledgement", {"signatures": signatures},
                          session=session)  # fmt: skip
    if code != 201:
        raise DemoFailure(f"the acknowledgement was refused: HTTP {code} {served}")
    evidence = wait_for(world, message_id, lambda s: s.delgivning is not None, "kvitto").delgivning or {}
    stamp = evidence.get("timestamp") or {}
    say(
        f"   OK {evidence.get('status')} at {evidence.get('served_at')}: kvitto SHA-256 "
        f"{str(evidence.get('kvitto_sha256'))[:16]}… signed by {evidence.get('signed_by')}, time-stamped "
        f"{stamp.get('time')} by {stamp.get('tsa')}, {len(evidence.get('parts', []))} part(s) by digest",
        indent=6,
    )
    say()
    say(f"{number + 2}. An invoice with payment data (499.00 SEK to bankgiro 5050-1055, OCR, due in 30 days):")
    due = datetime.now(UTC) + timedelta(days=30)
    reference = "20260042" + luhn_digit("20260042")
    payment = PaymentData(Decimal("499.00"), "SEK", due.date(), reference, AccountKind.BANKGIRO, "50501055",
                          "Skatteverket", invoice_number="F-1")  # fmt: skip
    message_id, mail = _delivered(world, LetterTerms(invoice=True, payment=payment), "Faktura", b"Att betala")
    found = holder(world, fed.BERTIL, "GET", f"/invoices?state=unpaid&due_before={due.date().isoformat()}")[1]
    code, paid = holder(world, fed.BERTIL, "POST", f"/messages/{mail}/payment", {})
    again = holder(world, fed.BERTIL, "POST", f"/messages/{mail}/payment", {})
    if code != 201 or again[0] != 409:
        raise DemoFailure(f"paying: HTTP {code} {paid}, then HTTP {again[0]} {again[1]}")
    confirmed = wait_for(world, message_id, lambda s: s.payment is not None, "payment confirmation").payment or {}
    say(
        f"   OK found among {len(found['invoices'])} unpaid invoice(s) due by {due.date()}, paid once "
        f"({confirmed.get('payment_id')}; a second payment refused: {again[1]['code']}); the agency holds the "
        f"signed confirmation, OCR {confirmed.get('terms', {}).get('reference')} ({confirmed.get('note')})",
        indent=6,
    )
    return number + 3


def _delivered(world: TwoWayFederation, terms: LetterTerms, subject: str, body: bytes) -> tuple[str, int]:
    message_id = send(world, fed.BERTIL, mm_letter(world, fed.BERTIL, terms, subject=subject, body=body))
    return message_id, mail_id(world, fed.BERTIL, message_id)
