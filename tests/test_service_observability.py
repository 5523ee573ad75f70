"""Every service watched the same way: FaR's and the SMP's /metrics on their admin listeners, the toolkit's settings,
JSON log lines and OTLP export by the standard variables."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from accesspoint.servicekit.httpclient import fetch, new_session
from accesspoint.servicekit.logs import JsonFormatter, LogType, log_context
from accesspoint.servicekit.observability import AdminSettings, Observability, read_observability
from accesspoint.servicekit.settings import SettingsError, SettingsReader
from accesspoint.servicekit.tokens import BearerToken, scopes
from accesspoint.servicekit.tracing import extract, trace_id_of, tracer_for
from accesspoint.testing import services
from accesspoint.testing.smp import DOCUMENT, PARTICIPANT, metadata, publish
from accesspoint.testing.smp import settings as smp_settings
from far.app import create_app
from far.settings import FarSettings
from far.settings import load_settings as load_far_settings
from smp.identifiers import Identifier
from smp.server import serve as serve_smp
from tests.conftest import REPO
from tests.test_far_support import SENDER, make_service, seed_people

SCRAPER = "prometheus-scraper-0123456789"
Client = Callable[..., Awaitable[TestClient[Any, Any]]]


def _admin() -> Observability:
    token = BearerToken("prometheus", SCRAPER, scopes("metrics"))
    return Observability(admin=AdminSettings(port=services.free_port(), tokens=(token,)))


async def _scrape(admin: AdminSettings) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    headers = {"Authorization": f"Bearer {SCRAPER}"}
    url = f"http://127.0.0.1:{admin.port}/metrics"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as answer:
        assert answer.status == 200
        text = await answer.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_far_counts_each_recipient_answer_by_question_and_reason(aiohttp_client: Client, tmp_path: Path) -> None:
    """One isReachable question over three recipients counts one per answer and one timed question."""
    far = await make_service(tmp_path / "far.db")
    await seed_people(far)
    observability = _admin()
    settings = FarSettings(tokens=(BearerToken("r", "reader-token-0123456789", scopes("read")),),
                           observability=observability)  # fmt: skip
    client = await aiohttp_client(create_app(settings, service=far))
    body = {"sender": SENDER, "recipients": ["197802022389", "199001302380", "ES/SE/1"]}
    reader = {"Authorization": "Bearer reader-token-0123456789"}
    answer = await client.post("/api/v1/reachable", json=body, headers=reader)
    assert answer.status == 200
    assert observability.admin is not None
    samples = await _scrape(observability.admin)
    for reply in ("reachable", "sender-refused", "no-mailbox"):
        assert samples[("far_lookups_total", frozenset({("question", "reachable"), ("answer", reply)}))] == 1
    assert samples[("far_is_reachable_duration_seconds_count", frozenset({("question", "reachable")}))] == 1
    route = frozenset({("route", "/api/v1/reachable"), ("method", "POST"), ("status", "200")})
    assert samples[("http_requests_total", route)] == 1
    await far.engine.dispose()


async def test_smp_counts_signed_answers_and_cache_hits(tmp_path: Path) -> None:
    """The first read of a ServiceMetadata is signed (a miss), the second comes from the cache (a hit)."""
    port = services.free_port()
    settings = dataclasses.replace(smp_settings(tmp_path, port), observability=_admin())
    running, store = await serve_smp(settings)
    try:
        base = f"http://127.0.0.1:{port}"
        await publish(f"{base}/oasis", metadata("https://ap.example/as4"))
        participant, document = Identifier.parse(PARTICIPANT), Identifier.parse(DOCUMENT)
        url = f"{base}/oasis/{participant.url_segment()}/services/{document.url_segment()}"
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.get(url) as answer:
                    assert answer.status == 200
        assert settings.observability.admin is not None
        samples = await _scrape(settings.observability.admin)
        assert samples[("smp_answers_total", frozenset({("flavour", "oasis1"), ("cache", "miss")}))] == 1
        assert samples[("smp_answers_total", frozenset({("flavour", "oasis1"), ("cache", "hit")}))] == 1
        assert samples[("smp_signing_duration_seconds_count", frozenset())] == 1
    finally:
        await running.stop()
        await store.close()


def _read(values: dict[str, Any]) -> tuple[Observability, list[str]]:
    reader = SettingsReader()
    observability = read_observability(reader.section(values, "far.toml: far"))
    return observability, reader.mistakes


def test_admin_listener_needs_tokens_and_settings_mistakes_name_their_field(tmp_path: Path) -> None:
    """An admin table without tokens, an unknown log level or format and a token without a known scope are named."""
    _, mistakes = _read({"admin": {"port": 9464}, "logging": {"level": "loud", "format": "xml"}})
    assert any(m.startswith("far.toml: far.admin.tokens: required") for m in mistakes)
    assert any(m.startswith("far.toml: far.logging.level:") for m in mistakes)
    assert any(m.startswith("far.toml: far.logging.format:") for m in mistakes)
    bad_scope = {"admin": {"tokens": [{"name": "p", "token": SCRAPER, "scopes": ["write"]}]}}
    assert any("far.admin.tokens[0].scopes" in m for m in _read(bad_scope)[1])
    fine, none = _read({"admin": {"tokens": [SCRAPER]}, "logging": {"level": "DEBUG"}, "tracing": {"partners": True}})
    assert none == [] and fine.log_level == logging.DEBUG and fine.trace_partners
    config = tmp_path / "far.toml"
    config.write_text("[far]\n[far.admin]\nport = 9464\n")
    with pytest.raises(SettingsError, match=r"far\.admin\.tokens"):
        load_far_settings(config)


def test_json_log_line_carries_the_context_and_never_extras() -> None:
    """A line is one JSON object with the log context and type; a secret passed as an extra is not written."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("accesspoint.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with log_context(message_id="m-1@se", conversation_id="c-1"):
            logger.warning("refused %s", "m-1@se", extra={"log_type": LogType.SECURITY, "authorization": "Bearer s3"})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "refused m-1@se" and first["level"] == "warning" and first["log_type"] == "security"
    assert (first["message_id"], first["conversation_id"]) == ("m-1@se", "c-1")
    assert "s3" not in stream.getvalue() and "trace_id" not in first
    assert "message_id" not in second and second["log_type"] == "business"
    with pytest.raises(ValueError, match="payload"), log_context(payload="x"):
        pass


@pytest.fixture
async def otlp_receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A local OTLP/HTTP receiver: its base URL and the export requests it took."""
    received: list[bytes] = []

    async def traces(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.router.add_post("/v1/traces", traces)
    server = TestServer(app, host="127.0.0.1", port=services.free_port())
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}", received
    await server.close()


EXPORTING = """
from accesspoint.servicekit.tracing import configure_tracing, tracer_for
from opentelemetry import trace
assert configure_tracing("accesspoint")
with tracer_for("accesspoint.msh").start_as_current_span("as4.send"):
    pass
trace.get_tracer_provider().shutdown()
"""


async def test_spans_go_to_an_otlp_receiver_named_by_the_standard_variables(
    otlp_receiver: tuple[str, list[bytes]],
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, a serving process exports its spans over OTLP/HTTP with its name."""
    url, received = otlp_receiver
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": url, "OTEL_SERVICE_NAME": "ap-sweden"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", EXPORTING, cwd=REPO, env=environment, stderr=subprocess.PIPE
    )
    _, errors = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, errors.decode()
    (body,) = received
    request = ExportTraceServiceRequest.FromString(body)
    (resource,) = request.resource_spans
    names = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert names["service.name"] == "ap-sweden"
    assert [s.name for scope in resource.scope_spans for s in scope.spans] == ["as4.send"]


async def test_outbound_calls_carry_the_current_trace_unless_told_not_to() -> None:
    """fetch adds the current span's traceparent; with trace=False none goes out, not even one the caller set."""
    seen: list[str | None] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", echo)
    server = TestServer(app, host="127.0.0.1", port=services.free_port())
    await server.start_server()
    provider = TracerProvider()
    url = f"http://127.0.0.1:{server.port}/"
    try:
        async with new_session(timeout=5) as http:
            with provider.get_tracer("test").start_as_current_span("caller") as span:
                await fetch(http, "GET", url, max_bytes=100)
                forged = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
                await fetch(http, "GET", url, max_bytes=100, headers=forged, trace=False)
    finally:
        await server.close()
    assert seen[0] is not None and seen[0].split("-")[1] == trace_id_of(span)
    assert seen[1] is None



def test_without_an_sdk_a_span_continues_a_callers_trace_and_is_invalid_otherwise() -> None:
    """With no SDK installed, a span under a caller's traceparent carries its trace id; one without is invalid."""
    from opentelemetry import trace

    tracer = tracer_for("test")
    caller = extract({"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
    with tracer.start_as_current_span("continued", context=caller):
        assert trace_id_of() == "0af7651916cd43dd8448eb211c80319c"
        with tracer.start_as_current_span("inner"):
            assert trace_id_of() == "0af7651916cd43dd8448eb211c80319c"
    with tracer.start_as_current_span("alone") as span:
        assert span is trace.INVALID_SPAN and trace_id_of() is None


COUNTING = """
import sys
from accesspoint.servicekit.metrics import Metrics
metrics = Metrics("worker")
metrics.counter("jobs_total", "jobs done").inc(int(sys.argv[1]))
if sys.argv[2:] == ["expose"]:
    print(metrics.exposition().decode())
"""


def test_several_worker_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR two processes' counts (2 and 3) are scraped as one series of 5."""
    environment = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", COUNTING, "2"], cwd=REPO, env=environment, check=True, timeout=60)
    exposed = subprocess.run(
        [sys.executable, "-c", COUNTING, "3", "expose"], cwd=REPO, env=environment, check=True, timeout=60,
        capture_output=True,
    ).stdout.decode()  # fmt: skip
    totals = [s.value for f in text_string_to_metric_families(exposed) for s in f.samples if s.name == "jobs_total"]
    assert totals == [5.0]
