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
  dnsmasq that letter is left out, and the demo says so;
- a Finnish agency's access point (eDelivery AS4 2.0: Ed25519 and X25519). FaR's sender register (loaded with
  ``accesspoint far senders import``) says which access point may send for which agency: the Finnish agency's
  letter goes through, a letter from the Finnish access point claiming the Norwegian agency is refused
  (``sender-not-connected-here``);
- a Swedish agency, connected through the router itself, sends a mass mailing to ``DEMO_MAILING`` recipients
  (100 unless the environment says otherwise: the operators' signed answers come back at a few a second, so
  10,000 takes the best part of an hour) across both operators: FaR is asked in batches, each letter goes
  to its operator at the mailing's rate, and the demo shows the progress and the final counts.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial
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
from accesspoint.envelopes.identity import sign_assertion
from accesspoint.envelopes.sbdh import DocumentIdentification, Partner, Sbdh, Scope, ScopeType, build_sbd
from accesspoint.keys_cli import DevelopmentPki, EidIssuer, generate_keys
from accesspoint.msh.end_to_end import certificate_sha256, verify_answer
from accesspoint.security.keys import KeyPair
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
    "finland": "AP-FI-0001",
    "sweden": "AP-SE-0001",
    "op1": "AP-OPERATOR-1",
    "op2": "AP-OPERATOR-2",
    "smp": "SMP-0001",  # the SMP's signing certificate, not an access point
}

AGENCY = "0192:974760673"  # the Norwegian agency (organisasjonsnummer, ICD 0192), sending through AP-NO-0100
REFUSED_AGENCY = "0007:" + with_check_digit("212000123")  # a Swedish sender one recipient has refused, via AP-NO-0100
FINNISH_AGENCY = "0216:003701120389"  # a Finnish agency (OVT code of its Y-tunnus), sending through AP-FI-0001
SWEDISH_AGENCY = "0007:" + with_check_digit("202100544")  # connected through the router itself: the mass mailing
MAILING = int(os.environ.get("DEMO_MAILING", "100"))  # recipients of the mass mailing


FOREIGN = "iso6523-actorid-upis::0088:5798000000009"  # a participant abroad: BDXL + SMP name its access point
PORTABILITY_SERVICE = "urn:accesspoint:operators:portability"  # operators/portability.py
PORTABILITY_ACTION = "Transfer"
REGISTERS_TOKEN = "registers-demo-" + secrets.token_hex(8)
OPERATOR_ADMIN_TOKEN = "operator-admin-" + secrets.token_hex(8)  # reads every mailbox (the operator's own staff)


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
OPERATOR_TOKENS = {o.key: f"far-{o.key}-" + secrets.token_hex(8) for o in OPERATORS}  # write:operator=<orgnr>
ALICE = OPERATORS[0].mailboxes[0]  # a mailbox at operator 1
BERTIL = OPERATORS[1].mailboxes[0]  # a mailbox at operator 2; refuses REFUSED_AGENCY
CECILIA = "19" + with_check_digit("850505123")  # FaR says operator 2, but operator 2 has no mailbox for her
NOBODY = "19" + with_check_digit("900101123")  # not in FaR: no digital mailbox
ACTION = "busdox-docid-qns::urn:example:letter::Letter##1.0"  # the letters' document type (and leg action)
COMPANY_ORGNR = with_check_digit("559876543")
COMPANY = "16" + COMPANY_ORGNR  # Exempel Bygg AB: its mailbox, read by whoever may sign for it
SIGNATORY = "19" + with_check_digit("700707123")
FORMER_SIGNATORY = "19" + with_check_digit("650606123")
PEOPLE = {
    ALICE: "Alice Andersson",
    BERTIL: "Bertil Berg",
    SIGNATORY: "Stina Styrelse",
    FORMER_SIGNATORY: "Folke Förra",
}
REGISTERS: dict[str, Any] = {
    "persons": {},
    "companies": {
        COMPANY_ORGNR: {
            "name": "Exempel Bygg AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas var för sig av ledamöterna",
            "signatories": [{"id": SIGNATORY, "name": PEOPLE[SIGNATORY]}],
        }
    },
    "roles": {},
}
ZONE = "participant.sml.demo.example"
# The demo's SMP and access points run on loopback over http: the endpoint policy refuses both unless told.
LOOPBACK = {"allow_http": True, "allow_networks": ["127.0.0.0/8"]}
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
    Letter("letter-7@finland", ALICE, FINNISH_AGENCY, "delivered-to-mailbox", "the Finnish agency, over AS4 2.0"),
    Letter(
        "letter-8@finland",
        BERTIL,
        AGENCY,
        "refused:sender-not-connected-here",
        "the Finnish access point claims the Norwegian agency, which it does not send for",
    ),
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
            # The demo's stores live in a temporary folder: safe through kill -9, not fsynced at every commit.
            "durability": "process-crash",
        }
        (folder / "server.yaml").write_text(json.dumps({**base, **settings}, indent=2))
        super().__init__(name, folder, port, ["serve", "--config", str(folder / "server.yaml")])

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        return _call(self.url + path, self.token, method, body)

    def status(self, message_id: str, direction: str = "out") -> dict[str, Any]:
        code, document = self.api("GET", f"/api/v1/messages/{message_id}?direction={direction}")
        return document if code == 200 else {}

    def kill_and_restart(self) -> None:
        """SIGKILL (no chance to finish anything), then start again on the same store and wait until it answers."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self._terminated = False
        self.start()
        self.wait_ready()

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


# Large letters (issue 14): content travels as attachments beside the sealed delivery, up to 3 GiB a message
# (the P-Mode's default is 100 MiB); every hop streams it.
LETTER_PAYLOAD = {"max_size": "3GiB", "decompression_limit": "3GiB"}
RSA_1_15 = {"signature_algorithm": "rsa-sha256", "token_reference": "bst-x509v3"}
EDDSA_2_0 = {"signature_algorithm": "ed25519", "key_agreement": "x25519", "token_reference": "bst-pkipath"}


def _leg(action: str, anchors: str, *, pin: bool = True, security: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "action": action,
        "security": {
            **(security or RSA_1_15),
            "trust": {"anchors": [anchors], "pin_partner": pin, "revocation": "off"},
        },
        "reception_awareness": {"retries": 2, "backoff_base": "500ms", "backoff_max": "2s", "jitter": 0.0},
    }


def _two_way(pmode_id: str, initiator: str, responder: str, anchors: str, *, v2: bool = False) -> dict[str, Any]:
    """Letters on leg 1, the operator's signed answer back on leg 2 (ref_to_message_id = the letter); AS4 1.15
    (RSA) unless ``v2`` (AS4 2.0: Ed25519 and X25519)."""
    security = EDDSA_2_0 if v2 else RSA_1_15
    return {
        "id": pmode_id,
        "network": "edelivery-2.0" if v2 else "edelivery-1.15",
        "mep": "two-way",
        "binding": "push-and-push",
        "initiator": {"party": initiator},
        "responder": {"party": responder},
        "legs": [
            {**_leg(ACTION, anchors, security=security), "payload": LETTER_PAYLOAD},
            _leg("Answer", anchors, security=security),
        ],
    }


def _portability(initiator: str, responder: str, anchors: str) -> dict[str, Any]:
    """Operator to operator: a mailbox's move (operators/moves.py), one way; large archives, stored as they are."""
    leg = _leg(ACTION, anchors)
    leg.update(
        service={"value": PORTABILITY_SERVICE},
        action=PORTABILITY_ACTION,
        compression=False,
        payload={"max_size": "4GiB"},
    )
    return {
        "id": f"{initiator}-to-{responder}",
        "network": "edelivery-1.15",
        "initiator": {"party": initiator},
        "responder": {"party": responder},
        "legs": [leg],
    }


def _party(pki: DevelopmentPki, name: str, endpoint: str, *, v2: bool = False) -> dict[str, Any]:
    keys = pki.parties[name]
    party = {
        "party_ids": [{"value": PARTY_IDS[name], "type": UNREGISTERED}],
        "signing_certificate": str((keys.ed25519 if v2 else keys.rsa).certificate_path),
        "endpoint": endpoint,
    }
    if v2:
        party["encryption_certificate"] = str(keys.x25519.certificate_path)
    return party


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
    registers: Child
    eid: EidIssuer
    folder: Path
    finland: AccessPointServer
    holders: dict[str, KeyPair] = field(default_factory=dict)
    mailing: tuple[str, ...] = ()  # the mass mailing's recipients

    @property
    def all(self) -> list[Child]:
        return [
            self.far,
            self.registers,
            self.smp,
            *self.operator_aps.values(),
            *self.operators.values(),
            self.sweden,
            self.nordic,
            self.finland,
        ]

    def holder(self, identity: str, name: str) -> KeyPair:
        """A holder's e-ID key pair from the federation's development e-ID CA (made once per identity)."""
        if identity not in self.holders:
            key, certificate = self.eid.holder(identity, name)
            self.holders[identity] = KeyPair(key, certificate, (self.eid.certificate,))
        return self.holders[identity]

    def signed(self, text: str, *identities: str) -> list[dict[str, Any]]:
        """The holders' e-ID signatures over ``text`` (made now), as FaR and the operators take them."""
        return [
            sign_assertion(text, self.holder(i, PEOPLE.get(i, i)), at=datetime.now(UTC)).to_json() for i in identities
        ]

    def sender_of(self, letter: Letter) -> AccessPointServer:
        """The access point a letter is sent from."""
        return self.finland if letter.message_id.endswith("@finland") else self.nordic

    @property
    def letters(self) -> tuple[Letter, ...]:
        """The demo's letters: the one abroad only with BDXL (dnsmasq) running."""
        return LETTERS if self.dns is None else (*LETTERS, ABROAD)


def mailing_recipients(count: int) -> tuple[str, ...]:
    """``count`` distinct personnummer with valid check digits, 900 born each day from 1 January 1950."""
    found: list[str] = []
    day = date(1950, 1, 1)
    while len(found) < count:
        found += ["19" + with_check_digit(f"{day:%y%m%d}{serial}") for serial in range(100, 1000)]
        day += timedelta(days=1)
    return tuple(found[:count])


def registered(index: int) -> bool:
    """Whether the mailing's recipient at ``index`` has a mailbox (one in a hundred has none)."""
    return index % 100 != 99


def mailbox_letters(federation: Federation) -> dict[str, int]:
    """Letters per recipient in both operators' mailboxes (their SQLite files, read as they are now)."""
    counts: dict[str, int] = {}
    for operator in federation.operators.values():
        with contextlib.closing(sqlite3.connect(operator.folder / "mailbox.db")) as db:
            rows = db.execute("SELECT recipient, count(*) FROM mail GROUP BY recipient").fetchall()
        for recipient, count in rows:
            counts[recipient] = counts.get(recipient, 0) + count
    return counts


@dataclass(frozen=True)
class MailboxCheck:
    """The mailing's letters as the mailboxes hold them: each reachable recipient should have exactly one."""

    reachable: int
    missing: tuple[str, ...]  # reachable, no letter
    twice: tuple[str, ...]  # more than one letter
    strays: tuple[str, ...]  # a letter for a recipient FaR refused

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.twice or self.strays)


def check_mailboxes(federation: Federation, *, timeout: float) -> MailboxCheck:
    """Wait (up to ``timeout`` s) until every reachable recipient of the mailing has a letter; what the mailboxes
    hold then."""
    reachable = [r for index, r in enumerate(federation.mailing) if registered(index)]
    deadline = time.monotonic() + timeout
    while True:
        counts = mailbox_letters(federation)
        if all(counts.get(r) for r in reachable) or time.monotonic() > deadline:
            break
        time.sleep(1)
    unreachable = (r for index, r in enumerate(federation.mailing) if not registered(index))
    return MailboxCheck(
        reachable=len(reachable),
        missing=tuple(r for r in reachable if not counts.get(r)),
        twice=tuple(r for r in reachable if counts.get(r, 0) > 1),
        strays=tuple(r for r in unreachable if counts.get(r)),
    )


def build(
    folder: Path,
    pki: DevelopmentPki,
    *,
    nordic_settings: dict[str, Any] | None = None,
    far_extra: str = "",
    operator_extra: str = "",
    portability: str = "",
    sweden_settings: dict[str, Any] | None = None,
    mailing: int = 0,
) -> Federation:
    """Write every process's settings (nothing runs yet); ``nordic_settings`` and ``sweden_settings`` add to the
    Nordic access point's and the router's, ``far_extra`` and ``operator_extra`` (TOML tables) are appended to
    FaR's and each operator's settings, ``portability`` (TOML keys) to each operator's ``[operator.portability]``;
    ``mailing`` recipients for a mass mailing get mailboxes at the two operators, every other one at each."""
    names = (
        "far", "registers", "smp", "nordic", "finland", "sweden", "op1", "op2", "mailbox-op1", "mailbox-op2",
    )  # fmt: skip
    ports = {name: free_port() for name in names}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    anchors = str(pki.ca.certificate_path)
    keys: dict[str, dict[str, Any]] = {name: {"signing": [key_files(pki.parties[name].rsa)]} for name in PARTY_IDS}
    for name in ("finland", "sweden"):  # AS4 2.0 between them: Ed25519 signatures, X25519 key agreement
        keys[name] = {
            "signing": [key_files(pki.parties[name].rsa), key_files(pki.parties[name].ed25519)],
            "decryption": [key_files(pki.parties[name].x25519)],
        }
    recipients = mailing_recipients(mailing)
    boxes = {
        "op1": tuple(r for i, r in enumerate(recipients) if registered(i) and i % 2 == 0),
        "op2": tuple(r for i, r in enumerate(recipients) if registered(i) and i % 2 == 1),
    }
    smp = _smp(folder / "smp", ports["smp"], pki)
    binary = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    dns = None if binary is None else Dnsmasq(binary, folder / "dns")

    eid = EidIssuer.create("Demo e-ID CA")
    eid_ca = folder / "keys" / "eid-ca.pem"
    eid_ca.write_bytes(eid.certificate.public_bytes(Encoding.PEM))
    (folder / "registers").mkdir()
    (folder / "registers" / "registers.json").write_text(json.dumps(REGISTERS, indent=2, ensure_ascii=False))
    registers = Child(
        "registers",
        folder / "registers",
        ports["registers"],
        [
            "far",
            "registers",
            "--data",
            str(folder / "registers" / "registers.json"),
            "--port",
            str(ports["registers"]),
            "--token",
            REGISTERS_TOKEN,
        ],
    )
    (folder / "far").mkdir()
    far_settings = folder / "far" / "far.toml"
    operator_tokens = "".join(
        f'[[far.tokens]]\nname = "{o.key}"\ntoken = "{OPERATOR_TOKENS[o.key]}"\n'
        f'scopes = ["read", "write:operator={o.orgnr}"]\n\n'
        for o in OPERATORS
    )
    far_settings.write_text(
        f'[far]\ndatabase = "sqlite+aiosqlite:///far.db"\nport = {ports["far"]}\n\n'
        f'[[far.tokens]]\nname = "demo"\ntoken = "{FAR_TOKEN}"\nscopes = ["read", "write"]\n\n{operator_tokens}'
        f'[far.eid]\nanchors = ["{eid_ca}"]\n\n[far.registers]\nurl = "{url["registers"]}"\n\n{far_extra}'
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
    operator_certificates = [str(pki.parties[o.key].rsa.certificate_path) for o in OPERATORS]
    finland = AccessPointServer(
        "finland",
        folder / "finland",
        ports["finland"],
        {
            "version": 1,
            "self": "finland",
            "parties": {
                "finland": _party(pki, "finland", url["finland"] + "/as4", v2=True),
                "sweden": _party(pki, "sweden", url["sweden"] + "/as4", v2=True),
            },
            "pmodes": [_two_way("fi-to-se", "finland", "sweden", anchors, v2=True)],
        },
        {"keys": keys["finland"], "end_to_end": {"operators": operator_certificates}},
    )
    sweden_parties = {
        "sweden": _party(pki, "sweden", url["sweden"] + "/as4"),
        "sweden-2.0": _party(pki, "sweden", url["sweden"] + "/as4", v2=True),
        "nordic": _party(pki, "nordic", url["nordic"] + "/as4"),
        "finland": _party(pki, "finland", url["finland"] + "/as4", v2=True),
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
            "self": ["sweden", "sweden-2.0"],
            "parties": sweden_parties,
            "pmodes": [
                _two_way("nordic-to-se", "nordic", "sweden", anchors),
                _two_way("fi-to-se", "finland", "sweden-2.0", anchors, v2=True),
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
            "send": {"workers": 8, "timeout": "10s", "lease": "30s"},  # the mass mailing's letters
            "routing": {"far": url["far"], "token": FAR_TOKEN, "pmodes": ["nordic-to-se", "fi-to-se"], "timeout": "3s"},
            **(
                {}
                if dns is None
                else {"discovery": {"zone": ZONE, "dns": f"127.0.0.1:{dns.port}", "smp_trust": anchors, **LOOPBACK}}
            ),
            **(sweden_settings or {}),
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
                    **{o.key: _party(pki, o.key, url[o.key] + "/as4") for o in OPERATORS},
                    "sweden": _party(pki, "sweden", url["sweden"] + "/as4"),
                },
                "pmodes": [
                    _two_way(f"se-to-{operator.key}", "sweden", operator.key, anchors),
                    *(_portability(a.key, b.key, anchors) for a in OPERATORS for b in OPERATORS if a != b),
                ],
            },
            {"keys": keys[operator.key], "webhooks": [hook]},
        )
        operator_aps[operator.key] = ap
        issued = pki.parties[operator.key].rsa  # the operator signs its answers with its access point's key
        mailbox_folder = folder / f"mailbox-{operator.key}"
        mailbox_folder.mkdir()
        settings = mailbox_folder / "operator.toml"
        mailboxes = ", ".join(f'"{m}"' for m in (*operator.mailboxes, *boxes[operator.key]))
        peers = "".join(
            f'[[operator.peers]]\nid = "16{other.orgnr}"\npmode = "{operator.key}-to-{other.key}"\n'
            f'certificate = "{pki.parties[other.key].rsa.certificate_path}"\n\n'
            for other in OPERATORS
            if other != operator
        )
        settings.write_text(
            f'[operator]\nid = "16{operator.orgnr}"\nname = "{operator.name}"\n'
            f"port = {ports['mailbox-' + operator.key]}\n"
            f'database = "sqlite+aiosqlite:///mailbox.db"\nmailboxes = [{mailboxes}]\nstorage = "mail"\n'
            f'keys = {{ key = "{issued.key_path}", certificate = "{issued.certificate_path}" }}\n\n'
            f'[operator.access_point]\nurl = "{ap.url}"\ntoken = "{ap.token}"\n'
            f'webhook_secret = "{WEBHOOK_SECRET}"\npoll_interval = "1s"\n\n'
            f'[operator.trust]\nintermediaries = ["{pki.parties["sweden"].rsa.certificate_path}"]\n'
            f'sender_anchors = ["{anchors}"]\n\n'
            f'[operator.far]\nurl = "{url["far"]}"\ntoken = "{OPERATOR_TOKENS[operator.key]}"\n\n'
            f'[operator.eid]\nanchors = ["{eid_ca}"]\n\n[operator.portability]\nretry = "1s"\n{portability}\n\n'
            f'[[operator.tokens]]\ntoken = "{OPERATOR_ADMIN_TOKEN}"\n\n{peers}{operator_extra}'
        )
        operators[operator.key] = Child(
            f"mailbox-{operator.key}",
            mailbox_folder,
            ports["mailbox-" + operator.key],
            ["operator", "serve", "--config", str(settings)],
        )
    return Federation(
        far, smp, dns, nordic, sweden, operator_aps, operators, registers, eid, folder, finland, mailing=recipients
    )  # fmt: skip


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
    load_far(federation, pki)
    publish_abroad(federation, pki)


def stop(federation: Federation) -> dict[str, int | None]:
    """Stop every process, senders first (SIGTERM to all, then wait); their exit codes."""
    for server in reversed(federation.all):
        server.terminate()
    codes = {server.name: server.stop() for server in reversed(federation.all)}
    if federation.dns is not None:
        codes["dnsmasq"] = federation.dns.stop()
    return codes


def senders(pki: DevelopmentPki) -> list[dict[str, Any]]:
    """The sender register: each agency with the access points that may send for it (PartyId and certificate)."""

    def ap(name: str, *, v2: bool = False) -> dict[str, str]:
        keys = pki.parties[name]
        issued = keys.ed25519 if v2 else keys.rsa
        return {"party_id": PARTY_IDS[name], "certificate_sha256": certificate_sha256(issued.certificate)}

    return [
        {"id": AGENCY, "name": "Skatteetaten", "networks": ["cross-border"], "access_points": [ap("nordic")]},
        {"id": REFUSED_AGENCY, "name": "Reklambyrån AB", "access_points": [ap("nordic")]},
        {
            "id": FINNISH_AGENCY, "name": "Verohallinto", "networks": ["cross-border"],
            "access_points": [ap("finland", v2=True)], "support": {"text": "Soita meille", "url": "https://vero.fi"},
        },
        # Skatteverket sends its mass mailing through the router itself, and its two-way letters (demo part 3)
        # through the Nordic access point: connected through both.
        {"id": SWEDISH_AGENCY, "name": "Skatteverket", "access_points": [ap("sweden"), ap("nordic")]},
    ]  # fmt: skip


def load_far(federation: Federation, pki: DevelopmentPki) -> None:
    """The two operators (REST), the recipients (``accesspoint far import``, CSV, with the mailing's) and the
    senders (``accesspoint far senders import``, JSON lines)."""
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
    with csv.open("w") as out:
        out.write(
            "recipient,status,operator,refused_senders\n"
            f"{ALICE},secure,{OPERATORS[0].orgnr},\n"
            f"{BERTIL},secure,{OPERATORS[1].orgnr},{REFUSED_AGENCY}\n"
            f"{CECILIA},secure,{OPERATORS[1].orgnr},\n"
        )
        for index, recipient in enumerate(federation.mailing):
            if registered(index):
                out.write(f"{recipient},secure,{OPERATORS[index % 2].orgnr},\n")
    register = federation.far.folder / "senders.jsonl"
    register.write_text("".join(json.dumps(sender) + "\n" for sender in senders(pki)))
    config = str(federation.far.argv[-1])
    # The commands run through the CLI's main here: a fresh interpreter for each cost a second or more of CPU.
    from accesspoint.cli import main

    for command in (["far", "import", str(csv)], ["far", "senders", "import", str(register)]):
        printed, logged = io.StringIO(), io.StringIO()
        handlers = list(logging.getLogger().handlers)  # main's logging.basicConfig must not keep the captured stderr
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(logged):
            code = main([*command, "--config", config])
        logging.getLogger().handlers[:] = handlers
        if code != 0:
            reason = f"{printed.getvalue().strip()} {logged.getvalue().strip()}"
            raise DemoFailure(f"{' '.join(command[:-1])} failed: {reason}")


def letter_document(letter: Letter) -> bytes:
    header = Sbdh(
        sender=(Partner(letter.sender),),
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
        "pmode": "fi-to-se" if letter.message_id.endswith("@finland") else "nordic-to-se",
        "message_id": letter.message_id,
        "properties": {
            "originalSender": {"value": letter.sender, "type": "iso6523-actorid-upis"},
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
    """Submit a letter at its sender's access point (the Nordic one, or the Finnish one for @finland)."""
    point = federation.sender_of(letter)
    code, answer = point.api("POST", "/api/v1/messages", submission(letter))
    if code != 202:
        raise DemoFailure(f"{point.name} refused {letter.message_id}: HTTP {code} {answer}")


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


def run(
    folder: Path,
    number: int,
    *,
    made: tuple[Federation, DevelopmentPki] | None = None,
    begin: Callable[[], None] | None = None,
    end: Callable[[], dict[str, int | None]] | None = None,
    more: Callable[[int], int] | None = None,
) -> int:
    """Part two of the demo, its sections numbered from ``number``; the next free number. A caller that adds to
    the federation (``demo_twoway``) passes it ``made``, how to ``begin`` and ``end`` it, and ``more`` sections
    (given their first number, returning the next) shown before it stops."""
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
    if made is None:
        pki = generate_keys(folder / "keys", PARTY_IDS, days=1)
        made = (build(folder, pki, mailing=MAILING), pki)
    federation, pki = made
    after = number + 6
    try:
        (begin or partial(start, federation, pki))()
        say()
        say(f"{number}. The federation, each its own process (keys from one development CA):")
        roles = {
            "far": "FaR, the routing register (accesspoint far serve)",
            "registers": "population and business registers FaR asks about holders (accesspoint far registers)",
            "smp": "an SMP (accesspoint smp serve) publishing where a participant abroad receives",
            "nordic": "the Nordic sender's access point (AP-NO-0100)",
            "finland": "a Finnish agency's access point (AP-FI-0001), eDelivery AS4 2.0",
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
            f"sender {REFUSED_AGENCY}); {CECILIA} at {OPERATORS[1].name}; {NOBODY} is not registered; and "
            f"{len(federation.mailing):,} recipients of a mass mailing, every other one at each operator, one in a "
            "hundred without a mailbox. Its sender register (accesspoint far senders import): "
            + "; ".join(
                f"{s['id']} ({s['name']}) through {', '.join(ap['party_id'] for ap in s['access_points'])}"
                for s in senders(pki)
            )
            + "."
        )
        say()
        say(
            f"{number + 2}. The Norwegian agency {AGENCY} and the Finnish agency {FINNISH_AGENCY} send "
            f"{len(federation.letters)} letters (SBD documents, on two-way P-Modes with the Swedish access point: "
            "AS4 1.15 from Norway, AS4 2.0 from Finland):"
        )
        for letter in federation.letters:
            send(federation, letter)
            say(f"   {letter.message_id} to {letter.recipient} from {letter.sender}: {letter.why}", indent=6)
        say()
        say(f"{number + 3}. Where each letter went and the signed receipts that came back:")
        failures = [problem for letter in federation.letters if (problem := _outcome(federation, letter, pki))]
        if failures:
            raise DemoFailure("; ".join(failures))
        say()
        move_mailbox(federation, number + 4)
        say()
        company_mailbox(federation, number + 5)
        if federation.mailing:
            say()
            mass_mailing(federation, after)
            after += 1
        if more is not None:
            say()
            after = more(after)
    except Exception:
        for server in federation.all:
            sys.stderr.write(f"{server.name}'s log (last lines):\n{server.log_tail()}\n")
        raise
    finally:
        codes = (end or partial(stop, federation))()
    if any(code != 0 for code in codes.values()):
        raise DemoFailure(f"a process of the federation did not stop cleanly: exit codes {codes}")
    say()
    say(
        f"{after}. All {len(codes)} processes of the federation stopped cleanly (exit code 0) after "
        f"{time.monotonic() - started:.1f} s"
    )
    return after + 1


HOLDER_TEXT = "Jag vill ha min digitala brevlåda här och godkänner villkoren."


def _operator_api(
    federation: Federation, key: str, method: str, path: str, body: Any = None, token: str = OPERATOR_ADMIN_TOKEN
) -> tuple[int, Any]:
    return _call(federation.operators[key].url + path, token, method, body)


def _letters(federation: Federation, key: str, holder: str) -> list[dict[str, Any]]:
    code, body = _operator_api(federation, key, "GET", f"/api/v1/mailboxes/{holder}/letters")
    return list(body["letters"]) if code == 200 else []


def _poll(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.25)
    raise DemoFailure(f"{what}: not within {timeout:.0f} s")


def move_mailbox(federation: Federation, number: int) -> None:
    """Alice moves her mailbox from Brevlådan Ett to Brevlådan Två and her mail goes with her."""
    ett, tva = OPERATORS
    before = {x["origin"]: sorted(p["sha256"] for p in x["parts"]) for x in _letters(federation, "op1", ALICE)}
    say(
        f"{number}. Alice ({ALICE}) moves her mailbox from {ett.name} to {tva.name}, taking her mail along "
        f"(portability). At {ett.name} she has {len(before)} letter(s): "
        + ", ".join(f"{origin} (SHA-256 {digests[0][:12]}…)" for origin, digests in sorted(before.items())),
        indent=6,
    )
    body = {"holder": ALICE, "agreement_text": HOLDER_TEXT, "signatures": federation.signed(HOLDER_TEXT, ALICE)}
    code, opened = _operator_api(federation, "op2", "POST", "/api/v1/holders", body)
    if code != 202 or opened.get("state") != "moving-in":
        raise DemoFailure(f"{tva.name} did not start the move: HTTP {code} {opened}")
    switch = opened["switch"]
    say(
        f"   She signs the agreement with her e-ID at {tva.name}; FaR records the switch {switch['id'][:8]}… as "
        f"{switch['state']} and {tva.name} asks {ett.name} over AS4 (SwitchRequest, signed).",
        indent=6,
    )

    def done() -> dict[str, Any] | None:
        found = _operator_api(federation, "op1", "GET", f"/api/v1/holders/{ALICE}")[1].get("move") or {}
        return found if found.get("state") == "done" and not _letters(federation, "op1", ALICE) else None

    move = _poll("the move", done)
    code, far_switch = _call(f"{federation.far.url}/api/v1/switches/{ALICE}?id={switch['id']}", FAR_TOKEN)
    say(
        f"   {ett.name} checks the request against FaR and completes the switch at {far_switch['switched_at']}; "
        f"from then on the router sends Alice's letters to {tva.name}.",
        indent=6,
    )
    for batch in move["batches"]:
        say(
            f"   transfer {batch['seq']}: {batch['letters']} letter(s) as a signed, streamed archive over AS4; "
            f"{tva.name} checked the signature, every file's SHA-256, every seal and signed answer, stored them "
            f"and answered with a signed receipt; only then {ett.name} deleted its copies ({batch['state']}).",
            indent=6,
        )
    after = {x["origin"]: sorted(p["sha256"] for p in x["parts"]) for x in _letters(federation, "op2", ALICE)}
    if any(after.get(origin) != digests for origin, digests in before.items()):
        raise DemoFailure(f"the letters at {tva.name} differ from those that left {ett.name}: {before} {after}")
    letter = Letter("letter-7@nordic", ALICE, AGENCY, "delivered-to-mailbox", "after the move")
    send(federation, letter)
    answer = federation.nordic.wait(letter.message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")
    operator = answer["end_to_end"]["operator"]
    if operator["id"] != f"16{tva.orgnr}":
        raise DemoFailure(f"{letter.message_id} went to {operator['id']}, not to {tva.name}")
    say(
        f"   OK every letter is at {tva.name} with the same SHA-256, {ett.name} holds none, FaR names {tva.name}, "
        f"and {letter.message_id} to Alice is delivered there (signed by {operator['subject']}).",
        indent=6,
    )


def company_mailbox(federation: Federation, number: int) -> None:
    """Exempel Bygg AB's mailbox at Brevlådan Två, opened and read by its signatory."""
    tva = OPERATORS[1]
    company = REGISTERS["companies"][COMPANY_ORGNR]
    say(
        f'{number}. {company["name"]} ({COMPANY}): the business register says "{company["signatory_rule"]}" and '
        f"names {PEOPLE[SIGNATORY]} ({SIGNATORY}).",
        indent=6,
    )
    body = {"holder": COMPANY, "agreement_text": HOLDER_TEXT, "signatures": federation.signed(HOLDER_TEXT, SIGNATORY)}
    code, opened = _operator_api(federation, "op2", "POST", "/api/v1/holders", body)
    if code != 201:
        raise DemoFailure(f"the company mailbox was not opened: HTTP {code} {opened}")
    say(
        f"   She signs for the company; FaR checks her against the signatory rule (Complete) and registers the "
        f"mailbox at {tva.name}.",
        indent=6,
    )
    letter = Letter("letter-8@nordic", COMPANY, AGENCY, "delivered-to-mailbox", "a company")
    send(federation, letter)
    federation.nordic.wait(letter.message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")
    text = f"Inloggning hos {tva.name} (16{tva.orgnr})"
    code, session = _operator_api(
        federation,
        "op2",
        "POST",
        "/api/v1/sessions",
        {"agreement_text": text, "signatures": federation.signed(text, SIGNATORY)},
    )
    if code != 201:
        raise DemoFailure(f"the signatory could not log in: HTTP {code} {session}")
    code, listed = _operator_api(
        federation, "op2", "GET", f"/api/v1/mailboxes/{COMPANY}/messages", token=session["token"]
    )
    if code != 200 or not listed["messages"]:
        raise DemoFailure(f"the signatory could not read the company's mailbox: HTTP {code} {listed}")
    audit = _operator_api(federation, "op2", "GET", f"/api/v1/holders/{COMPANY}/audit", token=session["token"])[1]
    read = next(a for a in audit["audit"] if a["action"] == "read")
    say(
        f"   {letter.message_id} arrives; she logs in with her e-ID and reads it ({listed['messages'][0]['subject']}, "
        f"from {listed['messages'][0]['sender']}); {tva.name}'s audit trail: {read['action']} by {read['actor']} as "
        f"{read['detail']['grant']} at {read['at']}.",
        indent=6,
    )


MAILING_ID = "demo-mailing"
MAILING_LETTER = '<Letter xmlns="urn:example:letter">Ditt årsbesked för 2026 finns här.</Letter>'.encode()


def post_mailing(point: AccessPointServer, metadata: dict[str, Any], rows: Any) -> tuple[int, Any]:
    """POST a mailing as JSON lines (the mailing, then one recipient a line) to an access point's API."""
    body = "".join(json.dumps(line) + "\n" for line in (metadata, *rows)).encode()
    request = urllib.request.Request(point.url + "/api/v1/mailings", data=body, method="POST")  # noqa: S310
    request.add_header("Authorization", f"Bearer {point.token}")
    request.add_header("Content-Type", "application/x-ndjson")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (loopback)
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def mass_mailing(federation: Federation, number: int) -> None:
    """The Swedish agency's mailing through the router's API: progress until every letter is in a mailbox."""
    sweden, recipients = federation.sweden, federation.mailing
    mailbox_count = sum(1 for index in range(len(recipients)) if registered(index))
    say(
        f"{number}. The Swedish agency {SWEDISH_AGENCY} (connected through the router itself) posts a mass mailing "
        f"to {len(recipients):,} recipients to the router's API as JSON lines (POST /api/v1/mailings):"
    )
    metadata = {
        "id": MAILING_ID,
        "sender": SWEDISH_AGENCY,
        "action": ACTION,
        "rate": 500,
        "reference": "Årsbesked 2026",
        "payloads": [
            {"content_id": "letter@skatteverket", "mime_type": "application/xml",
             "data": base64.b64encode(MAILING_LETTER).decode()}
        ],
    }  # fmt: skip
    started = time.monotonic()
    code, answer = post_mailing(sweden, metadata, recipients)
    if code != 202:
        raise DemoFailure(f"the router refused the mailing: HTTP {code} {answer}")
    say(f"   accepted {answer['accepted']:,} recipients ({answer['invalid']} invalid rows) in "
        f"{time.monotonic() - started:.1f} s; FaR is asked in batches, letters go out at 500 a second at most",
        indent=6)  # fmt: skip
    deadline = time.monotonic() + max(120.0, len(recipients) / 10)
    shown = 0.0
    progress: dict[str, Any] = {}
    while time.monotonic() < deadline:
        _code, progress = sweden.api("GET", f"/api/v1/mailings/{MAILING_ID}")
        answered = progress.get("end_to_end", {}).get("delivered-to-mailbox", 0)
        done = progress.get("state") == "completed" and answered >= mailbox_count
        if done or time.monotonic() - shown >= 5:
            shown = time.monotonic()
            rows, letters = progress.get("recipients", {}), progress.get("letters", {})
            say(
                f"   {time.monotonic() - started:6.1f} s  {progress.get('state')}: checked in FaR "
                f"{len(recipients) - rows.get('pending', 0):,}, refused {rows.get('refused', 0):,}, queued "
                f"{rows.get('queued', 0):,}; letters delivered to the operators {letters.get('delivered', 0):,}, "
                f"failed {letters.get('failed', 0):,}; in mailboxes (operators' signed answers) {answered:,}",
                indent=16,
            )
        if done:
            break
        time.sleep(0.5)
    else:
        raise DemoFailure(f"the mailing did not finish in time: {progress}")
    elapsed = time.monotonic() - started
    rows, letters, far = progress["recipients"], progress["letters"], progress["far"]
    expected = {"queued": mailbox_count, "refused": len(recipients) - mailbox_count}
    if {k: rows.get(k, 0) for k in expected} != expected or letters != {"delivered": mailbox_count}:
        raise DemoFailure(f"the mailing's counts are off: {progress}")
    refused = sweden.api("GET", f"/api/v1/mailings/{MAILING_ID}/recipients?state=refused&limit=1")[1]["recipients"]
    say(
        f"   OK the mailing completed: {mailbox_count:,} letters in mailboxes ({mailbox_count / elapsed:.0f} letters/s "
        f"end to end), {expected['refused']:,} refused with FaR's reason for printing on paper (e.g. "
        f"{refused[0]['recipient']}: {refused[0]['reason']}), FaR checked "
        f"{far['checked']:,} recipients at {far['recipients_per_second'] or 0:,.0f} a second; counts add up to "
        f"{len(recipients):,}",
        indent=6,
    )


def _outcome(federation: Federation, letter: Letter, pki: DevelopmentPki) -> str | None:
    """Print what became of one letter; a problem when it is not what the demo expects."""
    nordic, sweden = federation.sender_of(letter), federation.sweden
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
