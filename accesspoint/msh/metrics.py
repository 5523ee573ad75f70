"""The access point's series, served on the admin listener's ``/metrics`` (``accesspoint.servicekit.metrics``).

Labels are the P-Mode id, the partner's name in the P-Mode file, a result from a fixed table and ebMS codes: all
bounded by configuration or by the standard, never a message id, conversation id or party id off the wire.

=============================================== ===================================================================
``as4_messages_received_total``                 user messages in, by ``pmode``, ``partner``, ``result``
                                                (received, duplicate, refused)
``as4_messages_sent_total``                     outgoing messages settled, by ``pmode``, ``partner``, ``result``
                                                (delivered, failed, dead-letter)
``as4_send_attempts_total``                     attempts by ``pmode``, ``partner`` and ``outcome`` (receipt,
                                                transient, error-signal, ...: ``next_step.Outcome``)
``as4_send_retries_total``                      retries scheduled, by ``pmode``, ``partner``
``as4_ebms_errors_total``                       ebMS errors by ``code`` and ``direction`` (sent: we refused a
                                                message; received: a partner's error signal)
``as4_receive_duration_seconds``                POST /as4 of a user message, read to answer
``as4_send_duration_seconds``                   one push to a partner (HTTP and receipt check), by ``partner``
``as4_security_duration_seconds``               signing and encrypting (``secure``), decrypting and verifying
                                                (``verify``)
``as4_messages_pending``                        messages not yet final, by ``state`` (at scrape time)
``as4_messages_pending_oldest_timestamp_seconds`` when the oldest of them was stored, by ``state`` (0: none)
``as4_outbox_pending``                          webhook events waiting to be delivered (at scrape time)
``as4_last_delivery_timestamp_seconds``          last delivery to a ``partner`` by this instance since its start
``as4_certificate_not_after_timestamp_seconds`` not-after of our keys' and the partners' configured certificates,
                                                by ``usage`` and ``name`` (the key's subject CN or the partner)
``as4_send_workers``                            send workers running, by ``partner`` (at scrape time)
``as4_send_backlog``                            due messages no worker has taken yet, by ``partner`` (at scrape
                                                time; this instance's queue entries only)
``as4_far_lookups_total``                       the router's FaR questions by ``outcome`` (reachable,
                                                not-reachable, refused, unavailable)
``as4_far_lookup_duration_seconds``             one FaR question, as the router waited for it
=============================================== ===================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from cryptography import x509
from cryptography.x509.oid import NameOID

from accesspoint.msh.config import ServerConfig
from accesspoint.servicekit.metrics import Metrics
from accesspoint.store import MessageStore
from accesspoint.store.outbox import Outbox
from pmode import PModeSet, Route

UNKNOWN = "unknown"  # a message no P-Mode matched: no P-Mode and no partner to name


def labels_of(route: Route | None) -> dict[str, str]:
    """The P-Mode and partner labels of a route (``unknown`` when none matched)."""
    if route is None:
        return {"pmode": UNKNOWN, "partner": UNKNOWN}
    return {"pmode": route.pmode.id, "partner": route.partner.name}


class MshMetrics(Metrics):
    """Every series of one access point."""

    def __init__(self) -> None:
        super().__init__("accesspoint")
        route = ("pmode", "partner")
        self.received = self.counter("as4_messages_received_total", "User messages received", (*route, "result"))
        self.sent = self.counter("as4_messages_sent_total", "Outgoing messages settled", (*route, "result"))
        self.attempts = self.counter("as4_send_attempts_total", "Send attempts by outcome", (*route, "outcome"))
        self.retries = self.counter("as4_send_retries_total", "Retries scheduled", route)
        self.ebms_errors = self.counter("as4_ebms_errors_total", "ebMS errors", ("code", "direction"))
        self.receive_duration = self.histogram("as4_receive_duration_seconds", "Receiving one user message")
        self.send_duration = self.histogram("as4_send_duration_seconds", "One push to a partner", ("partner",))
        self.security_duration = self.histogram(
            "as4_security_duration_seconds", "WS-Security work on one message", ("operation",)
        )
        self.pending = self.gauge("as4_messages_pending", "Messages not yet in a final state", ("state",))
        self.oldest_pending = self.gauge(
            "as4_messages_pending_oldest_timestamp_seconds",
            "When the oldest message in a state not yet final was stored (Unix time; 0: none waits)",
            ("state",),
            combine="min",
        )
        self.outbox_pending = self.gauge("as4_outbox_pending", "Webhook events waiting to be delivered")
        self.last_delivery = self.gauge(
            "as4_last_delivery_timestamp_seconds",
            "When a message to the partner was last delivered, by this instance since its start (Unix time)",
            ("partner",),
        )
        self.last_deliveries: dict[str, datetime] = {}  # by partner, since this instance started
        self.not_after = self.gauge(
            "as4_certificate_not_after_timestamp_seconds",
            "Not-after of a configured certificate (Unix time)",
            ("usage", "name"),
            combine="min",
        )
        self.send_workers = self.gauge("as4_send_workers", "Send workers running", ("partner",), combine="livesum")
        self.send_backlog = self.gauge(
            "as4_send_backlog", "Due messages no send worker has taken yet", ("partner",), combine="livesum"
        )
        self.far_lookups = self.counter(
            "as4_far_lookups_total", "The router's FaR isReachable questions by outcome", ("outcome",)
        )
        self.far_duration = self.histogram("as4_far_lookup_duration_seconds", "One FaR isReachable question")

    def watch(
        self,
        store: MessageStore,
        outbox: Outbox,
        own: Callable[[], Iterable[tuple[str, x509.Certificate]]],
        pmodes: Callable[[], PModeSet],
    ) -> None:
        """Refresh the queue gauges from the database and the certificate dates from the keys and the current
        P-Modes (a reload or a key rollover shows at the next scrape)."""

        async def queues() -> None:
            for state, waiting in (await store.pending()).items():
                self.pending.labels(state=state.value).set(waiting.count)
                oldest = 0.0 if waiting.oldest is None else waiting.oldest.timestamp()
                self.oldest_pending.labels(state=state.value).set(oldest)
            self.outbox_pending.set(await outbox.pending())

        async def certificates() -> None:
            self.certificates(own(), pmodes())

        self.refresh_with(queues)
        self.refresh_with(certificates)

    def certificates(self, own: Iterable[tuple[str, x509.Certificate]], pmodes: PModeSet) -> None:
        """Set the not-after gauges: our keys' certificates (by usage) and each partner's configured ones."""
        self.not_after.clear()
        for usage, name, certificate in configured_certificates(own, pmodes):
            self.not_after.labels(usage=usage, name=name).set(certificate.not_valid_after_utc.timestamp())

    def send_pool(self, partners: Iterable[tuple[str, int, int]]) -> None:
        """Set the pool's gauges from (partner, workers, backlog); a partner no longer listed is dropped."""
        self.send_workers.clear()
        self.send_backlog.clear()
        for partner, workers, backlog in partners:
            self.send_workers.labels(partner=partner).set(workers)
            self.send_backlog.labels(partner=partner).set(backlog)

    def delivered(self, partner: str, at: datetime) -> None:
        """A message to ``partner`` was delivered at ``at`` (for the status and the gauge)."""
        self.last_deliveries[partner] = at
        self.last_delivery.labels(partner=partner).set(at.timestamp())


def own_certificates(settings: ServerConfig) -> list[tuple[str, x509.Certificate]]:
    """(usage, certificate) of this access point's keys in files."""
    keys = settings.keys
    return [("signing", k.certificate) for k in keys.signing] + [("decryption", k.certificate) for k in keys.decryption]


def configured_certificates(
    own: Iterable[tuple[str, x509.Certificate]], pmodes: PModeSet
) -> list[tuple[str, str, x509.Certificate]]:
    """(usage, name, certificate): our keys' (named by subject CN) and each partner's configured ones (by party),
    each once."""
    found = [(usage, _common_name(certificate), certificate) for usage, certificate in own]
    seen: set[tuple[str, str]] = set()
    for pmode in pmodes:
        party = pmode.partner.party
        configured = (("partner-signing", party.signing_certificate),
                      ("partner-encryption", party.encryption_certificate))  # fmt: skip
        for usage, certificate in configured:
            if certificate is not None and (usage, party.name) not in seen:
                seen.add((usage, party.name))
                found.append((usage, party.name, certificate))
    return found


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else certificate.subject.rfc4514_string()
    return value if isinstance(value, str) else value.decode("utf-8", "replace")
