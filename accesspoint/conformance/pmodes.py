"""The test P-Modes between the two instances of the system under test (C2 -> C3), as the EC test bed names them.

Conformance Testing User Guide 3.2: five P-Modes selected by Service and Action, all signed (and but one
encrypted), gzip-compressed, with NRR receipts on the HTTP response; both instances load the same agreements,
each naming itself in ``self``. The endpoints are the test bed's interceptor, not the other instance.

| P-Mode | MEP | retries | encrypted | Service / Action |
|---|---|---|---|---|
| SIMPLE_ONEWAY | one-way push | none | yes | SRV_SIMPLE_ONEWAY / ACT_SIMPLE_ONEWAY |
| SIMPLE_TWOWAY | two-way push-and-push | none | yes | SRV_SIMPLE_TWOWAY / ACT_SIMPLE_TWOWAY |
| ONEWAY_RETRY | one-way push | ``Retry`` (the bed waits 3 minutes in all) | yes | SRV_ONEWAY_RETRY / ACT_ONEWAY_RETRY |
| ONEWAY_ONLY_SIGN | one-way push | none | no | SRV_ONEWAY_SIGNONLY / ACT_ONEWAY_SIGNONLY |
| PING | one-way push | none | yes | the ebMS test service / action |

Every leg tells the receiver's backend about a refused message (``error_handling.notify_consumer``, TA31) and
leaves ``sender_errors_to`` unset (TA11).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from accesspoint.core.namespaces import TEST_ACTION, TEST_SERVICE, PartyIdType

UNREGISTERED = PartyIdType.EBCORE_UNREGISTERED.value
NETWORKS = {"1.15": "edelivery-1.15", "2.0": "edelivery-2.0"}
SECURITY = {
    "1.15": {"signature_algorithm": "rsa-sha256", "token_reference": "bst-x509v3"},
    "2.0": {"signature_algorithm": "ed25519", "key_agreement": "x25519", "token_reference": "bst-pkipath"},
}


@dataclass(frozen=True, slots=True)
class Corner:
    """One instance of the system under test (C2 or C3) as the test P-Modes name it."""

    name: str  # its party name in the P-Mode file
    party_id: str
    signing_certificate: str  # a file path
    endpoint: str  # where the other instance reaches it: the test bed's interceptor
    encryption_certificate: str | None = None  # AS4 2.0: the X25519 certificate
    party_id_type: str | None = UNREGISTERED


@dataclass(frozen=True, slots=True)
class Retry:
    """ONEWAY_RETRY's reception awareness: the bed gives the last retry 3 minutes after the first attempt."""

    retries: int = 5
    interval: str = "10s"  # the first wait; doubles up to ``maximum``
    maximum: str = "30s"


@dataclass(frozen=True, slots=True)
class BedPMode:
    """One of the test bed's P-Modes."""

    name: str
    service: str
    action: str
    two_way: bool = False
    retries: bool = False
    encrypt: bool = True


TEST_PMODES = (
    BedPMode("SIMPLE_ONEWAY", "SRV_SIMPLE_ONEWAY", "ACT_SIMPLE_ONEWAY"),
    BedPMode("SIMPLE_TWOWAY", "SRV_SIMPLE_TWOWAY", "ACT_SIMPLE_TWOWAY", two_way=True),
    BedPMode("ONEWAY_RETRY", "SRV_ONEWAY_RETRY", "ACT_ONEWAY_RETRY", retries=True),
    BedPMode("ONEWAY_ONLY_SIGN", "SRV_ONEWAY_SIGNONLY", "ACT_ONEWAY_SIGNONLY", encrypt=False),
    BedPMode("PING", TEST_SERVICE, TEST_ACTION),
)


def _party(corner: Corner) -> dict[str, Any]:
    party: dict[str, Any] = {
        "party_ids": [{"value": corner.party_id, "type": corner.party_id_type}],
        "signing_certificate": corner.signing_certificate,
        "endpoint": corner.endpoint,
    }
    if corner.encryption_certificate is not None:
        party["encryption_certificate"] = corner.encryption_certificate
    return party


def conformance_pmodes(
    profile: str,
    initiator: Corner,
    responder: Corner,
    *,
    anchors: Sequence[str],
    retry: Retry = Retry(),
    revocation: str = "off",
    suffix: str = "",
) -> dict[str, Any]:
    """The parties and P-Modes (``{"parties": ..., "pmodes": [...]}``) of one profile, C2 the initiator.

    ``suffix`` is appended to each P-Mode id, so one file can hold the P-Modes of both profiles.
    """
    if profile not in NETWORKS:
        raise ValueError(f"profile {profile!r}: one of {', '.join(NETWORKS)}")
    trust = {"anchors": list(anchors), "pin_partner": True, "revocation": revocation}
    no_retries = {"retries": 0, "backoff_base": retry.interval, "backoff_max": retry.maximum, "jitter": 0.0}
    with_retries = {**no_retries, "retries": retry.retries}
    pmodes = []
    for test in TEST_PMODES:
        leg = {
            "service": test.service,
            "action": test.action,
            "security": {**SECURITY[profile], "encrypt": test.encrypt, "trust": trust},
            "reception_awareness": with_retries if test.retries else no_retries,
            "error_handling": {"notify_consumer": True},
        }
        pmodes.append(
            {
                "id": test.name + suffix,
                "network": NETWORKS[profile],
                "mep": "two-way" if test.two_way else "one-way",
                "binding": "push-and-push" if test.two_way else "push",
                "initiator": {"party": initiator.name},
                "responder": {"party": responder.name},
                "legs": [leg, leg] if test.two_way else [leg],
            }
        )
    return {"parties": {initiator.name: _party(initiator), responder.name: _party(responder)}, "pmodes": pmodes}


def pmode_file(own: Sequence[str], *profiles: dict[str, Any]) -> dict[str, Any]:
    """A P-Mode file (``accesspoint pmode validate`` reads it) for the instance whose parties are ``own``."""
    parties: dict[str, Any] = {}
    pmodes: list[dict[str, Any]] = []
    for document in profiles:
        parties.update(document["parties"])
        pmodes.extend(document["pmodes"])
    return {"version": 1, "self": list(own), "parties": parties, "pmodes": pmodes}
