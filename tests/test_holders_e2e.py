"""Mailbox holders across real processes: FaR, the reference registers, a Nordic sender's access point, the Swedish
router and two operators (each an access point and ``accesspoint operator serve``).

Operator 2's token cannot touch operator 1's holders; minors, companies, eIDAS holders and dormancy follow FaR's
policy through the operators' holder API and the router; and a mailbox of 1,000 letters with a 200 MB attachment
moves from operator 1 to operator 2 while letters keep coming, both operators killed (-9) on the way: every
letter ends at operator 2 exactly once with the digests it had, operator 1 keeps none, memory stays flat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from accesspoint import demo_federation as fed
from accesspoint.demo_common import Child
from accesspoint.envelopes.letter import LetterTerms, ReplyTerms, with_terms
from accesspoint.envelopes.minameddelanden import ReplyOption
from accesspoint.keys_cli import DevelopmentPki, generate_keys
from accesspoint.security.keys import load_key_pair
from accesspoint.testing.mailboxes import deliver_letter, random_file, sbd_letter, seed_letters
from accesspoint.testing.smtp import SmtpServer, smtp_server
from far.identifiers import with_check_digit
from operators.holders import login_text
from operators.service import Operator
from operators.settings import load_settings
from tests.cli import in_process
from tests.conftest import REPO
from tests.test_envelopes_payment import BANKGIRO
from tests.test_operators_support import sealed, secure_delivery

# The first test also pays for the module's federation (60-120 s on a loaded 2-core machine, 1,000 letters seeded).
pytestmark = pytest.mark.timeout(300)

OP1, OP2 = fed.OPERATORS
ALICE = fed.ALICE  # at operator 1; moves to operator 2
BERTIL = fed.BERTIL  # at operator 2
TEXT = "Jag godkänner villkoren för min digitala brevlåda."
SEEDED = 1000  # letters in Alice's mailbox before the move (one of them with the big attachment)
BIG = int(os.environ.get("HOLDERS_E2E_BIG_BYTES", str(200 * 1024 * 1024)))
TEEN = "20" + with_check_digit("120303123")
CHILD = "20" + with_check_digit("180505123")
GUARDIAN = "19" + with_check_digit("820202123")
EIDAS = "DE/SE/4711ABCDE0815"
NEW_SIGNATORY = "19" + with_check_digit("760606123")
MOVE_TIMEOUT = 900
PEAK_BOUND = 192 * 2**20  # below the 200 MB attachment: it is streamed, never held
TWO_WAY = "seed-two-way@nordic"  # one seeded letter that takes an answer and is an unpaid invoice


@dataclass
class Running:
    """The federation, its PKI, and what was seeded into Alice's mailbox."""

    federation: fed.Federation
    pki: DevelopmentPki
    smtp: SmtpServer
    seeded: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)


def _seed(federation: fed.Federation, pki: DevelopmentPki, folder: Path) -> dict[str, list[tuple[str, str, int]]]:
    """Alice's mailbox at operator 1 before anything runs: SBD letters, sealed Mina meddelanden deliveries (the
    Nordic agency's key signs, the Swedish access point's seals) and one SBD with a big attachment outside the
    envelope; every twentieth with the operator's signed answer. Their files' digests, by origin."""

    async def run() -> dict[str, list[tuple[str, str, int]]]:
        operator = Operator(load_settings(federation.operators["op1"].argv[-1]))
        await operator.store.create(operator.settings.mailboxes, now=operator.clock())
        agency = load_key_pair(
            pki.parties["nordic"].rsa.key_path, None, certificate=pki.parties["nordic"].rsa.certificate_path
        )
        seal = load_key_pair(
            pki.parties["sweden"].rsa.key_path, None, certificate=pki.parties["sweden"].rsa.certificate_path
        )
        big = folder / "big.bin"
        await asyncio.to_thread(random_file, big, BIG)
        items: list[tuple[str, list[tuple[str, str, bytes | Path]]]] = []
        for index in range(SEEDED - 2):
            if index % 100 == 0:
                document = sealed(secure_delivery(ALICE), sender=agency, intermediary=seal)
            else:
                document = sbd_letter(ALICE, f"Brev nummer {index}")
            items.append((f"seed-{index}@nordic", [("letter@nordic", "application/xml", document)]))
        big_letter = sbd_letter(ALICE, "Ritningarna bifogas")
        items.append(
            (
                "seed-big@nordic",
                [("letter@nordic", "application/xml", big_letter), ("drawings@nordic", "application/pdf", big)],
            )
        )
        try:
            answered = [item for index, item in enumerate(items) if index % 20 == 0]
            others = [item for index, item in enumerate(items) if index % 20 != 0]
            made = await seed_letters(operator, answered, answer=True)
            made += await seed_letters(operator, others, answer=False)
            later = datetime.now(UTC) + timedelta(days=30)
            terms = LetterTerms(ReplyTerms(ReplyOption.REQUESTED, later), invoice=True,
                                payment=dataclasses.replace(BANKGIRO, due_date=later.date()))  # fmt: skip
            delivery = secure_delivery(ALICE, receipt=False)
            message = dataclasses.replace(with_terms(delivery.messages[0], terms), attachments=())
            document = sealed(dataclasses.replace(delivery, messages=(message,)), sender=agency, intermediary=seal)
            made.append(await deliver_letter(operator, TWO_WAY, [("letter@nordic", "application/xml", document)]))
        finally:
            await operator.store.engine.dispose()
        return {letter.origin: sorted((p.name, p.sha256, p.size) for p in letter.parts) for letter in made}

    return asyncio.run(run())


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The federation (batches of at most 250 letters and 32 MiB), Alice's mailbox seeded before it starts."""
    folder = tmp_path_factory.mktemp("holders")
    pki = generate_keys(folder / "keys", fed.PARTY_IDS, days=1)
    with smtp_server() as smtp:
        notifications = (
            f'[operator.notifications]\nsmtp = {{ host = "{smtp.host}", port = {smtp.port}, sender = "post@ex.se" }}\n'
            'sms = { record = "sms.jsonl" }\npush = { record = "push.jsonl" }\n'
        )
        federation = fed.build(
            folder, pki, portability='batch_letters = 250\nbatch_size = "32MiB"', operator_extra=notifications
        )
        seeded = _seed(federation, pki, folder)
        try:
            fed.start(federation, pki)
            yield Running(federation, pki, smtp, seeded)
        except Exception:
            for server in federation.all:
                sys.stderr.write(f"{server.name}'s log (last lines):\n{server.log_tail(40)}\n")
            raise
        finally:
            codes = fed.stop(federation)
    assert set(codes.values()) <= {0, None}, codes


# ------------------------------------------------------------------------------------------- helpers


def _far(federation: fed.Federation, method: str, path: str, body: Any = None, token: str = fed.FAR_TOKEN) -> Any:
    return fed._call(federation.far.url + path, token, method, body)


def _operator(
    federation: fed.Federation,
    key: str,
    method: str,
    path: str,
    body: Any = None,
    token: str = fed.OPERATOR_ADMIN_TOKEN,
) -> Any:
    return fed._call(federation.operators[key].url + path, token, method, body)


def _open(federation: fed.Federation, key: str, holder: str, *signers: str, **extra: Any) -> Any:
    body = {
        "holder": holder,
        "agreement_text": TEXT,
        "signatures": federation.signed(TEXT, *(signers or (holder,))),
        **extra,
    }
    return _operator(federation, key, "POST", "/api/v1/holders", body)


def _login(federation: fed.Federation, key: str, person: str) -> str:
    operator = next(o for o in fed.OPERATORS if o.key == key)
    text = login_text(f"16{operator.orgnr}", operator.name)
    status, body = _operator(
        federation,
        key,
        "POST",
        "/api/v1/sessions",
        {"agreement_text": text, "signatures": federation.signed(text, person)},
    )
    assert status == 201, body
    return str(body["token"])


def _send(federation: fed.Federation, message_id: str, recipient: str) -> None:
    fed.send(federation, fed.Letter(message_id, recipient, fed.AGENCY, "", ""))


def _answer(federation: fed.Federation, message_id: str) -> dict[str, Any]:
    """The operator's end-to-end answer as the sender's access point verified it."""
    return dict(
        federation.nordic.wait(message_id, lambda d: "end_to_end" in d, what="end-to-end receipt")["end_to_end"]
    )


def _refusal(federation: fed.Federation, message_id: str) -> dict[str, Any]:
    """The router's refusal of a letter (EBMS:0004 with FaR's reason)."""
    sent = federation.nordic.wait(message_id, lambda d: d["state"] in ("failed", "delivered"), what="receipt")
    assert sent["state"] == "failed", sent
    return dict(sent["last_error"])


def _letters(federation: fed.Federation, key: str, holder: str) -> list[dict[str, Any]]:
    status, body = _operator(federation, key, "GET", f"/api/v1/mailboxes/{quote(holder, safe='')}/letters")
    assert status == 200, body
    return list(body["letters"])


def _wait(what: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last})")


# ---------------------------------------------------------------------------------------- operator scope


def test_operator_b_cannot_change_operator_a_holders_or_record(running: Running) -> None:
    """Operator 2's FaR token moving Alice, closing her account or changing operator 1's endpoint: 403 each,
    nothing changed (the router still sends her letters to operator 1), every attempt audited with who."""
    federation = running.federation
    op2_token = fed.OPERATOR_TOKENS["op2"]
    before = _far(federation, "GET", f"/api/v1/operators/{OP1.orgnr}")[1]
    record = {k: v for k, v in before.items() if k != "id"}
    attempts = [
        ("PUT", f"/api/v1/recipients/{ALICE}", {"status": "secure", "operator": OP2.orgnr}),
        ("DELETE", f"/api/v1/recipients/{ALICE}", None),
        ("PUT", f"/api/v1/operators/{OP1.orgnr}", {**record, "endpoint": "http://127.0.0.1:9/as4"}),
    ]
    for method, path, body in attempts:
        status, problem = _far(federation, method, path, body, token=op2_token)
        assert status == 403 and problem["type"] == "urn:accesspoint:problem:forbidden", (path, problem)
    assert _far(federation, "GET", f"/api/v1/operators/{OP1.orgnr}")[1] == before
    assert _far(federation, "GET", f"/api/v1/recipients/{ALICE}")[1]["operator"] == OP1.orgnr
    trail = _far(federation, "GET", f"/api/v1/audit/{ALICE}")[1]["changes"]
    assert [c["actor"] for c in trail if c["action"] == "refused"] == ["op2", "op2"]
    operator_trail = _far(federation, "GET", f"/api/v1/audit/{OP1.orgnr}")[1]["changes"]
    assert (operator_trail[0]["action"], operator_trail[0]["actor"]) == ("refused", "op2")
    _send(federation, "scope-1@nordic", ALICE)
    assert _answer(federation, "scope-1@nordic")["operator"]["id"] == f"16{OP1.orgnr}"


# ------------------------------------------------------------------------- minors, companies, eIDAS, dormant


def test_a_minor_by_policy(running: Running) -> None:
    """Through operator 1's holder API: a child is refused by FaR's policy (senders told "minor"), a teen opens
    with a guardian's signature, and the teen's letter arrives."""
    federation = running.federation
    registers = federation.registers.url
    for person, name in ((TEEN, "Tuva Tonåring"), (CHILD, "Kalle Barn")):
        fed._call(
            f"{registers}/population/v1/persons/{person}",
            fed.REGISTERS_TOKEN,
            "PUT",
            {"name": name, "guardians": [{"id": GUARDIAN, "name": "Greta Förälder"}]},
        )
    status, body = _open(federation, "op1", CHILD)
    assert status == 422 and body["code"] == "minor", body
    status, body = _open(federation, "op1", TEEN)
    assert status == 202 and body["state"] == "pending", body
    status, body = _open(federation, "op1", TEEN, TEEN, GUARDIAN)
    assert status == 201 and body["state"] == "active", body
    _send(federation, "minor-1@nordic", TEEN)
    assert _answer(federation, "minor-1@nordic")["status"] == "delivered-to-mailbox"


def test_a_company_mailbox_is_read_by_whoever_may_sign_now(running: Running) -> None:
    """The signatory opens the company's mailbox at operator 2 and reads its letter (audited with the person);
    after a change of signatory at the business register the former one is refused and the new one reads."""
    federation = running.federation
    status, body = _open(federation, "op2", fed.COMPANY, fed.SIGNATORY)
    assert status == 201, body
    _send(federation, "company-1@nordic", fed.COMPANY)
    assert _answer(federation, "company-1@nordic")["status"] == "delivered-to-mailbox"
    former = _login(federation, "op2", fed.SIGNATORY)
    status, listed = _operator(federation, "op2", "GET", f"/api/v1/mailboxes/{fed.COMPANY}/messages", token=former)
    assert status == 200 and len(listed["messages"]) == 1
    fed._call(
        f"{federation.registers.url}/business/v1/companies/{fed.COMPANY_ORGNR}",
        fed.REGISTERS_TOKEN,
        "PUT",
        {
            "name": "Exempel Bygg AB",
            "form": "AB",
            "signatory_rule": "Firman tecknas var för sig av ledamöterna",
            "signatories": [{"id": NEW_SIGNATORY, "name": "Nina Ny"}],
        },
    )
    newcomer = _login(federation, "op2", NEW_SIGNATORY)
    assert _operator(federation, "op2", "GET", f"/api/v1/mailboxes/{fed.COMPANY}/messages", token=former)[0] == 403
    assert _operator(federation, "op2", "GET", f"/api/v1/mailboxes/{fed.COMPANY}/messages", token=newcomer)[0] == 200
    audit = _operator(federation, "op2", "GET", f"/api/v1/holders/{fed.COMPANY}/audit", token=newcomer)[1]["audit"]
    reads = [a["actor"] for a in audit if a["action"] == "read"]
    assert reads == [f"person:{NEW_SIGNATORY}", f"person:{fed.SIGNATORY}"]


def test_an_eidas_holder_gets_letters_through_the_router(running: Running) -> None:
    """A holder identified by eIDAS opens a mailbox at operator 1 and receives a letter routed through FaR."""
    federation = running.federation
    status, body = _open(federation, "op1", EIDAS)
    assert status == 201, body
    _send(federation, "eidas-1@nordic", EIDAS)
    answer = _answer(federation, "eidas-1@nordic")
    assert answer["status"] == "delivered-to-mailbox" and answer["recipient"] == EIDAS
    assert [x["origin"] for x in _letters(federation, "op1", EIDAS)] == ["fwd-eidas-1@nordic"]


def test_dormant_then_reactivated_by_the_holders_login(running: Running) -> None:
    """Declared dormant, Bertil's letter is refused by the router (dormant); his login at operator 2 reports
    activity to FaR, and the next letter reaches his mailbox."""
    federation = running.federation
    status, body = _far(federation, "POST", "/api/v1/dormancy/run", {"recipients": [BERTIL], "quiet_for": 0})
    assert status == 200 and body["dormant"] == [BERTIL], body
    _send(federation, "dormant-1@nordic", BERTIL)
    error = _refusal(federation, "dormant-1@nordic")
    assert error["code"] == "EBMS:0004" and error["detail"].startswith("dormant")
    _login(federation, "op2", BERTIL)
    _wait(
        "FaR reactivates Bertil",
        lambda: _far(federation, "GET", f"/api/v1/audit/{BERTIL}")[1]["changes"][0]["action"] == "reactivate",
    )
    _send(federation, "dormant-2@nordic", BERTIL)
    assert _answer(federation, "dormant-2@nordic")["status"] == "delivered-to-mailbox"


def test_a_holder_is_notified_of_new_mail_never_its_content(running: Running) -> None:
    """Bertil's contacts at operator 2: a letter routed to him brings an e-mail (through the SMTP server), an SMS
    and a push notice, none with a word of the letter."""
    federation = running.federation
    token = _login(federation, "op2", BERTIL)
    contacts = {"email": "bertil@example.se", "sms": "+46709876543", "push": "bertil-phone"}
    assert _operator(federation, "op2", "PUT", f"/api/v1/holders/{BERTIL}/contacts", contacts, token=token)[0] == 200
    _send(federation, "notify-1@nordic", BERTIL)
    assert _answer(federation, "notify-1@nordic")["status"] == "delivered-to-mailbox"
    (mail,) = _wait("the e-mail", lambda: running.smtp.bag.to("bertil@example.se"))
    assert "Ny digital post" in mail["Subject"] and "Ditt beslut" not in mail.get_content()
    folder = federation.operators["op2"].folder
    for channel, address in (("sms", "+46709876543"), ("push", "bertil-phone")):
        records = _wait(
            channel,
            lambda c=channel: (folder / f"{c}.jsonl").exists() and (folder / f"{c}.jsonl").read_text().splitlines(),
        )
        (record,) = [json.loads(line) for line in records]
        assert record["to"] == address and record["mailbox"] == BERTIL and "Ditt beslut" not in record["text"]


def test_a_move_can_be_cancelled_before_the_switch_time(running: Running) -> None:
    """Bertil starts a move to operator 1 (due in an hour) and cancels it: FaR keeps him at operator 2, and a
    switch to the operator that holds him is refused with the reason."""
    federation = running.federation
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    status, body = _open(federation, "op1", BERTIL, switch_at=later)
    assert status == 202 and body["state"] == "moving-in", body
    status, body = _operator(
        federation,
        "op1",
        "DELETE",
        f"/api/v1/holders/{BERTIL}",
        {"agreement_text": TEXT, "signatures": federation.signed(TEXT, BERTIL)},
    )
    assert status == 200 and body["switch"]["state"] == "cancelled", body
    assert _far(federation, "GET", f"/api/v1/recipients/{BERTIL}")[1]["operator"] == OP2.orgnr
    same = {"recipient": BERTIL, "agreement_text": TEXT, "signatures": federation.signed(TEXT, BERTIL)}
    status, problem = _far(federation, "POST", "/api/v1/switches", same, token=fed.OPERATOR_TOKENS["op2"])
    assert status == 409 and "already" in problem["detail"]
    _wait(
        "operator 2 hears of the cancellation",
        lambda: any(
            a["action"] == "switch-cancelled"
            for a in _operator(federation, "op2", "GET", f"/api/v1/holders/{BERTIL}/audit")[1]["audit"]
        ),
    )


def test_an_import_whose_digests_do_not_match_is_refused(running: Running, tmp_path: Path) -> None:
    """accesspoint operator export of Bertil's mailbox at operator 2, one byte changed, import at operator 1:
    exit 1 with the reason, nothing imported."""
    federation = running.federation
    archive, bad = tmp_path / "bertil.tar", tmp_path / "bad.tar"
    exported = _cli(
        "operator",
        "export",
        BERTIL,
        "--config",
        federation.operators["op2"].argv[-1],
        "--to",
        f"16{OP1.orgnr}",
        "--out",
        str(archive),
    )
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with tarfile.open(archive) as source, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as sink:
        for member in source:
            handle = source.extractfile(member)
            data = b"" if handle is None else handle.read()
            if member.name.endswith("/part-0"):
                data = data[:-2] + bytes([data[-2] ^ 1]) + data[-1:]
            sink.addfile(member, io.BytesIO(data))
    refused = in_process("operator", "import", str(bad), "--config", federation.operators["op1"].argv[-1])
    assert refused.code == 1 and "digest does not match" in refused.document["error"]["reason"], refused.stdout
    status, kept = _operator(federation, "op1", "GET", f"/api/v1/mailboxes/{BERTIL}/letters")
    assert status == 404 or kept["letters"] == [], kept


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "accesspoint", *argv], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )


# ------------------------------------------------------------------------------------------------- the move


class Peaks:
    """The highest resident set (VmHWM) each watched process reached, sampled until stopped (restarts included)."""

    def __init__(self, children: dict[str, Child]) -> None:
        self.children = children
        self.peak: dict[str, int] = dict.fromkeys(children, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            for name, child in self.children.items():
                try:
                    status = Path(f"/proc/{child.pid}/status").read_text()
                except (OSError, AssertionError):
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak[name] = max(self.peak[name], int(line.split()[1]) * 1024)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return self.peak


def _kill_and_restart(child: Child) -> None:
    assert child.process is not None
    os.kill(child.pid, signal.SIGKILL)
    child.process.wait()
    child.start()
    child.wait_ready()


def _move(federation: fed.Federation, key: str) -> dict[str, Any]:
    status, body = _operator(federation, key, "GET", f"/api/v1/holders/{ALICE}")
    return dict(body.get("move") or {}) if status == 200 else {}


@pytest.mark.timeout(MOVE_TIMEOUT + 120)
def test_a_mailbox_moves_with_every_letter_exactly_once(running: Running) -> None:
    """Alice (1,000 letters, one with a 200 MB attachment) moves from operator 1 to operator 2 while letters keep
    coming, operator 1 and operator 2 each killed (-9) mid-transfer and restarted: operator 2 ends with every
    letter once, every file's digest as before, each letter at operator 1 until the switch time and at operator
    2 after it; operator 1 keeps none; the operators' memory stays far below the attachment's size."""
    federation = running.federation
    a, b = federation.operators["op1"], federation.operators["op2"]
    peaks = Peaks(
        {"op1": a, "op2": b, "op1-ap": federation.operator_aps["op1"], "op2-ap": federation.operator_aps["op2"]}
    )
    _send(federation, "move-before@nordic", ALICE)
    assert _answer(federation, "move-before@nordic")["operator"]["id"] == f"16{OP1.orgnr}"
    at_a = {x["origin"] for x in _letters(federation, "op1", ALICE)}
    assert set(running.seeded) | {"fwd-move-before@nordic"} <= at_a
    started = time.monotonic()
    due = datetime.now(UTC) + timedelta(seconds=20)
    status, body = _open(federation, "op2", ALICE, switch_at=due.isoformat())
    assert status == 202 and body["state"] == "moving-in", body
    switch_id = body["switch"]["id"]
    sent = ["move-before@nordic"]
    for index in range(2):  # during the switch, before its time: to operator 1
        sent.append(f"move-pending-{index}@nordic")
        _send(federation, sent[-1], ALICE)
    for message_id in sent[1:]:
        assert _answer(federation, message_id)["operator"]["id"] == f"16{OP1.orgnr}"
    switched = _wait(
        "the switch at FaR",
        lambda: _far(federation, "GET", f"/api/v1/switches/{ALICE}?id={switch_id}")[1].get("switched_at"),
        timeout=180,
    )
    for index in range(2):  # during the transfer, after the switch time: to operator 2
        sent.append(f"move-during-{index}@nordic")
        _send(federation, sent[-1], ALICE)

    def exported(states: set[str]) -> int:
        return sum(
            1 for x in _move(federation, "op1").get("batches", []) if x["side"] == "export" and x["state"] in states
        )

    _wait("operator 1 has a batch confirmed", lambda: exported({"confirmed"}) >= 1, timeout=MOVE_TIMEOUT)
    assert _move(federation, "op1")["state"] != "done"
    # Moving out, operator 1 takes no more payments (the TWO_WAY invoice, seeded last, is still there): nothing can
    # be left half-paid there when it hands the letter over; Alice pays it at operator 2, once (below).
    at_op1 = f"/api/v1/mailboxes/{ALICE}"
    invoice = _operator(federation, "op1", "GET", f"{at_op1}/invoices")[1]["invoices"][0]["mail_id"]
    status, refused = _operator(federation, "op1", "POST", f"{at_op1}/messages/{invoice}/payment", {},
                                token=_login(federation, "op1", ALICE))  # fmt: skip
    assert status == 409 and refused["code"] == "mailbox-moving", refused
    _kill_and_restart(a)
    _wait(
        "operator 2 has imported two batches",
        lambda: sum(1 for x in _move(federation, "op2").get("batches", []) if x["state"] == "imported") >= 2,
        timeout=MOVE_TIMEOUT,
    )
    assert _move(federation, "op1")["state"] != "done"
    _kill_and_restart(b)
    _wait(
        "the move is done",
        lambda: _move(federation, "op1").get("state") == "done" and not _letters(federation, "op1", ALICE),
        timeout=MOVE_TIMEOUT,
    )
    moved_in = time.monotonic() - started
    for index in range(2):  # after
        sent.append(f"move-after-{index}@nordic")
        _send(federation, sent[-1], ALICE)
    for message_id in sent[3:]:
        answer = _answer(federation, message_id)
        assert answer["operator"]["id"] == f"16{OP2.orgnr}", (message_id, answer)
    peak = peaks.stop()

    expected = at_a | {f"fwd-{m}" for m in sent}
    at_b = _wait(
        "operator 2 has every letter",
        lambda: found if len(found := _letters(federation, "op2", ALICE)) >= len(expected) else None,
        timeout=120,
    )
    origins = [x["origin"] for x in at_b]
    assert len(origins) == len(set(origins)), "a letter is at operator 2 twice"
    assert set(origins) == expected
    by_origin = {x["origin"]: x for x in at_b}
    for origin, parts in running.seeded.items():
        assert sorted((p["name"], p["sha256"], p["size"]) for p in by_origin[origin]["parts"]) == parts, origin
    for message_id in sent:
        letter = by_origin[f"fwd-{message_id}"]
        payload = federation.nordic.status(message_id)["payloads"][0]["sha256"]
        assert letter["parts"][0]["sha256"] == payload, message_id
        forwarded = datetime.fromisoformat(federation.sweden.status(f"fwd-{message_id}")["created_at"])
        before_switch = forwarded < datetime.fromisoformat(switched)
        assert (letter["imported_from"] == f"16{OP1.orgnr}") == before_switch, (message_id, letter["imported_from"])
    assert _letters(federation, "op1", ALICE) == []
    assert _far(federation, "GET", f"/api/v1/recipients/{ALICE}")[1]["operator"] == OP2.orgnr
    # The letter's two-way terms moved with it: at operator 2 Alice still answers it and pays its invoice, once.
    session, base = _login(federation, "op2", ALICE), f"/api/v1/mailboxes/{ALICE}"
    status, unpaid = _operator(federation, "op2", "GET", f"{base}/invoices?state=unpaid", token=session)
    assert status == 200 and len(unpaid["invoices"]) == 1, unpaid  # the seeded TWO_WAY letter: the only invoice
    assert unpaid["invoices"][0]["payment_data"]["reference"] == BANKGIRO.reference
    letter_path = f"{base}/messages/{unpaid['invoices'][0]['mail_id']}"
    status, sent = _operator(federation, "op2", "POST", f"{letter_path}/replies", {"text": "Flyttat."}, token=session)
    assert status == 202, sent
    paid = [_operator(federation, "op2", "POST", f"{letter_path}/payment", {}, token=session)[0] for _ in range(2)]
    assert paid == [201, 409], paid
    sys.stdout.write(
        f"\nmove of {len(at_b)} letters ({sum(p[2] for parts in running.seeded.values() for p in parts) / 1e6:.0f} MB) "
        f"in {moved_in:.1f} s; peak resident memory: "
        + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in peak.items())
        + "\n"
    )
    # The operators stream: a 200 MB attachment never sits in their memory (a Python process with lxml, xmlsec and
    # SQLAlchemy loaded is about 110 MiB, and that is all they reach).
    assert peak["op1"] < PEAK_BOUND and peak["op2"] < PEAK_BOUND, peak
