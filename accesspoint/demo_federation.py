"""The second part of ``make demo``: Swedish digital post as a small federation on this machine.

Who runs (each its own process on loopback):

- FaR, the routing register (``accesspoint far serve``; recipients loaded with ``accesspoint far import``);
- a Nordic sender's access point (an agency in Norway sends letters to Swedish residents);
- the Swedish access point, the router: it asks FaR about each letter's recipient before it answers, refuses
  at once (EBMS:0004 with FaR's reason) or forwards the letter to the recipient's operator;
- two mailbox operators, each an access point with ``accesspoint operator serve`` as its backend: the letter
  goes into the recipient's mailbox (or is refused), and the operator answers with a signed DeliveryNotification
  on the reply leg; the router hands it back to the Nordic access point, which verifies it with the operator's
  certificate against what it sent and shows it in the letter's status (``end_to_end``).

- an SMP (``accesspoint smp serve``) and dnsmasq as the BDXL zone: a letter to a participant abroad is
  forwarded where they say (operator 2's access point, here), and its answer comes back the same way. Without
  dnsmasq that letter is left out, and the demo says so.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from accesspoint.demo_common import Child, DemoFailure, free_port, key_files, say, stop_process
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from accesspoint.keys_cli import DevelopmentPki, generate_keys
from accesspoint.msh.end_to_end import certificate_sha256, verify_answer
from far.identifiers import with_check_digit
from smp.documents import render_service_metadata
from smp.identifiers import NO_PROCESS, Identifier, peppol_naptr_name
from smp.model import EndpointInfo, Flavour, ProcessInfo, ServiceMetadata, TransportProfile

UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"
SERVICE = {"value": "urn:example:service:digital-post", "type": "urn:example:service-type"}
START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 30.0
FAR_TOKEN = "far-demo-token-" + secrets.token_hex(8)
WEBHOOK_SECRET = "operator-webhook-" + secrets.token_hex(8)
PARTY_IDS = {
    "nordic": "AP-NO-0100",
    "sweden": "AP-SE-0001",
    "op1": "AP-OPERATOR-1",
    "op2": "AP-OPERATOR-2",
    "smp": "SMP-0001",  # the SMP's signing certificate, not an access point
}

AGENCY = with_check_digit("202100544")  # the Norwegian agency's Swedish organisation number, for FaR
REFUSED_AGENCY = with_check_digit("212000123")  # a sender one recipient has refused


FOREIGN = "iso6523-actorid-upis::0088:5798000000009"  # a participant abroad: BDXL + SMP name its access point


@dataclass(frozen=True)
class Operator:
    """A mailbox operator: its name, organisation number, access point party and mailboxes."""

    key: str
    name: str
    orgnr: str
    mailboxes: tuple[str, ...]


OPERATORS = (
    Operator("op1", "Brevlådan Ett AB", with_check_digit("556840226"), ("19" + with_check_digit("780202238"),)),
    Operator(
        "op2",
        "Brevlådan Två AB",
        with_check_digit("559012345"),
        # Its second FaR recipient has no mailbox there (see below); FOREIGN's SMP points to its access point.
        ("19" + with_check_digit("811218987"), FOREIGN.partition("::")[2]),
    ),
)
ALICE = OPERATORS[0].mailboxes[0]  # a mailbox at operator 1
BERTIL = OPERATORS[1].mailboxes[0]  # a mailbox at operator 2; refuses REFUSED_AGENCY
CECILIA = "19" + with_check_digit("850505123")  # FaR says operator 2, but operator 2 has no mailbox for her
NOBODY = "19" + with_check_digit("900101123")  # not in FaR: no digital mailbox
ACTION = "busdox-docid-qns::urn:example:letter::Letter##1.0"  # the letters' document type (and leg action)
ZONE = "participant.sml.demo.example"
SMP_TOKEN = "smp-demo-token-" + secrets.token_hex(8)


@dataclass(frozen=True)
class Letter:
    """One letter of the demo and what should become of it."""

    message_id: str
    recipient: str
    sender: str
    expect: str  # delivered-to-mailbox | rejected | refused:<FaR reason>
    why: str


LETTERS = (
    Letter("letter-1@nordic", ALICE, AGENCY, "delivered-to-mailbox", "a mailbox at Brevlådan Ett AB"),
    Letter("letter-2@nordic", BERTIL, AGENCY, "delivered-to-mailbox", "a mailbox at Brevlådan Två AB"),
    Letter("letter-3@nordic", NOBODY, AGENCY, "refused:no-mailbox", "no digital mailbox (not in FaR)"),
    Letter("letter-4@nordic", BERTIL, REFUSED_AGENCY, "refused:sender-refused", "the recipient refuses this sender"),
    Letter("letter-5@nordic", CECILIA, AGENCY, "rejected", "FaR names Brevlådan Två AB, which has no such mailbox"),
)
ABROAD = Letter(
    "letter-6@nordic", FOREIGN, AGENCY, "delivered-to-mailbox", "a participant abroad: BDXL (dnsmasq) + SMP"
)


def _call(url: str, token: str, method: str = "GET", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            raw = response.read()
            return response.status, json.loads(raw) if "json" in response.headers.get("Content-Type", "") else raw
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


class AccessPointServer(Child):
    """``accesspoint serve`` with its P-Modes and settings written into its folder."""

    def __init__(self, name: str, folder: Path, port: int, pmodes: dict[str, Any], settings: dict[str, Any]) -> None:
        folder.mkdir(parents=True)
        self.token = secrets.token_urlsafe(24)
        (folder / "pmodes.yaml").write_text(json.dumps(pmodes, indent=2))
        base = {
            "listen": {"host": "127.0.0.1", "port": port},
            "pmodes": "pmodes.yaml",
            "storage": "data",
            "instance": name,
            "revocation": False,  # the development CA publishes no CRL or OCSP
            "api_tokens": [self.token],
            "send": {"timeout": "10s", "lease": "30s"},
        }
        (folder / "server.yaml").write_text(json.dumps({**base, **settings}, indent=2))
        super().__init__(name, folder, port, ["serve", "--config", str(folder / "server.yaml")])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return _call(self.url + path, self.token, method, body)

    def status(self, message_id: str, direction: str = "out") -> dict[str, Any]:
        code, document = self.api("GET", f"/api/v1/messages/{message_id}?direction={direction}")
        return document if code == 200 else {}

    def wait(self, message_id: str, done: Any, direction: str = "out", what: str = "") -> dict[str, Any]:
        """Poll the message's status until ``done(document)``."""
        deadline = time.monotonic() + ANSWER_TIMEOUT
        document: dict[str, Any] = {}
        while time.monotonic() < deadline:
            document = self.status(message_id, direction)
            if document and done(document):
                return document
            time.sleep(0.1)
        raise DemoFailure(
            f"{message_id} at {self.name}: no {what or 'answer'} within {ANSWER_TIMEOUT:.0f} s: {document}"
        )


def _leg(action: str, anchors: str, *, pin: bool = True) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "action": action,
        "security": {
            "signature_algorithm": "rsa-sha256",
            "token_reference": "bst-x509v3",
            "trust": {"anchors": [anchors], "pin_partner": pin, "revocation": "off"},
        },
        "reception_awareness": {"retries": 2, "backoff_base": "500ms", "backoff_max": "2s", "jitter": 0.0},
    }


def _two_way(pmode_id: str, initiator: str, responder: str, anchors: str) -> dict[str, Any]:
    """Letters on leg 1, the operator's signed answer back on leg 2 (ref_to_message_id = the letter)."""
    return {
        "id": pmode_id,
        "network": "edelivery-1.15",
        "mep": "two-way",
        "binding": "push-and-push",
        "initiator": {"party": initiator},
        "responder": {"party": responder},
        "legs": [_leg(ACTION, anchors), _leg("Answer", anchors)],
    }


def _party(pki: DevelopmentPki, name: str, endpoint: str) -> dict[str, Any]:
    return {
        "party_ids": [{"value": PARTY_IDS[name], "type": UNREGISTERED}],
        "signing_certificate": str(pki.parties[name].rsa.certificate_path),
        "endpoint": endpoint,
    }


@dataclass
class Federation:
    """Every process of the federation."""

    far: Child
    smp: Child
    dns: Dnsmasq | None  # None when dnsmasq is not installed: no letter abroad then
    nordic: AccessPointServer
    sweden: AccessPointServer
    operator_aps: dict[str, AccessPointServer]
    operators: dict[str, Child]

    @property
    def all(self) -> list[Child]:
        return [self.far, self.smp, *self.operator_aps.values(), *self.operators.values(), self.sweden, self.nordic]

    @property
    def letters(self) -> tuple[Letter, ...]:
        """The demo's letters: the one abroad only with BDXL (dnsmasq) running."""
        return LETTERS if self.dns is None else (*LETTERS, ABROAD)


def build(folder: Path, pki: DevelopmentPki, *, nordic_settings: dict[str, Any] | None = None) -> Federation:
    """Write every process's settings (nothing runs yet); ``nordic_settings`` adds to the Nordic access point's."""
    names = ("far", "smp", "nordic", "sweden", "op1", "op2", "mailbox-op1", "mailbox-op2")
    ports = {name: free_port() for name in names}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    anchors = str(pki.ca.certificate_path)
    keys = {name: {"signing": [key_files(pki.parties[name].rsa)]} for name in PARTY_IDS}
    smp = _smp(folder / "smp", ports["smp"], pki)
    binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    dns = None if binary is None else Dnsmasq(binary, folder / "dns")

    (folder / "far").mkdir()
    far_settings = folder / "far" / "far.toml"
    far_settings.write_text(
        f'[far]\ndatabase = "sqlite+aiosqlite:///far.db"\nport = {ports["far"]}\n\n'
        f'[[far.tokens]]\nname = "demo"\ntoken = "{FAR_TOKEN}"\nscopes = ["read", "write"]\n'
    )
    far = Child("far", folder / "far", ports["far"], ["far", "serve", "--config", str(far_settings)])

    nordic = AccessPointServer(
        "nordic",
        folder / "nordic",
        ports["nordic"],
        {
            "version": 1,
            "self": "nordic",
            "parties": {
                "nordic": _party(pki, "nordic", url["nordic"] + "/as4"),
                "sweden": _party(pki, "sweden", url["sweden"] + "/as4"),
            },
            "pmodes": [_two_way("nordic-to-se", "nordic", "sweden", anchors)],
        },
        {
            "keys": keys["nordic"],
            # The operators' certificates, as the federation publishes them: their answers must verify with one.
            "end_to_end": {"operators": [str(pki.parties[o.key].rsa.certificate_path) for o in OPERATORS]},
            **(nordic_settings or {}),
        },
    )
    sweden_parties = {
        "sweden": _party(pki, "sweden", url["sweden"] + "/as4"),
        "nordic": _party(pki, "nordic", url["nordic"] + "/as4"),
    }
    for operator in OPERATORS:
        # FaR gives the operator's endpoint; the agreement gives its certificate.
        sweden_parties[operator.key] = _party(pki, operator.key, "dynamic")
    sweden_parties["network"] = {"endpoint": "dynamic"}
    sweden = AccessPointServer(
        "sweden",
        folder / "sweden",
        ports["sweden"],
        {
            "version": 1,
            "self": "sweden",
            "parties": sweden_parties,
            "pmodes": [
                _two_way("nordic-to-se", "nordic", "sweden", anchors),
                *(_two_way(f"se-to-{o.key}", "sweden", o.key, anchors) for o in OPERATORS),
                {
                    # Participants abroad: endpoint and certificate from their SMP (found through BDXL).
                    "id": "se-to-network",
                    "network": "edelivery-1.15",
                    "initiator": {"party": "sweden"},
                    "responder": {"party": "network"},
                    "legs": [_leg(ACTION, anchors, pin=False)],
                },
            ],
        },
        {
            "keys": keys["sweden"],
            "routing": {"far": url["far"], "token": FAR_TOKEN, "pmodes": ["nordic-to-se"], "timeout": "3s"},
            **(
                {}
                if dns is None
                else {"discovery": {"zone": ZONE, "dns": f"127.0.0.1:{dns.port}", "smp_trust": anchors}}
            ),
        },
    )
    operator_aps: dict[str, AccessPointServer] = {}
    operators: dict[str, Child] = {}
    for operator in OPERATORS:
        hook = {
            "url": f"{url['mailbox-' + operator.key]}/hooks/accesspoint",
            "events": ["message-received"],
            "secret": WEBHOOK_SECRET,
            "backoff": "200ms",
            "max_attempts": 5,
        }
        ap = AccessPointServer(
            f"{operator.key}-ap",
            folder / operator.key,
            ports[operator.key],
            {
                "version": 1,
                "self": operator.key,
                "parties": {
                    operator.key: _party(pki, operator.key, url[operator.key] + "/as4"),
                    "sweden": _party(pki, "sweden", url["sweden"] + "/as4"),
                },
                "pmodes": [_two_way(f"se-to-{operator.key}", "sweden", operator.key, anchors)],
            },
            {"keys": keys[operator.key], "webhooks": [hook]},
        )
        operator_aps[operator.key] = ap
        issued = pki.parties[operator.key].rsa  # the operator signs its answers with its access point's key
        mailbox_folder = folder / f"mailbox-{operator.key}"
        mailbox_folder.mkdir()
        settings = mailbox_folder / "operator.toml"
        mailboxes = ", ".join(f'"{m}"' for m in operator.mailboxes)
        settings.write_text(
            f'[operator]\nid = "16{operator.orgnr}"\nname = "{operator.name}"\n'
            f"port = {ports['mailbox-' + operator.key]}\n"
            f'database = "sqlite+aiosqlite:///mailbox.db"\nmailboxes = [{mailboxes}]\n'
            f'keys = {{ key = "{issued.key_path}", certificate = "{issued.certificate_path}" }}\n\n'
            f'[operator.access_point]\nurl = "{ap.url}"\ntoken = "{ap.token}"\n'
            f'webhook_secret = "{WEBHOOK_SECRET}"\npoll_interval = "1s"\n\n'
            f'[operator.trust]\nintermediaries = ["{pki.parties["sweden"].rsa.certificate_path}"]\n'
            f'sender_anchors = ["{anchors}"]\n'
        )
        operators[operator.key] = Child(
            f"mailbox-{operator.key}",
            mailbox_folder,
            ports["mailbox-" + operator.key],
            ["operator", "serve", "--config", str(settings)],
        )
    return Federation(far, smp, dns, nordic, sweden, operator_aps, operators)


def _smp(folder: Path, port: int, pki: DevelopmentPki) -> Child:
    """``accesspoint smp serve`` signing with the development PKI's SMP certificate (the router trusts the CA)."""
    folder.mkdir()
    issued = pki.parties["smp"].rsa
    settings = folder / "smp.toml"
    settings.write_text(
        f'[smp]\ndatabase = "sqlite+aiosqlite:///smp.sqlite3"\nsigning_key = "{issued.key_path}"\n'
        f'signing_certificate = "{issued.certificate_path}"\ntokens = ["{SMP_TOKEN}"]\nmax_age = 60\n\n'
        f'[[smp.listen]]\nflavour = "peppol"\nport = {port}\nbase_path = "/"\n'
    )
    return Child("smp", folder, port, ["smp", "serve", "--config", str(settings)], health="/")


class Dnsmasq:
    """dnsmasq on a free loopback port answering the BDXL zone from NAPTR records: the demo's SML."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary, self.folder = binary, folder
        folder.mkdir()
        self.port = free_port()  # a TCP port free now; dnsmasq listens on UDP and TCP
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, records: dict[str, str]) -> None:
        """Serve ``records`` (NAPTR owner name -> SMP URL) and wait until it answers."""
        options = [f"port={self.port}", "listen-address=127.0.0.1", "bind-interfaces", "no-resolv", "no-hosts"]
        options.append(f"local=/{ZONE}/")
        options += [f"naptr-record={name},100,10,U,Meta:SMP,!^.*$!{url}!" for name, url in records.items()]
        conf = self.folder / "dnsmasq.conf"
        conf.write_text("\n".join(options) + "\n")
        with (self.folder / "dnsmasq.log").open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file=", "--log-facility=-"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        query = dns.message.make_query(next(iter(records)), dns.rdatatype.NAPTR)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DemoFailure(f"dnsmasq exited with {self.process.returncode}")
            try:
                dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
                return
            except (OSError, dns.exception.Timeout):
                time.sleep(0.05)
        raise DemoFailure("dnsmasq did not answer within 10 s")

    def stop(self) -> int | None:
        """Stop it; 0 when it stopped on SIGTERM as asked, else its exit code."""
        if self.process is None:
            return None
        code = stop_process(self.process)
        return 0 if code == -signal.SIGTERM else code


def publish_abroad(federation: Federation, pki: DevelopmentPki) -> None:
    """FOREIGN's SMP entry: the letters' document type at operator 2's access point; its NAPTR record in BDXL."""
    if federation.dns is None:
        return
    participant, document = Identifier.parse(FOREIGN), Identifier.parse(ACTION)
    der = pki.parties["op2"].rsa.certificate.public_bytes(Encoding.DER)
    endpoint = EndpointInfo(TransportProfile.EDELIVERY_AS4_1_15, federation.operator_aps["op2"].url + "/as4", der)
    model = ServiceMetadata(
        participant, document, (ProcessInfo(Identifier("cenbii-procid-ubl", NO_PROCESS), (endpoint,)),)
    )
    base = federation.smp.url
    for url, body in (
        (f"{base}/{participant.url_segment()}", None),
        (
            f"{base}/{participant.url_segment()}/services/{document.url_segment()}",
            etree.tostring(render_service_metadata(model, Flavour.OASIS1)),
        ),
    ):
        request = urllib.request.Request(url, data=body, method="PUT")  # noqa: S310 (loopback)
        request.add_header("Authorization", f"Bearer {SMP_TOKEN}")
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            if response.status not in (200, 201):
                raise DemoFailure(f"the SMP refused {url}: HTTP {response.status}")
    federation.dns.start({peppol_naptr_name(participant, ZONE): base + "/"})


def start(federation: Federation, pki: DevelopmentPki) -> None:
    """Start every process (all at once), wait until each answers, then load FaR."""
    for server in federation.all:
        server.start()
    for server in federation.all:
        server.wait_ready()
    load_far(federation)
    publish_abroad(federation, pki)


def stop(federation: Federation) -> dict[str, int | None]:
    """Stop every process, senders first (SIGTERM to all, then wait); their exit codes."""
    for server in reversed(federation.all):
        server.terminate()
    codes = {server.name: server.stop() for server in reversed(federation.all)}
    if federation.dns is not None:
        codes["dnsmasq"] = federation.dns.stop()
    return codes


def load_far(federation: Federation) -> None:
    """The two operators (REST) and the recipients (``accesspoint far import``, CSV)."""
    for operator in OPERATORS:
        body = {
            "name": operator.name,
            "party_id": PARTY_IDS[operator.key],
            "endpoint": federation.operator_aps[operator.key].url + "/as4",
        }
        code, answer = _call(f"{federation.far.url}/api/v1/operators/{operator.orgnr}", FAR_TOKEN, "PUT", body)
        if code not in (200, 201):
            raise DemoFailure(f"FaR refused the operator {operator.name}: HTTP {code} {answer}")
    csv = federation.far.folder / "recipients.csv"
    csv.write_text(
        "recipient,status,operator,refused_senders\n"
        f"{ALICE},secure,{OPERATORS[0].orgnr},\n"
        f"{BERTIL},secure,{OPERATORS[1].orgnr},{REFUSED_AGENCY}\n"
        f"{CECILIA},secure,{OPERATORS[1].orgnr},\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "accesspoint", "far", "import", str(csv), "--config", str(federation.far.argv[-1])],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoFailure(f"far import failed: {done.stderr.strip()}")


def letter_document(letter: Letter) -> bytes:
    header = Sbdh(
        sender=(Partner(f"0007:{letter.sender}"),),
        receiver=(Partner(letter.recipient.rpartition("::")[2]),),
        document=DocumentIdentification(
            standard="urn:example:letter",
            type_version="1.0",
            instance_identifier=str(uuid.uuid4()),
            type="Letter",
            created=datetime.now(UTC).replace(microsecond=0),
        ),
        scopes=(Scope(ScopeType.DOCUMENTID, "urn:example:letter::Letter##1.0", "busdox-docid-qns"),),
    )
    return build_sbd(header, b'<Letter xmlns="urn:example:letter">Ditt beslut finns i brevladan.</Letter>')


def _final_recipient(recipient: str) -> str | dict[str, str]:
    """12 digits as they are (FaR); a participant abroad as {value, type} (``scheme::value``, for BDXL)."""
    scheme, _, value = recipient.rpartition("::")
    return {"value": value, "type": scheme} if scheme else recipient


def submission(letter: Letter) -> dict[str, Any]:
    """The REST submission of a letter at the Nordic access point, addressed through FaR (originalSender, an
    organisation number; finalRecipient, 12 digits) with the SBD letter as its payload."""
    return {
        "pmode": "nordic-to-se",
        "message_id": letter.message_id,
        "properties": {
            "originalSender": {"value": f"0007:{letter.sender}", "type": "iso6523-actorid-upis"},
            "finalRecipient": _final_recipient(letter.recipient),
        },
        "payloads": [
            {
                "content_id": "letter@nordic",
                "mime_type": "application/xml",
                "data": base64.b64encode(letter_document(letter)).decode(),
            }
        ],
    }


def send(federation: Federation, letter: Letter) -> None:
    """Submit a letter at the Nordic access point."""
    code, answer = federation.nordic.api("POST", "/api/v1/messages", submission(letter))
    if code != 202:
        raise DemoFailure(f"the Nordic access point refused {letter.message_id}: HTTP {code} {answer}")


def _payloads(point: AccessPointServer, document: dict[str, Any], direction: str) -> dict[str, bytes]:
    found = {}
    for part in document["payloads"]:
        path = f"/api/v1/messages/{document['message_id']}/payloads/{part['content_id']}?direction={direction}"
        code, data = point.api("GET", path)
        if code != 200:
            raise DemoFailure(f"{point.name}: {path}: HTTP {code}")
        found[part["content_id"]] = data
    return found


def reverify(nordic: AccessPointServer, sent: dict[str, Any], pki: DevelopmentPki) -> str:
    """Check the answer the Nordic access point kept, again and on our own: which operator's key signed it."""
    answer = sent["end_to_end"]
    reply = nordic.status(answer["reply_message_id"], "in")
    reply_parts, sent_parts = _payloads(nordic, reply, "in"), _payloads(nordic, sent, "out")
    for operator in OPERATORS:
        certificate: x509.Certificate = pki.parties[operator.key].rsa.certificate
        checked = verify_answer(reply_parts, message_id=sent["message_id"], sent=sent_parts, certificates=[certificate])
        if checked is not None:
            if certificate_sha256(certificate) != answer["operator"]["certificate_sha256"]:
                raise DemoFailure(
                    f"{sent['message_id']}: the status names another certificate than the one that verifies"
                )
            return operator.name
    raise DemoFailure(f"{sent['message_id']}: the answer verifies with no operator's certificate")


def run(folder: Path, number: int) -> int:
    """Part two of the demo, its sections numbered from ``number``; the next free number."""
    say()
    say("Part 2: Swedish digital post as a small federation: FaR, a router and two mailbox operators", 0)
    say(
        "A Norwegian agency's access point sends letters to people in Sweden. The Swedish access point asks FaR "
        "(the routing register) where each recipient's digital mailbox is and whether they accept mail from that "
        "sender, then forwards the letter to that mailbox operator's access point or refuses it at once. The "
        "operator puts the letter in the mailbox and answers with a signed delivery notification, which travels "
        "back through the Swedish access point to the sender: the letter's status then says delivered to the "
        "mailbox, when, and whose signature proves it.",
        0,
    )
    started = time.monotonic()
    pki = generate_keys(folder / "keys", PARTY_IDS, days=1)
    federation = build(folder, pki)
    try:
        start(federation, pki)
        say()
        say(f"{number}. The federation, each its own process (keys from one development CA):")
        roles = {
            "far": "FaR, the routing register (accesspoint far serve)",
            "smp": "an SMP (accesspoint smp serve) publishing where a participant abroad receives",
            "nordic": "the Nordic sender's access point (AP-NO-0100)",
            "sweden": "the Swedish access point, router (AP-SE-0001), asks FaR before it answers",
            "op1-ap": f"{OPERATORS[0].name}'s access point (AP-OPERATOR-1)",
            "op2-ap": f"{OPERATORS[1].name}'s access point (AP-OPERATOR-2)",
            "mailbox-op1": f"{OPERATORS[0].name}'s mailboxes (accesspoint operator serve)",
            "mailbox-op2": f"{OPERATORS[1].name}'s mailboxes (accesspoint operator serve)",
        }
        for server in federation.all:
            say(f"   {server.name:11} {server.url:22} pid {server.pid}  {roles[server.name]}", indent=37)
        if federation.dns is None:
            say("   dnsmasq is not installed: no BDXL, so the letter abroad (SMP route) is left out", indent=6)
        else:
            say(
                f"   dnsmasq     127.0.0.1:{federation.dns.port:<12} the BDXL zone {ZONE}: NAPTR of {FOREIGN} "
                "-> the SMP",
                indent=6,
            )
        say()
        say(
            f"{number + 1}. FaR knows: {ALICE} at {OPERATORS[0].name}; {BERTIL} at {OPERATORS[1].name} (refuses "
            f"sender {REFUSED_AGENCY}); {CECILIA} at {OPERATORS[1].name}; {NOBODY} is not registered."
        )
        say()
        say(
            f"{number + 2}. The Nordic agency {AGENCY} sends {len(federation.letters)} letters (SBD documents, on a "
            "two-way P-Mode with "
            "the Swedish access point):"
        )
        for letter in federation.letters:
            send(federation, letter)
            say(f"   {letter.message_id} to {letter.recipient} from {letter.sender}: {letter.why}", indent=6)
        say()
        say(f"{number + 3}. Where each letter went and the signed receipts that came back:")
        failures = [problem for letter in federation.letters if (problem := _outcome(federation, letter, pki))]
        if failures:
            raise DemoFailure("; ".join(failures))
    except Exception:
        for server in federation.all:
            sys.stderr.write(f"{server.name}'s log (last lines):\n{server.log_tail()}\n")
        raise
    finally:
        codes = stop(federation)
    if any(code != 0 for code in codes.values()):
        raise DemoFailure(f"a process of the federation did not stop cleanly: exit codes {codes}")
    say()
    say(
        f"{number + 4}. All {len(codes)} processes of the federation stopped cleanly (exit code 0) after "
        f"{time.monotonic() - started:.1f} s"
    )
    return number + 5


def _outcome(federation: Federation, letter: Letter, pki: DevelopmentPki) -> str | None:
    """Print what became of one letter; a problem when it is not what the demo expects."""
    nordic, sweden = federation.nordic, federation.sweden
    sent = nordic.wait(letter.message_id, lambda d: d["state"] in ("delivered", "failed"), what="AS4 receipt")
    if letter.expect.startswith("refused:"):
        reason = letter.expect.removeprefix("refused:")
        error = sent.get("last_error") or {}
        if sent["state"] != "failed" or error.get("code") != "EBMS:0004" or not error["detail"].startswith(reason):
            return f"{letter.message_id}: expected a refusal ({reason}), got {sent['state']} {error}"
        say(f"   OK {letter.message_id}: refused at once by the Swedish access point: EBMS:0004 {reason}", indent=6)
        say(f"      ({error['detail']}); nothing was forwarded", indent=7)
        return None
    if sent["state"] != "delivered":
        return f"{letter.message_id}: not delivered to the Swedish access point: {sent}"
    routed = sweden.wait(letter.message_id, lambda d: d["state"] == "delivered_to_backend", "in", "routing")
    went = routed["history"][-1]["detail"]
    if not went.startswith("forwarded"):  # discovery: where BDXL + SMP sent it
        forwarded = sweden.status(f"fwd-{letter.message_id}")
        went += f", forwarded as fwd-{letter.message_id} to {forwarded.get('to')} (P-Mode {forwarded.get('pmode')})"
    answered = nordic.wait(letter.message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")
    answer = answered["end_to_end"]
    if answer["status"] != letter.expect:
        return f"{letter.message_id}: expected {letter.expect}, the operator answered {answer}"
    name = reverify(nordic, answered, pki)
    operator = answer["operator"]
    reasons = "".join(f" ({r['code']}: {r['text']})" for r in answer["reasons"])
    say(f"   OK {letter.message_id}: {answer['status']}{reasons}, signed by {operator['subject']}, verified", indent=6)
    say(f"      routed: {went}", indent=7)
    say(
        f"      receipt: {name} (operator {operator['id']}) at {answer['at']}, certificate SHA-256 "
        f"{operator['certificate_sha256'][:16]}…, answer {answer['reply_message_id']} relayed by the Swedish "
        "access point; payload digests match what was sent",
        indent=7,
    )
    return None
