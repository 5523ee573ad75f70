"""``make demo`` (``python -m accesspoint.demo``): two real access points exchange 1.15 and 2.0 messages, then a
federation (FaR, a router, two mailbox operators) delivers letters and brings the operators' signed answers back,
and two-way post brings a holder's answer, a time-stamped delgivningskvitto and a payment confirmation back."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from accesspoint.testing.dnsserver import dnsmasq_binary
from tests.conftest import REPO


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(400)
def test_demo_delivers_both_profiles_with_verified_receipts_and_stops_its_servers() -> None:
    """The demo exits 0 having delivered under 1.15 and 2.0 with verified receipts and routed each letter as FaR says
    with the operators' verified answers at the sender, and no server outlives it."""
    done = subprocess.run(
        [sys.executable, "-m", "accesspoint.demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "DEMO_MAILING": "100"},  # the mass mailing, as make demo sends it
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    for profile in ("1.15", "2.0"):
        assert f"OK eDelivery AS4 {profile}: delivered, receipt verified, payload SHA-256 equal on both sides" in lines
    text = " ".join(done.stdout.split())  # wrapped lines joined
    for expected in (
        "signed by CN=AP-SE-0001 with rsa-sha256",
        "signed by CN=AP-NO-0002 with rsa-sha256",
        "signed by CN=AP-SE-0001 with eddsa-ed25519",
        "signed by CN=AP-NO-0002 with eddsa-ed25519",
        "key agreed by x25519",
        "receipt verified",
        "stopped cleanly",
    ):
        assert expected in text, done.stdout
    for expected in (
        # part 2, the federation: where each letter went and the signed receipts that came back
        "OK letter-1@nordic: delivered-to-mailbox, signed by CN=AP-OPERATOR-1",
        "routed: forwarded to operator Brevlådan Ett AB (AP-OPERATOR-1)",
        "OK letter-2@nordic: delivered-to-mailbox, signed by CN=AP-OPERATOR-2",
        "OK letter-3@nordic: refused at once by the Swedish access point: EBMS:0004 no-mailbox",
        "OK letter-4@nordic: refused at once by the Swedish access point: EBMS:0004 sender-refused",
        "OK letter-5@nordic: rejected (unknown-recipient:",
        "OK letter-7@finland: delivered-to-mailbox, signed by CN=AP-OPERATOR-1",
        "OK letter-8@finland: refused at once by the Swedish access point: EBMS:0004 sender-not-connected-here",
        "OK the mailing completed: 99 letters in mailboxes",
        "1 refused with FaR's reason for printing on paper",
        "receipt: Brevlådan Två AB (operator",
        "payload digests match what was sent",
        "processes of the federation stopped cleanly (exit code 0)",
        # holders: Alice's mailbox moves with its mail; a company's mailbox read by its signatory
        "OK every letter is at Brevlådan Två AB with the same SHA-256, Brevlådan Ett AB holds none",
        "and letter-7@nordic to Alice is delivered there (signed by CN=AP-OPERATOR-2",
        "she logs in with her e-ID and reads it",
        "audit trail: read by person:",
        # part 3, two-way post: an answer, a served letter, a paid invoice, each verified at the agency
        "(signature verified) in reply to",
        "(case Dnr 2026/1234), 'Jag godtar beslutet.'",
        "OK served at",
        "time-stamped",
        "paid once",
        "a second payment refused: already-paid",
    ):
        assert expected in text, done.stdout
    if dnsmasq_binary() is not None:  # the letter abroad: BDXL (dnsmasq) + the SMP name operator 2's access point
        assert "OK letter-6@nordic: delivered-to-mailbox, signed by CN=AP-OPERATOR-2" in text, done.stdout
        assert "participant discovery, forwarded as fwd-letter-6@nordic to" in text, done.stdout
    else:
        assert "dnsmasq is not installed" in text, done.stdout
    answers = 5 if dnsmasq_binary() is not None else 4
    assert text.count(", verified") == answers  # each answer re-checked with the operator's certificate
    pids = [int(pid) for pid in re.findall(r"\bpid (\d+)\b", done.stdout)]
    assert len(pids) == 2 + 10  # part 1's two access points; FaR, the registers, the SMP, 5 access points, 2 operators
    assert not [pid for pid in pids if _alive(pid)]
