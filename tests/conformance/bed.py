"""The local test bed: two access points (C2, C3), each behind a conformance test service, and an interceptor.

As the EC test bed (Minder with its AS4 interceptor) does it, and started once for the whole suite:

- **C2** and **C3** are real ``accesspoint serve`` processes, each with the test P-Modes of AS4 1.15 and 2.0
  (``accesspoint.conformance.pmodes``; the profile is told apart by the PartyIds, ``c2-1.15`` or ``c3-2.0``).
- Each has a real ``accesspoint conformance serve`` process in front of it, taking Submit and sending Deliver
  and Notify: the tests are the **test driver** (C1/C4), with their own endpoint for Deliver and Notify.
- Every AS4 message between C2 and C3 goes through the **interceptor**: the P-Modes name it, not the other
  instance. It records each exchange and lets a test pass, drop (an empty answer, so the sender retries),
  delay or alter a message. It holds both instances' keys, so it can decrypt, tamper and re-secure with the
  project's own security layer (``resecure``).

The interceptor and the driver run in one thread with its own event loop; tests are plain functions that wait
for what they expect with timeouts, never sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import gzip
import json
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from accesspoint.conformance import protocol
from accesspoint.conformance.pmodes import Corner, Retry, conformance_pmodes, pmode_file
from accesspoint.conformance.protocol import BackendMessage, BusinessMessage, Notification
from accesspoint.core.envelope import build_envelope, parse_envelope, serialize
from accesspoint.core.message import Attachment, ReceivedMessage, pack_message, read_message
from accesspoint.core.model import PartInfo, PartyId, Property, Service, SignalMessage, UserMessage
from accesspoint.demo_common import Child, DemoFailure, free_port
from accesspoint.keys_cli import Issued, generate_keys
from accesspoint.security.encryption import encrypt_attachments
from accesspoint.security.inbound import payload_sources
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.security.policy import SecurityPolicy
from accesspoint.security.signing import AttachmentSource, sign_envelope
from accesspoint.testing.dnsserver import DnsServer, dnsmasq_binary
from accesspoint.testing.pki import issue
from accesspoint.testing.smp import ZONE, pem, publish
from accesspoint.testing.smp import pki as smp_pki
from accesspoint.testing.smp import settings as smp_settings
from pmode import PModeSet, load_pmodes
from smp.identifiers import NO_PROCESS, Identifier, peppol_naptr_name
from smp.model import EndpointInfo, ProcessInfo, ServiceMetadata, TransportProfile
from smp.server import serve

T = TypeVar("T")
PROFILES = ("1.15", "2.0")
TOKEN = "conformance-api-token-0123456789"
WEBHOOK_SECRET = "conformance-webhook-secret-0123"
DRIVER_ID = "minder"
WAIT = 20.0  # seconds a test waits for what it expects
# ONEWAY_RETRY: three retries, half a second apart at first (AS4_CP_TA09, TA10, TA15 wait for them).
RETRY = Retry(retries=3, interval="500ms", maximum="1s")


def ipv6_loopback() -> bool:
    """True when this machine can listen on ::1."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def new_message_id(label: str) -> str:
    """A fresh RFC 2822 msg-id naming the test that sent it."""
    return f"{uuid.uuid4()}@{label.replace('_', '-')}.conformance"


def _listening(host: str, family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


# --------------------------------------------------------------------------------------------- exchanges


@dataclass(frozen=True, slots=True)
class Captured:
    """An HTTP body on the wire with its Content-Type."""

    content_type: str
    body: bytes

    def read(self) -> ReceivedMessage:
        """The message as the project's core reads it."""
        return read_message(self.content_type, self.body)

    @property
    def user_message(self) -> UserMessage | None:
        header = self.read().parsed.header
        return header if isinstance(header, UserMessage) else None

    @property
    def signal(self) -> SignalMessage | None:
        header = self.read().parsed.header
        return header if isinstance(header, SignalMessage) else None


@dataclass(frozen=True, slots=True)
class Forward:
    """Pass the message on (``replace``: another body and Content-Type), after ``delay`` seconds."""

    replace: Captured | None = None
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class Drop:
    """Do not pass the message on; answer the sender with an empty HTTP 200 (so it waits, then retries)."""


Verdict = Forward | Drop
Hook = Callable[["Capture"], Verdict | None]


@dataclass(frozen=True, slots=True)
class Capture:
    """A request as the interceptor caught it: for whom, from which address, and the message."""

    target: str  # "c3" (sent by C2) or "c2" (a reply sent by C3)
    remote: str
    request: Captured
    at: float = field(default_factory=time.monotonic)  # when it came in

    @property
    def message_id(self) -> str | None:
        """The MessageId of the user message (None for a signal or an unreadable body)."""
        try:
            user = self.request.user_message
        except Exception:
            return None
        return None if user is None else user.message_id


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request through the interceptor: as sent, as passed on (None when dropped), and the answer."""

    capture: Capture
    forwarded: Captured | None
    status: int
    answer: Captured
    at: float = field(default_factory=time.monotonic)  # when the answer went back


# --------------------------------------------------------------------------------------------- the harness


class Harness:
    """The interceptor and the test driver, served from one thread with its own event loop."""

    def __init__(self, sockets: dict[str, list[socket.socket]], targets: dict[str, str]) -> None:
        self._sockets = sockets
        self.targets = targets  # "c2"/"c3" -> the instance's /as4 URL
        self.hook: Hook | None = None
        self.exchanges: list[Exchange] = []
        self.received: list[tuple[BackendMessage, float]] = []  # Deliver and Notify, as the driver got them
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conformance-harness", daemon=True)
        self._runners: list[web.AppRunner] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        self._session: aiohttp.ClientSession | None = None

    def start(self) -> None:
        """Serve the interceptor and the driver on the sockets bound before the processes started."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        interceptor = web.Application(client_max_size=64 * 1024 * 1024)
        interceptor.router.add_post("/{target}/as4", self._intercept)
        driver = web.Application(client_max_size=64 * 1024 * 1024)
        driver.router.add_post("/as4", self._driver)
        for app, name in ((interceptor, "interceptor"), (driver, "driver")):
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            for sock in self._sockets[name]:
                await web.SockSite(runner, sock).start()
            self._runners.append(runner)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the harness's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=60)

    def keep(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Call ``cleanup`` on the harness's loop when it stops (a server started there)."""
        self._cleanups.append(cleanup)

    def stop(self) -> None:
        """Stop serving and end the thread."""

        async def stop() -> list[BaseException]:
            steps = [*reversed(self._cleanups), *(runner.cleanup for runner in self._runners)]
            if self._session is not None:
                steps.append(self._session.close)
            failed = []
            for step in steps:  # every one, even after one failed
                try:
                    await step()
                except Exception as exc:
                    failed.append(exc)
            return failed

        try:
            failed = asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
        if failed:
            raise failed[0]

    # -- the interceptor

    async def _intercept(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        body = Captured(request.headers.get("Content-Type", ""), await request.read())
        capture = Capture(target, request.remote or "", body)
        hook = self.hook
        verdict = (hook(capture) if hook is not None else None) or Forward()
        if isinstance(verdict, Drop):
            answer = Captured("", b"")
            self._record(Exchange(capture, None, 200, answer))
            return web.Response(status=200)
        if verdict.delay:
            await asyncio.sleep(verdict.delay)
        forwarded = verdict.replace or capture.request
        assert self._session is not None
        try:
            async with self._session.post(
                self.targets[target], data=forwarded.body, headers={"Content-Type": forwarded.content_type}
            ) as response:
                answer = Captured(response.headers.get("Content-Type", ""), await response.read())
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            answer, status = Captured("", b""), 502
        self._record(Exchange(capture, forwarded, status, answer))
        headers = {"Content-Type": answer.content_type} if answer.content_type else {}
        return web.Response(status=status, body=answer.body, headers=headers)

    def _record(self, exchange: Exchange) -> None:
        with self._changed:
            self.exchanges.append(exchange)
            self._changed.notify_all()

    # -- the test driver (C1 and C4)

    async def _driver(self, request: web.Request) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        body = await request.read()
        message = protocol.read_backend_message(content_type, body)
        with self._changed:
            self.received.append((message, time.monotonic()))
            self._changed.notify_all()
        now = datetime.now(UTC)
        reply = protocol.receipt(message.user_message, message_id=new_message_id("driver-receipt"), now=now)
        return web.Response(body=reply, headers={"Content-Type": protocol.soap_content_type()})

    # -- waiting

    def wait_for(self, find: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
        """Wait until ``find`` returns something (checked whenever an exchange or a backend message arrives)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
                self._changed.wait(left)


# ------------------------------------------------------------------------------------------- the profiles


@dataclass(frozen=True, slots=True)
class ProfileKeys:
    """One profile's view of the bed: PartyIds, the keys the interceptor holds, the P-Modes each side loaded."""

    name: str  # "1.15" or "2.0"
    c2_party: str
    c3_party: str
    c2_signing: KeyPair  # what C2 signs with (the interceptor re-signs with it)
    c3_signing: KeyPair
    c3_decryption: KeyPair  # what C2 encrypts for (RSA for 1.15, X25519 for 2.0)
    c2_decryption: KeyPair
    c2_pmodes: PModeSet
    c3_pmodes: PModeSet

    def pmode_id(self, name: str) -> str:
        """The id of a test P-Mode under this profile (``SIMPLE_ONEWAY-2.0``)."""
        return f"{name}-{self.name}"

    def policy(self, name: str, *, receiver: str = "c3") -> SecurityPolicy:
        """The security policy the receiver applies to the P-Mode's message (its leg 1, or leg 2 at C2)."""
        pmodes = self.c3_pmodes if receiver == "c3" else self.c2_pmodes
        pmode = pmodes.get(self.pmode_id(name))
        assert pmode is not None, name
        return pmode.legs[0 if receiver == "c3" else 1].security

    def recipient(self, target: str) -> tuple[KeyPair, KeyPair]:
        """(the sender's signing keys, the receiver's decryption keys) of a message for ``target``."""
        return (self.c2_signing, self.c3_decryption) if target == "c3" else (self.c3_signing, self.c2_decryption)


@dataclass(frozen=True, slots=True)
class Part:
    """An attachment in clear as the interceptor hands it to a test: Content-ID, MIME type, bytes."""

    content_id: str
    content_type: str
    data: bytes


def opened_parts(profile: ProfileKeys, capture: Capture, pmode: str) -> tuple[UserMessage, list[Part]]:
    """Decrypt a captured message with the receiver's key: its header and each part (still compressed)."""
    received = capture.request.read()
    user = received.parsed.header
    assert isinstance(user, UserMessage)
    _signer, decryption = profile.recipient(capture.target)
    policy = profile.policy(pmode, receiver=capture.target)
    sources, _, _ = payload_sources(received, (decryption,), policy)
    parts = []
    for info in user.payload_info:
        assert info.content_id is not None
        source = sources[info.content_id]
        data = b"".join(source.open())
        kind = next(a.content_type for a in received.attachments if a.content_id == info.content_id)
        parts.append(Part(info.content_id, kind, data))
    return user, parts


def resecure(
    profile: ProfileKeys,
    target: str,
    pmode: str,
    user: UserMessage,
    parts: Sequence[Part],
    *,
    signed_parts: Sequence[Part] | None = None,
    after_encryption: Callable[[Part], Part] | None = None,
    signer: KeyPair | None = None,
) -> Captured:
    """The message signed with the sender's key and encrypted for the receiver again, as the bed re-secures.

    ``parts`` are the attachments as they go on the wire before encryption (already compressed where their
    PartInfo says so). ``signed_parts``: what the signature covers instead (sign-then-compress, TA35);
    ``after_encryption``: a change to each ciphertext part (encrypt-then-compress, TA37); ``signer``: another
    certificate than the sender's (the dynamic receiver's trust decisions).
    """
    sender, decryption = profile.recipient(target)
    signer = signer or sender
    policy = profile.policy(pmode, receiver=target)
    envelope = build_envelope(user)

    def source(part: Part) -> AttachmentSource:
        return AttachmentSource(part.content_id, part.content_type, lambda data=part.data: [data])

    new_id = lambda: f"_{uuid.uuid4().hex}"  # noqa: E731
    if policy.sign:
        sign_envelope(envelope, [source(p) for p in signed_parts or parts], signer, policy, new_id=new_id)
    wire: Sequence[AttachmentSource] = [source(p) for p in parts]
    if policy.encrypt:
        wire = encrypt_attachments(envelope, wire, decryption.certificate, policy, new_id=new_id)
    attachments = []
    for item in wire:
        part = Part(item.content_id, item.content_type, b"".join(item.open()))
        if after_encryption is not None:
            part = after_encryption(part)
        attachments.append(Attachment(part.content_id, part.content_type, [part.data]))
    packed = pack_message(serialize(envelope), attachments)
    return Captured(packed.content_type, packed.to_bytes())


def with_part_infos(user: UserMessage, change: Callable[[PartInfo], PartInfo]) -> UserMessage:
    """The header with each PartInfo changed."""
    return dataclasses.replace(user, payload_info=tuple(change(info) for info in user.payload_info))


def gunzip(data: bytes) -> bytes:
    """A gzip member's content."""
    return gzip.decompress(data)


# ------------------------------------------------------------------------------------------------- the bed


@dataclass
class Bed:
    """Everything the suite talks to, started once."""

    folder: Path
    harness: Harness
    processes: dict[str, Child]
    adapters: dict[str, str]  # "c2"/"c3" -> the conformance service's Submit URL
    profiles: dict[str, ProfileKeys]
    ca: KeyPair  # the development CA: the interceptor issues certificates of its own with it (dynamic receiver)
    keys: dict[str, Any]  # the development PKI's Issued files by party name
    ipv6: bool
    discovery: str | None  # why dynamic sending cannot be tried here (no dnsmasq), else None
    dns: DnsServer | None = None

    # -- acting as the test driver

    def submit(
        self,
        profile: ProfileKeys,
        message: BusinessMessage,
        *,
        via: str = "c2",
        label: str = "submit",
    ) -> SignalMessage:
        """Send a Submit to a conformance service (C2's, or C3's for a reply) and read its answer."""
        sut = protocol.party(f"sut-{via}", protocol.SUT_ROLE)
        driver = protocol.party(DRIVER_ID, protocol.TEST_DRIVER_ROLE)
        packed = protocol.submit(
            message,
            driver=driver,
            sut=sut,
            message_id=new_message_id(f"{label}-submission"),
            conversation_id=message.conversation_id or "1",
            now=datetime.now(UTC),
        )
        request = urllib.request.Request(  # noqa: S310 (http on loopback)
            self.adapters[via], data=packed.to_bytes(), headers={"Content-Type": packed.content_type}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            answer = parse_envelope(response.read()).header
        assert isinstance(answer, SignalMessage)
        return answer

    def business(
        self,
        profile: ProfileKeys,
        pmode: str,
        label: str,
        *,
        to: str = "c3",
        to_party: PartyId | None = None,
        payloads: Sequence[protocol.BackendPayload] | None = None,
        **fields: Any,
    ) -> BusinessMessage:
        """A Submit's message for one of the test P-Modes, with a fresh MessageId and the bed's usual payload,
        for C3 (``to="c2"``: a reply for C2; ``to_party``: whom the Submit names, a dynamic sender's participant)."""
        service, action = SERVICES[pmode]
        party = profile.c3_party if to == "c3" else profile.c2_party
        defaults: dict[str, Any] = {
            "message_id": new_message_id(label),
            "conversation_id": f"conversation-{uuid.uuid4()}",
            "properties": FOUR_CORNER,
        }
        return BusinessMessage(
            service=Service(service),
            action=action,
            to_party=to_party or PartyId(party, UNREGISTERED),
            to_role=RESPONDER if to == "c3" else INITIATOR,
            payloads=tuple(payloads if payloads is not None else (XML_PAYLOAD,)),
            **{**defaults, **fields},
        )

    # -- waiting for what the driver and the interceptor saw

    def _from(self, action: protocol.Action, at: str) -> list[BackendMessage]:
        """The backend messages of one action the driver got so far from the conformance service of ``at``."""
        return [
            message
            for message, _ in list(self.harness.received)
            if message.action == action and message.user_message.party_info.sender.party_ids[0].value == f"sut-{at}"
        ]

    def deliveries(self, message_id: str, *, at: str = "c3") -> list[BusinessMessage]:
        """Every Deliver of that AS4 message so far from the conformance service of ``at``."""
        found = [m.business() for m in self._from(protocol.Action.DELIVER, at)]
        return [business for business in found if business.message_id == message_id]

    def delivery(self, message_id: str, *, at: str = "c3") -> BusinessMessage:
        """Wait for the Deliver of that AS4 message."""
        return self.harness.wait_for(
            lambda: next(iter(self.deliveries(message_id, at=at)), None), f"the Deliver of {message_id} at {at}"
        )

    def notifications(self, message_id: str, *, at: str = "c2") -> list[Notification]:
        """Every Notify about that AS4 message so far from the conformance service of ``at``."""
        found = [m.notification() for m in self._from(protocol.Action.NOTIFY, at)]
        return [notification for notification in found if notification.ref_to_message_id == message_id]

    def notification(self, message_id: str, *, at: str = "c2", timeout: float = WAIT) -> Notification:
        """Wait for a Notify about that AS4 message."""
        return self.harness.wait_for(
            lambda: next(iter(self.notifications(message_id, at=at)), None),
            f"a Notify about {message_id} from {at}",
            timeout,
        )

    def exchanges(self, message_id: str) -> list[Exchange]:
        """Every exchange through the interceptor that carried that user message, in order."""
        return [e for e in list(self.harness.exchanges) if e.capture.message_id == message_id]

    def exchange(self, message_id: str) -> Exchange:
        """Wait for the first exchange carrying that user message to be answered."""
        return self.harness.wait_for(
            lambda: next(iter(self.exchanges(message_id)), None), f"{message_id} through the interceptor"
        )

    @contextlib.contextmanager
    def hooked(self, hook: Hook) -> Iterator[None]:
        """Intercept with ``hook`` inside the block."""
        self.harness.hook = hook
        try:
            yield
        finally:
            self.harness.hook = None


# ------------------------------------------------------------------------------- the test bed's messages

INITIATOR = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/initiator"
RESPONDER = "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/responder"
SERVICES = {
    "SIMPLE_ONEWAY": ("SRV_SIMPLE_ONEWAY", "ACT_SIMPLE_ONEWAY"),
    "SIMPLE_TWOWAY": ("SRV_SIMPLE_TWOWAY", "ACT_SIMPLE_TWOWAY"),
    "ONEWAY_RETRY": ("SRV_ONEWAY_RETRY", "ACT_ONEWAY_RETRY"),
    "ONEWAY_ONLY_SIGN": ("SRV_ONEWAY_SIGNONLY", "ACT_ONEWAY_SIGNONLY"),
    "DYNAMIC_RECEIVER": ("SRV_DYNAMIC_RECEIVER", "ACT_DYNAMIC_RECEIVER"),
    # the dynamic sender's action is the document type SMP lookups ask for
    "DYNAMIC_SENDER": ("SRV_DYNAMIC_SENDER", "busdox-docid-qns::urn:example:conformance::DynamicSender##1.0"),
    "DYNAMIC_SENDER_P2P": ("SRV_DYNAMIC_SENDER_P2P", "busdox-docid-qns::urn:example:conformance::DynamicSender##1.0"),
    "PING": (
        "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/service",
        "http://docs.oasis-open.org/ebxml-msg/ebms/v3.0/ns/core/200704/test",
    ),
}
UNREGISTERED = "urn:oasis:names:tc:ebcore:partyid-type:unregistered"


FOUR_CORNER = (
    Property("originalSender", "urn:oasis:names:tc:ebcore:partyid-type:unregistered:C1"),
    Property("finalRecipient", "urn:oasis:names:tc:ebcore:partyid-type:unregistered:C4"),
)
XML_PAYLOAD = protocol.BackendPayload(
    "xmlpayload@minder", "application/xml", b"<min><der>sample</der></min>", (Property("CharacterSet", "UTF-8"),)
)
XML_PAYLOAD_2 = protocol.BackendPayload("xmlpayload2@minder", "application/xml", b"<second>payload</second>")
CUSTOM_PAYLOAD = protocol.BackendPayload(
    "custompayload@minder", "application/octet-stream", b"!! Modify me after submission, if you dare!!"
)


# ----------------------------------------------------------------------------------------- starting it


# The dynamic receiver (AS4_DR_TA01-04): C3 takes this P-Mode's message from any sender whose certificate chains
# to the anchor, asserts this policy and has the sender's PartyId as its CN.
DYNAMIC_SENDER_ID = "c2"
DYNAMIC_POLICY = "2.999.4.1"  # under the example OID arc


def _dynamic_receiver(profile: str, c2: Corner, c3: Corner, anchors: list[str], *, receiving: bool) -> dict[str, Any]:
    """C2's or C3's view of the dynamic receiver P-Mode: C2 names itself, C3 names no initiator party at all."""
    template = conformance_pmodes(profile, c2, c3, anchors=anchors, retry=RETRY, suffix=f"-{profile}")
    pmode = copy.deepcopy(next(p for p in template["pmodes"] if p["id"] == f"SIMPLE_ONEWAY-{profile}"))
    pmode["id"] = f"DYNAMIC_RECEIVER-{profile}"
    leg = pmode["legs"][0]
    leg["service"], leg["action"] = SERVICES["DYNAMIC_RECEIVER"]
    sender = f"c2-dr-{profile}"
    parties = {
        sender: {**template["parties"][c2.name], "party_ids": [{"value": DYNAMIC_SENDER_ID, "type": UNREGISTERED}]}
    }
    if receiving:
        sender = "any-sender"
        parties = {sender: {"endpoint": "dynamic"}}
        trust = {
            "anchors": anchors,
            "bind_cn_to_party_id": True,
            "required_policies": [DYNAMIC_POLICY],
            "revocation": "off",
        }
        leg["security"]["trust"] = trust
    pmode["initiator"] = {"party": sender}
    return {"parties": parties, "pmodes": [pmode]}


def _pair(issued: Issued) -> dict[str, str]:
    return {"key": str(issued.key_path), "certificate": str(issued.certificate_path)}


# The dynamic sender (AS4_DS_TA01-03, AS4 1.15): C2 finds C3 through BDXL (dnsmasq) and an SMP (the project's,
# served from the harness). The SMP publishes C3 for three participants: a final recipient (four corners), C3 itself
# (point to point), and a final recipient with a stale certificate C3 can still decrypt with but no longer signs.
DS_DOCUMENT = SERVICES["DYNAMIC_SENDER"][1]
DS_FOUR_CORNER = "iso6523-actorid-upis::0088:c4-dynamic"
DS_POINT_TO_POINT = "iso6523-actorid-upis::0088:c3-dynamic"
DS_STALE = "iso6523-actorid-upis::0088:c4-stale"
DS_DISCOVERED = "c3"  # the CN of C3's certificate: the eb:To PartyId discovery gives
# (P-Mode id, service, the responder's PartyId type when C2 knows it, the responder's party name)
DS_PMODES = (
    ("DYNAMIC_SENDER-1.15", "SRV_DYNAMIC_SENDER", None, "ds-c3"),
    ("DYNAMIC_SENDER_P2P-1.15", "SRV_DYNAMIC_SENDER_P2P", DS_POINT_TO_POINT.partition("::")[0], "ds-c3-p2p"),
)


def _dynamic_sender(c2: Corner, c3: Corner, anchors: list[str], *, receiving: bool) -> dict[str, Any]:
    """C2's P-Mode templates (no responder certificate or address) or C3's static view of the same exchanges."""
    point_to_point = DS_POINT_TO_POINT.partition("::")[2]
    template = conformance_pmodes("1.15", c2, c3, anchors=anchors, retry=RETRY)
    base = next(p for p in template["pmodes"] if p["id"] == "SIMPLE_ONEWAY")
    pmodes = []
    parties: dict[str, Any] = {}
    for pmode_id, service, party_type, responder in DS_PMODES:
        pmode = copy.deepcopy(base)
        pmode["id"] = pmode_id
        leg = pmode["legs"][0]
        leg["service"], leg["action"] = service, DS_DOCUMENT
        if receiving:
            party_id = {"value": DS_DISCOVERED, "type": party_type or UNREGISTERED}
            parties[responder] = {**template["parties"][c3.name], "party_ids": [party_id]}
        else:
            parties[responder] = {"endpoint": "dynamic"}
            if party_type is not None:  # point to point: C2 knows C3's PartyId, not its address or certificate
                parties[responder]["party_ids"] = [{"value": point_to_point, "type": party_type}]
            leg["security"]["trust"] = {"anchors": anchors, "revocation": "off"}
        pmode["responder"] = {"party": responder}
        pmodes.append(pmode)
    return {"parties": parties, "pmodes": pmodes}


async def _publish(base: str, c3: x509.Certificate, stale: x509.Certificate, endpoint: str) -> None:
    for participant, certificate in ((DS_FOUR_CORNER, c3), (DS_POINT_TO_POINT, c3), (DS_STALE, stale)):
        der = certificate.public_bytes(serialization.Encoding.DER)
        published = EndpointInfo(TransportProfile.EDELIVERY_AS4_1_15, endpoint, der, description="C3")
        process = ProcessInfo(Identifier("cenbii-procid-ubl", NO_PROCESS), (published,))
        await publish(base, ServiceMetadata(Identifier.parse(participant), Identifier.parse(DS_DOCUMENT), (process,)))


async def _serve_smp(harness: Harness, folder: Path, port: int) -> None:
    running, store = await serve(smp_settings(folder, port))

    async def stop() -> None:
        await running.stop()
        await store.close()

    harness.keep(stop)


def _write_pem(folder: Path, name: str, keys: KeyPair) -> dict[str, str]:
    key, certificate = folder / f"{name}.key.pem", folder / f"{name}.pem"
    key.write_bytes(
        keys.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    certificate.write_bytes(keys.certificate.public_bytes(serialization.Encoding.PEM))
    return {"key": str(key), "certificate": str(certificate)}


def start_bed(folder: Path) -> Bed:
    """Generate the keys, write every setting, start the four processes, dnsmasq and the harness."""
    pki = generate_keys(folder / "keys", {"c2": "c2", "c3": "c3"})
    ca = load_key_pair(pki.ca.key_path, certificate=pki.ca.certificate_path)
    stale = _write_pem(folder / "keys", "c3-stale", issue(ca, DS_DISCOVERED, "rsa"))
    ipv6 = ipv6_loopback()
    sockets = {"interceptor": [_listening("127.0.0.1")], "driver": [_listening("127.0.0.1")]}
    v4_port = sockets["interceptor"][0].getsockname()[1]
    if ipv6:
        sockets["interceptor"].append(_listening("::1", socket.AF_INET6))
    v6_port = sockets["interceptor"][-1].getsockname()[1]
    driver_url = f"http://127.0.0.1:{sockets['driver'][0].getsockname()[1]}/as4"
    ports = {name: free_port() for name in ("c2", "c3", "adapter-c2", "adapter-c3", "smp")}
    # C2 reaches C3 over IPv6 where there is ::1 (AS4_CP_TA46); C3 listens and answers on IPv4 only.
    to_c3 = f"http://[::1]:{v6_port}/c3/as4" if ipv6 else f"http://127.0.0.1:{v4_port}/c3/as4"
    to_c2 = f"http://127.0.0.1:{v4_port}/c2/as4"
    anchors = [str(pki.ca.certificate_path)]
    documents = []
    views: dict[str, list[dict[str, Any]]] = {"c2": [], "c3": []}
    for profile in PROFILES:
        corners = {}
        for name, endpoint in (("c2", to_c2), ("c3", to_c3)):
            party = pki.parties[name]
            corners[name] = Corner(
                name=f"{name}-{profile}",
                party_id=f"{name}-{profile}",
                signing_certificate=str((party.rsa if profile == "1.15" else party.ed25519).certificate_path),
                endpoint=endpoint,
                encryption_certificate=None if profile == "1.15" else str(party.x25519.certificate_path),
            )
        suffix = f"-{profile}"
        documents.append(
            conformance_pmodes(profile, corners["c2"], corners["c3"], anchors=anchors, retry=RETRY, suffix=suffix)
        )
        for name in ("c2", "c3"):
            receiving = name == "c3"
            views[name].append(_dynamic_receiver(profile, corners["c2"], corners["c3"], anchors, receiving=receiving))
            if profile == "1.15":
                views[name].append(_dynamic_sender(corners["c2"], corners["c3"], anchors, receiving=receiving))
    dns: DnsServer | None = None
    discovery_missing = None if dnsmasq_binary() is not None else "dnsmasq is not installed: BDXL needs a DNS server"
    discovery: dict[str, Any] = {}
    if discovery_missing is None:
        dns = DnsServer(folder, (ZONE,), port=free_port(udp=True))
        for participant in (DS_FOUR_CORNER, DS_POINT_TO_POINT, DS_STALE):
            dns.add_naptr(peppol_naptr_name(Identifier.parse(participant), ZONE), f"http://127.0.0.1:{ports['smp']}/")
        (folder / "smp-trust.pem").write_bytes(pem(smp_pki().ca))
        host, port = dns.address
        discovery = {
            "discovery": {
                "zone": ZONE,
                "dns": f"{host}:{port}",
                "smp_trust": str(folder / "smp-trust.pem"),
                # The SMP and C3 are on loopback over plain HTTP: a test network, allowed explicitly.
                "allow_http": True,
                "allow_networks": ["127.0.0.0/8", "::1/128"],
            }
        }
    processes: dict[str, Child] = {}
    adapters = {}
    for name in ("c2", "c3"):
        home = folder / name
        home.mkdir(parents=True)
        own = [f"{name}-{profile}" for profile in PROFILES]
        own += [f"c2-dr-{profile}" for profile in PROFILES] if name == "c2" else [p[3] for p in DS_PMODES]
        (home / "pmodes.yaml").write_text(json.dumps(pmode_file(own, *documents, *views[name]), indent=1))
        party = pki.parties[name]
        adapter = f"http://127.0.0.1:{ports[f'adapter-{name}']}"
        decryption = [_pair(party.x25519), *([stale] if name == "c3" else [])]
        settings = {
            "listen": {"host": "127.0.0.1", "port": ports[name]},
            "pmodes": "pmodes.yaml",
            "storage": "data",
            "instance": name,
            "revocation": False,
            "durability": "process-crash",
            "api_tokens": [TOKEN],
            "send": {"workers": 2, "timeout": "10s", "lease": "30s"},
            "keys": {"signing": [_pair(party.rsa), _pair(party.ed25519)], "decryption": decryption},
            "webhooks": [
                {"url": f"{adapter}/events", "secret": WEBHOOK_SECRET, "backoff": "200ms", "backoff_max": "1s"}
            ],
            **(discovery if name == "c2" else {}),
        }
        (home / "server.yaml").write_text(json.dumps(settings, indent=1))
        conformance = {
            "listen": {"host": "127.0.0.1", "port": ports[f"adapter-{name}"]},
            "access_point": {"url": f"http://127.0.0.1:{ports[name]}", "token": TOKEN},
            "webhook_secret": WEBHOOK_SECRET,
            "sut": {"party_id": f"sut-{name}"},
            "test_driver": {"endpoint": driver_url, "party_id": DRIVER_ID},
            "timeout": 10,
        }
        (home / "conformance.yaml").write_text(json.dumps(conformance, indent=1))
        processes[name] = Child(name, home, ports[name], ["serve", "--config", str(home / "server.yaml")])
        processes[f"adapter-{name}"] = Child(
            f"adapter-{name}",
            home,
            ports[f"adapter-{name}"],
            ["conformance", "serve", "--config", str(home / "conformance.yaml")],
        )
        adapters[name] = f"{adapter}/as4"
    harness = Harness(sockets, {name: f"http://127.0.0.1:{ports[name]}/as4" for name in ("c2", "c3")})
    try:
        if dns is not None:
            dns.start()
        for process in processes.values():
            process.start()  # before the harness thread: Child forks with a preexec_fn
        harness.start()
        if dns is not None:
            harness.run(_serve_smp(harness, folder, ports["smp"]))
            base = f"http://127.0.0.1:{ports['smp']}"
            certificate = x509.load_pem_x509_certificate(Path(stale["certificate"]).read_bytes())
            harness.run(_publish(base, pki.parties["c3"].rsa.certificate, certificate, to_c3))
        for process in processes.values():
            process.wait_ready()
    except (DemoFailure, OSError, AssertionError):
        harness.stop()
        for process in processes.values():
            process.stop()
        if dns is not None:
            dns.stop()
        raise
    profiles = {}
    c2_pmodes, c3_pmodes = load_pmodes(folder / "c2" / "pmodes.yaml"), load_pmodes(folder / "c3" / "pmodes.yaml")
    for profile in PROFILES:
        c2, c3 = pki.parties["c2"], pki.parties["c3"]
        signing = {name: p.rsa if profile == "1.15" else p.ed25519 for name, p in (("c2", c2), ("c3", c3))}
        decryption = {name: p.rsa if profile == "1.15" else p.x25519 for name, p in (("c2", c2), ("c3", c3))}
        loaded = {name: load_key_pair(i.key_path, certificate=i.certificate_path) for name, i in signing.items()}
        opened = {name: load_key_pair(i.key_path, certificate=i.certificate_path) for name, i in decryption.items()}
        profiles[profile] = ProfileKeys(
            profile, f"c2-{profile}", f"c3-{profile}", loaded["c2"], loaded["c3"], opened["c3"], opened["c2"],
            c2_pmodes, c3_pmodes,
        )  # fmt: skip
    keys = {"c2": pki.parties["c2"], "c3": pki.parties["c3"]}
    return Bed(folder, harness, processes, adapters, profiles, ca, keys, ipv6, discovery_missing, dns)


def stop_bed(bed: Bed) -> None:
    """Stop the processes, dnsmasq and the harness."""
    for process in bed.processes.values():
        process.terminate()
    for process in bed.processes.values():
        process.stop()
    if bed.dns is not None:
        bed.dns.stop()
    bed.harness.stop()
