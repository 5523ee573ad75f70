"""The access point watched from outside: /metrics on its admin listener, JSON logs, traces across two peers."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from accesspoint.core.errors import ErrorCode
from accesspoint.core.namespaces import SoapVersion
from accesspoint.msh.metrics import MshMetrics
from accesspoint.routing.outbound import RouteRecords
from accesspoint.routing.settings import parse_routing
from accesspoint.routing.shell import FarLookupMetrics, Routing
from accesspoint.security.keys import KeyPair, load_key_pair
from accesspoint.servicekit.logs import JsonFormatter
from accesspoint.store import Database
from accesspoint.store.routes import RouteTargets
from accesspoint.testing import services
from tests.inmemory import Node, Pair, eventually
from tests.test_msh import CERTS
from tests.test_msh_exchange import pull_request_from
from tests.test_msh_support import error_codes, submission
from tests.test_routing import PERSON, SENDER

SCRAPER = "prometheus-scraper-0123456789"
STATUS_ONLY = "status-only-token-0123456789"
SOAP12 = f"{SoapVersion.V12.content_type}; charset=UTF-8"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _stranger() -> KeyPair:
    """Sweden's key: a signer Belgium's pull leg does not expect."""
    return load_key_pair(CERTS / "ap-sweden-sign.key.pem", None, certificate=CERTS / "ap-sweden-sign.pem")


def _with_admin(pair: Pair, node: Node, **extra: object) -> str:
    """Give a node an admin listener on a free port; its /metrics URL."""
    port = services.free_port()
    tokens = [{"name": "prometheus", "token": SCRAPER, "scopes": ["metrics"]},
              {"name": "status", "token": STATUS_ONLY, "scopes": ["status"]}]  # fmt: skip
    pair.configure(node, admin={"host": "127.0.0.1", "port": port, "tokens": tokens}, **extra)
    return f"http://127.0.0.1:{port}/metrics"


async def _scrape(url: str, token: str = SCRAPER) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
        return answer.status, await answer.text()


async def _status(url: str, token: str = STATUS_ONLY) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
        return answer.status, await answer.json(content_type=None)


def _samples(text: str) -> Samples:
    """Every sample of an exposition by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


async def test_metrics_count_the_exchange_by_pmode_partner_and_result(pair_factory: Callable[..., Pair]) -> None:
    """A delivered message counts once as sent on Sweden and once as received on Belgium, without ids in labels."""
    pair = pair_factory()
    se_metrics, be_metrics = _with_admin(pair, pair.se), _with_admin(pair, pair.be)
    await pair.be.start()
    await pair.se.start()
    status, _ = await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<letter/>", "m1@se"))
    assert status == 202
    assert (await pair.se.until("m1@se", {"delivered", "failed"}))["state"] == "delivered"

    status, text = await _scrape(be_metrics)
    assert status == 200
    received = _samples(text)
    labels = {"pmode": "se-to-be", "partner": "ap-sweden"}
    assert _value(received, "as4_messages_received_total", **labels, result="received") == 1
    assert _value(received, "as4_receive_duration_seconds_count") == 1
    assert _value(received, "as4_security_duration_seconds_count", operation="verify") == 1
    assert _value(received, "as4_messages_pending", state="received") == 1  # not yet fetched by a backend
    assert _value(received, "as4_messages_pending_oldest_timestamp_seconds", state="received") > 1.7e9
    own = _value(received, "as4_certificate_not_after_timestamp_seconds", usage="signing", name="AP-BE-0115")
    assert own > 1.7e9  # the certificate's not-after, a Unix time

    sent = _samples((await _scrape(se_metrics))[1])
    assert _value(sent, "as4_messages_sent_total", pmode="se-to-be", partner="partner-115", result="delivered") == 1
    assert _value(sent, "as4_send_attempts_total", pmode="se-to-be", partner="partner-115", outcome="receipt") == 1
    assert _value(sent, "as4_send_duration_seconds_count", partner="partner-115") == 1
    assert _value(sent, "http_requests_total", route="/api/v1/messages", method="POST", status="202") == 1
    assert all("m1@se" not in value for _, labels in sent for _, value in labels)
    assert _value(sent, "as4_last_delivery_timestamp_seconds", partner="partner-115") > 1.7e9

    status, report = await _status(se_metrics.replace("/metrics", "/status"))
    assert status == 200
    assert (report["ok"], report["database"]) == (True, "ok")
    assert report["queues"]["by_state"]["awaiting_receipt"] == {"count": 0, "oldest": None}
    assert report["queues"]["oldest_pending"] is None
    (partner,) = [p for p in report["partners"] if p["partner"] == "partner-115"]
    assert partner["last_delivered"] is not None and "se-to-be" in partner["pmodes"]
    (partner_certificate,) = [c for c in report["certificates"] if c["use"] == "party partner-115: signing"]
    assert partner_certificate["status"] == ("ok" if partner_certificate["days_left"] > 60 else "expiring")


async def test_refusals_count_their_ebms_error_code_and_security_ones_go_to_the_security_log(
    pair_factory: Callable[..., Pair],
) -> None:
    """A body that is no AS4 message and a PullRequest signed by a stranger are counted under their codes; only the
    failed authentication is logged as security."""
    pair = pair_factory()
    be_metrics = _with_admin(pair, pair.be)
    await pair.be.start()
    with _json_lines("accesspoint.msh") as stream:
        _, content_type, body = await pair.be.post_as4(b"<not-a-soap-envelope/>", SOAP12)
        (malformed,) = error_codes(content_type, body)
        _, content_type, body = await pair.be.post_as4(pull_request_from(_stranger()), SOAP12)
        (forged,) = error_codes(content_type, body)
    assert forged == ErrorCode.FAILED_AUTHENTICATION.code and malformed != forged
    samples = _samples((await _scrape(be_metrics))[1])
    for code in (malformed, forged):
        assert _value(samples, "as4_ebms_errors_total", code=code, direction="sent") == 1
    refusals = [json.loads(line) for line in stream.getvalue().splitlines()]
    kinds = {line["message"].split(": ")[1].split(" ")[0]: line["log_type"] for line in refusals}
    assert kinds[forged] == "security" and kinds[malformed] == "business", refusals


async def test_metrics_answer_only_to_a_token_with_the_metrics_scope_and_only_on_the_admin_listener(
    pair_factory: Callable[..., Pair],
) -> None:
    """No token is 401, a token without the metrics (or status) scope 403, and the AS4 listener has neither
    /metrics nor /status."""
    pair = pair_factory()
    url = _with_admin(pair, pair.be)
    await pair.be.start()
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as answer:
            assert answer.status == 401 and answer.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.get(pair.be.base + "/metrics", headers={"Authorization": f"Bearer {SCRAPER}"}) as answer:
            assert answer.status == 404
        async with http.get(pair.be.base + "/status", headers={"Authorization": f"Bearer {STATUS_ONLY}"}) as answer:
            assert answer.status == 404
    assert (await _status(url.replace("/metrics", "/status")))[0] == 200
    assert (await _scrape(url, STATUS_ONLY))[0] == 403
    assert (await _status(url.replace("/metrics", "/status"), SCRAPER))[0] == 403
    assert (await _scrape(url, "not-a-configured-token-000"))[0] == 401


@contextmanager
def _json_lines(logger: str) -> Iterator[io.StringIO]:
    """What ``logger`` writes at INFO, one JSON object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        target.removeHandler(handler)
        target.setLevel(level)


def _tracing(node: Node) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    node.tracer_provider = provider
    return exporter


def _spans(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def _trace_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return format(span.context.trace_id, "032x")


async def test_log_lines_are_json_with_the_message_id_conversation_id_and_trace_id(
    pair_factory: Callable[..., Pair],
) -> None:
    """The receiver's line about a received message is valid JSON naming its message id, conversation and trace."""
    pair = pair_factory()
    exporter = _tracing(pair.be)
    await pair.be.start()
    await pair.se.start()
    with _json_lines("accesspoint.msh") as stream:
        request = submission("se-to-be", b"<letter/>", "logged@se", conversation_id="conv-7")
        assert (await pair.se.api("POST", "/api/v1/messages", request))[0] == 202
        await pair.be.until("logged@se", {"received"}, direction="in")
        await pair.se.until("logged@se", {"delivered"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (received,) = [line for line in lines if line["message"].startswith("received logged@se")]
    assert received["message_id"] == "logged@se" and received["conversation_id"] == "conv-7"
    assert received["level"] == "info" and received["log_type"] == "business"
    (span,) = _spans(exporter, "as4.receive")
    assert received["trace_id"] == _trace_id(span)
    assert "<letter/>" not in stream.getvalue() and "PGxldHRlci8+" not in stream.getvalue()  # never the payload


async def test_trace_id_reaches_the_partner_only_when_tracing_partners_allows_it(
    pair_factory: Callable[..., Pair],
) -> None:
    """The partner's receive span continues the sender's trace only when both sides' tracing.partners allow it:
    the sender's setting keeps traceparent off the wire, the receiver's keeps one that arrives from being used."""
    for sends, takes in ((True, True), (True, False), (False, True)):
        pair = pair_factory()
        pair.configure(pair.se, tracing={"partners": sends})
        pair.configure(pair.be, tracing={"partners": takes})
        sender, receiver = _tracing(pair.se), _tracing(pair.be)
        await pair.be.start()
        await pair.se.start()
        message_id = f"traced-{sends}-{takes}@se"
        assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<l/>", message_id)))[0] == 202
        assert (await pair.se.until(message_id, {"delivered", "failed"}))["state"] == "delivered"
        (send,) = _spans(sender, "as4.send")
        (post,) = _spans(sender, "as4.post")
        (receive,) = _spans(receiver, "as4.receive")
        assert _trace_id(post) == _trace_id(send)
        assert {s.name for s in sender.get_finished_spans()} >= {"as4.secure", "as4.receipt_check"}
        assert (_trace_id(receive) == _trace_id(send)) is (sends and takes), (sends, takes)
        await pair.stop()


async def test_one_trace_id_from_the_backends_call_through_the_send_to_the_partner(
    pair_factory: Callable[..., Pair],
) -> None:
    """A submission carrying a W3C traceparent is served, sent and (partners allowed) received in the caller's
    trace."""
    pair = pair_factory()
    for node in (pair.se, pair.be):
        pair.configure(node, tracing={"partners": True})
    sender, receiver = _tracing(pair.se), _tracing(pair.be)
    await pair.be.start()
    await pair.se.start()
    assert pair.se.http is not None
    headers = {"Authorization": "Bearer test-token-0123456789abcdef", "traceparent": TRACEPARENT}
    body = submission("se-to-be", b"<l/>", "rest@se")
    async with pair.se.http.post(pair.se.base + "/api/v1/messages", json=body, headers=headers) as answer:
        assert answer.status == 202
    assert (await pair.se.until("rest@se", {"delivered", "failed"}))["state"] == "delivered"
    caller = TRACEPARENT.split("-")[1]
    (served,) = _spans(sender, "POST /api/v1/messages")
    (send,) = _spans(sender, "as4.send")
    (receive,) = _spans(receiver, "as4.receive")
    assert _trace_id(served) == _trace_id(send) == _trace_id(receive) == caller


async def test_the_routers_far_questions_are_counted_by_outcome_and_traced(tmp_path: Path) -> None:
    """An answered FaR question counts as not-reachable, an unreachable FaR as unavailable; each has a span."""
    metrics, exporter = MshMetrics(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observed = FarLookupMetrics(metrics.far_lookups, metrics.far_duration, provider.get_tracer("test"))
    records = RouteRecords(RouteTargets(Database(f"sqlite:///{tmp_path / 'unused.db'}")))
    down = f"http://127.0.0.1:{services.free_port()}"  # nobody listens there
    for far in ({"database": "sqlite+aiosqlite:///far.db"}, down):
        settings = parse_routing(tmp_path, {"far": far, "timeout": "2s"}, "routing")
        routing = Routing(None, records, routing=settings, far_metrics=observed)
        try:
            assert routing.far is not None
            await routing.far.is_reachable(SENDER, PERSON)
        finally:
            await routing.close()
    for outcome in ("not-reachable", "unavailable"):
        assert metrics.registry.get_sample_value("as4_far_lookups_total", {"outcome": outcome}) == 1
    assert metrics.registry.get_sample_value("as4_far_lookup_duration_seconds_count") == 2
    assert len(_spans(exporter, "far.is_reachable")) == 2


async def test_a_webhook_event_carries_the_trace_of_the_message_it_is_about(pair_factory: Callable[..., Pair]) -> None:
    """Belgium's message-received webhook goes out with the traceparent of the reception it announces."""
    pair = pair_factory()
    heard: list[str | None] = []

    async def backend(request: web.Request) -> web.Response:
        heard.append(request.headers.get("traceparent"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", backend)
    server = TestServer(app, host="127.0.0.1", port=services.free_port())
    await server.start_server()
    try:
        hook = {"url": f"http://127.0.0.1:{server.port}/hook", "events": ["message-received"],
                "secret": "webhook-secret-0123456789"}  # fmt: skip
        pair.configure(pair.be, webhooks=[hook])
        receiver = _tracing(pair.be)
        await pair.be.start()
        await pair.se.start()
        assert (await pair.se.api("POST", "/api/v1/messages", submission("se-to-be", b"<l/>", "hook@se")))[0] == 202
        await pair.se.until("hook@se", {"delivered"})
        await eventually(lambda: _heard(heard), bool, "the webhook")
    finally:
        await server.close()
    (receive,) = _spans(receiver, "as4.receive")
    (traceparent,) = heard
    assert traceparent is not None and traceparent.split("-")[1] == _trace_id(receive)


async def _heard(heard: list[str | None]) -> list[str | None]:
    return heard
