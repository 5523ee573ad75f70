"""The router through access points in this event loop (Sweden sends, Belgium routes with FaR in its process, a
third access point is the mailbox operator's): a letter accepted before its operator was suspended is not forwarded,
and its sender is told so by a signed ``rejected`` answer with the reason, which its status shows; a forwarded
letter keeps one trace id from the sender through the router to the operator's access point."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from accesspoint.msh.app import INBOUND
from accesspoint.routing.decision import NotForwarded
from accesspoint.store import Direction, MessageState
from accesspoint.testing import services
from far.service import OperatorStatus
from tests.inmemory import Node, Pair, eventually, settings
from tests.test_msh import CERTS
from tests.test_msh_observability import _spans, _trace_id, _tracing
from tests.test_msh_support import SE_KEY, agreements, submission
from tests.test_routing import OPERATOR, PERSON, SENDER, UNREGISTERED, _far_with_person

pytestmark = pytest.mark.timeout(60)


def _router_pmodes(pair: Pair) -> dict[str, Any]:
    """Belgium's agreements plus the forward to the mailbox operator (its endpoint from FaR's route record)."""
    document = agreements("partner-115", pair.se_url, pair.be_url, retries=3, backoff="1s")
    document["parties"]["mailbox-operator"] = {
        "party_ids": [{"value": OPERATOR.party_id, "type": UNREGISTERED}],
        "endpoint": "dynamic",
        "signing_certificate": str(CERTS / "ap-sweden-sign.pem"),
    }
    leg = dict(document["pmodes"][0]["legs"][0])
    document["pmodes"].append(
        {"id": "be-to-operator", "network": "edelivery-1.15", "initiator": {"party": "partner-115"},
         "responder": {"party": "mailbox-operator"}, "legs": [leg]}
    )  # fmt: skip
    return document


async def test_a_letter_accepted_before_its_operator_was_suspended_is_answered_rejected_with_the_reason(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """The forward fails at the next attempt after the suspension; the router answers on the two-way P-Mode with a
    DeliveryNotification rejected, reason operator-suspended, that the sender verifies with the router's certificate
    and shows as its letter's end_to_end status."""
    pair = pair_factory()
    far_url, far = await _far_with_person(tmp_path)
    down = f"http://127.0.0.1:{services.free_port()}/as4"  # nobody listens: the first attempt is retried
    await far.put_operator(replace(OPERATOR, endpoint=down), actor="test")
    pair.be.write_pmodes(_router_pmodes(pair))
    routing = {"far": {"database": far_url}, "pmodes": ["se-be-request-reply"], "forward_pmode": "be-to-operator",
               "sender_binding": False, "sender_cache": "1ms"}  # fmt: skip
    pair.configure(pair.be, routing=routing)
    try:
        await pair.be.start()
        await pair.se.start()
        letter = submission("se-be-request-reply", b"<letter/>", "letter-1@se.example")
        letter["properties"] = {"finalRecipient": PERSON, "originalSender": f"0007:{SENDER}"}
        status, document = await pair.se.api("POST", "/api/v1/messages", letter)
        assert status == 202, document
        await pair.se.until("letter-1@se.example", {"delivered"})  # the router's receipt: accepted
        forward = await eventually(
            lambda: pair.be.store.get(Direction.OUT, "fwd-letter-1@se.example"),
            lambda m: m is not None and m.attempts >= 1 and m.state is MessageState.AWAITING_RECEIPT,
            "the first forwarding attempt to fail",
        )
        assert forward is not None
        await far.decide_operator(OPERATOR.id, OperatorStatus.SUSPENDED, reason="failed audit", actor="pts")
        await pair.advance_until(
            timedelta(seconds=1),
            lambda: pair.be.store.get(Direction.OUT, "fwd-letter-1@se.example"),
            lambda m: m is not None and m.state is MessageState.FAILED,
            "the forward to fail",
        )
        sent = await eventually(
            lambda: pair.se.message("letter-1@se.example"), lambda d: "end_to_end" in d, "the router's answer"
        )
    finally:
        await far.engine.dispose()
    answer = sent["end_to_end"]
    assert answer["status"] == "rejected" and answer["reply_message_id"] == "rev-fwd-letter-1@se.example"
    ((reason),) = answer["reasons"]
    assert reason["code"] == "operator-suspended" and "Mailbox AB" in reason["text"] and "paper" in reason["text"]
    assert answer["recipient"] == PERSON and answer["operator"]["id"] == "AP-BE-0115"
    assert answer["operator"]["certificate_sha256"] == _sha256(CERTS / "partner-115.pem")  # the router signed it
    failed = await pair.be.message("fwd-letter-1@se.example")
    assert failed["state"] == "failed" and "operator-suspended" in json.dumps(failed)
    # The job again (a redelivery after a crash, say) is the same answer: a duplicate, never a second one.
    assert pair.be.app is not None
    await pair.be.app[INBOUND].replies.not_forwarded("fwd-letter-1@se.example", "operator-suspended", "again")
    replies = await pair.se.messages(direction="in", ref_to_message_id="letter-1@se.example")
    assert [m["message_id"] for m in replies] == ["rev-fwd-letter-1@se.example"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)).hexdigest()


def test_the_refusal_of_a_forward_carries_the_reason_the_sender_is_told() -> None:
    """operator_standing's refusal is a NotForwarded whose reason is the code of the sender's answer."""
    from accesspoint.routing.decision import operator_standing

    suspended = operator_standing(OPERATOR.id, replace(OPERATOR, status=OperatorStatus.SUSPENDED))
    assert isinstance(suspended, NotForwarded) and suspended.reason == "operator-suspended"
    assert suspended.code == "EBMS:0004" and suspended.detail.startswith("operator-suspended: ")
    gone = operator_standing(OPERATOR.id, None)
    assert gone is not None and gone.reason == "no-operator"


async def test_a_routed_letter_keeps_one_trace_id_from_the_sender_through_the_router_to_the_operator(
    pair_factory: Callable[..., Pair], tmp_path: Path
) -> None:
    """With tracing.partners on every access point, the sender's send, the router's reception and forward, and the
    operator's access point's reception are spans of one trace."""
    pair = pair_factory()
    far_url, far = await _far_with_person(tmp_path)
    port = services.free_port()
    operator = Node(tmp_path / "op", port, settings("mailbox-operator", SE_KEY, port), pair.clock)
    await far.put_operator(replace(OPERATOR, endpoint=f"{operator.base}/as4"), actor="test")
    await far.engine.dispose()
    router = _router_pmodes(pair)
    operator.write_pmodes(
        {**router, "self": "mailbox-operator", "pmodes": [p for p in router["pmodes"] if p["id"] == "be-to-operator"]}
    )
    router["parties"]["mailbox-operator"]["endpoint"] = "dynamic"
    pair.be.write_pmodes(router)
    (operator.folder / "data").mkdir()
    shutil.copy(pair.be.folder / "data" / "accesspoint.db", operator.folder / "data" / "accesspoint.db")
    routing = {"far": {"database": far_url}, "pmodes": ["se-be-request-reply"], "forward_pmode": "be-to-operator",
               "sender_binding": False}  # fmt: skip
    pair.configure(pair.be, routing=routing, tracing={"partners": True})
    pair.configure(pair.se, tracing={"partners": True})
    operator_settings = json.loads((operator.folder / "server.yaml").read_text())
    (operator.folder / "server.yaml").write_text(json.dumps({**operator_settings, "tracing": {"partners": True}}))
    sender, routed, received = _tracing(pair.se), _tracing(pair.be), _tracing(operator)
    await operator.start()
    try:
        await pair.be.start()
        await pair.se.start()
        letter = submission("se-be-request-reply", b"<letter/>", "traced@se.example")
        letter["properties"] = {"finalRecipient": PERSON, "originalSender": f"0007:{SENDER}"}
        assert (await pair.se.api("POST", "/api/v1/messages", letter))[0] == 202
        await pair.be.until("fwd-traced@se.example", {"delivered"})
    finally:
        await operator.stop()
    (send,) = _spans(sender, "as4.send")
    (reception,) = _spans(routed, "as4.receive")
    (forward,) = _spans(routed, "as4.send")
    (arrival,) = _spans(received, "as4.receive")
    assert len({_trace_id(span) for span in (send, reception, forward, arrival)}) == 1
