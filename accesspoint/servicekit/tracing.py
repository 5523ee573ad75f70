"""OpenTelemetry traces: spans around what a service does, W3C ``traceparent`` in and out, off unless configured.

The services speak only the OpenTelemetry API (a light dependency): without a configured SDK every span is a
no-op that costs a function call. :func:`configure_tracing` installs the SDK with the OTLP/HTTP exporter when the
standard variables ask for it (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp``; ``OTEL_SDK_DISABLED=true`` wins); the SDK and exporter come with the ``otel``
extra (``pip install accesspoint[otel]``).

Propagation is W3C Trace Context only (``traceparent``, ``tracestate``; never baggage, which may carry anything):
:func:`trace_middleware` continues a caller's trace on the REST APIs, :func:`inject` adds the current one to an
outbound request (``servicekit.httpclient`` does, unless told not to). An AS4 partner is another organisation:
the access point sends or takes a trace from one only when its ``tracing.partners`` setting says so.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager, nullcontext

from aiohttp import web
from aiohttp.typedefs import Middleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    Status,
    StatusCode,
    Tracer,
    TracerProvider,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util import types

log = logging.getLogger("accesspoint.servicekit.tracing")

W3C = TraceContextTextMapPropagator()
TRACE_HEADERS = frozenset(W3C.fields)  # traceparent, tracestate


def route_label(request: web.Request) -> str:
    """A request's route template (``/api/v1/messages/{id}``), never its path: bounded whatever the URL holds
    (metric labels and span names alike)."""
    resource = request.match_info.route.resource
    if resource is None:
        return "unmatched"
    return resource.canonical or "unmatched"


def tracer_for(name: str, provider: TracerProvider | None = None) -> Tracer:
    """The tracer a component uses: from ``provider`` (tests pass their own) or the process's."""
    if provider is not None:
        return provider.get_tracer(name)
    return _ProcessTracer(trace.get_tracer_provider().get_tracer(name))


# What a span is while no SDK records it and no caller's trace is being continued: the API's no-op tracer would
# build a span, a context and three context managers for it (some 16 per message on the AS4 path).
_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)
_NO_SDK = (ProxyTracerProvider, NoOpTracerProvider)


class _ProcessTracer(Tracer):
    """The process's tracer, with a shortcut for the common case of tracing off: a span that nothing would record
    and that continues no trace is the invalid span, at the cost of two look-ups. Where the SDK is installed (also
    after this tracer was made) or a caller's ``traceparent`` is being continued, the API's tracer does the work,
    so trace ids still reach the logs and outbound requests."""

    def __init__(self, inner: Tracer) -> None:
        self._inner = inner

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: trace._Links = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        return self._inner.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )

    def start_as_current_span(  # type: ignore[override]  # a context manager, as the API's decorator makes it
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: trace._Links = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> AbstractContextManager[Span]:
        if (
            isinstance(trace.get_tracer_provider(), _NO_SDK)
            and not trace.get_current_span(context).get_span_context().is_valid
        ):
            return _NO_SPAN
        return self._inner.start_as_current_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception, end_on_exit
        )


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace (``traceparent``, ``tracestate``) to outbound headers; nothing when there is none."""
    W3C.inject(headers)


def extract(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context a request's ``traceparent`` names (an empty context when it names none or is malformed)."""
    return W3C.extract(headers)


def trace_id_of(span: trace.Span | None = None) -> str | None:
    """The current span's (or ``span``'s) trace id in hex, as logs and ``traceparent`` write it; None when none."""
    context = (span or trace.get_current_span()).get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def failed(span: trace.Span, error: BaseException | str) -> None:
    """Mark a span as failed with a short reason (never a payload)."""
    span.set_status(Status(StatusCode.ERROR, str(error)[:200]))


class Handoffs:
    """Trace contexts handed from where work is queued (a submission) to where it is done (a send worker), within
    one process: the worker's span continues the submitter's trace. Bounded, oldest dropped first; work taken up
    after a restart or by another instance starts a trace of its own."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._kept: OrderedDict[str, trace.SpanContext] = OrderedDict()

    def keep(self, key: str) -> None:
        """Remember the current span's context for ``key`` (nothing when there is no trace)."""
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return
        self._kept[key] = context
        self._kept.move_to_end(key)
        while len(self._kept) > self.limit:
            self._kept.popitem(last=False)

    def context(self, key: str) -> otel_context.Context | None:
        """The context to start ``key``'s work in (every attempt of it), or None when none was kept."""
        kept = self._kept.get(key)
        return None if kept is None else trace.set_span_in_context(trace.NonRecordingSpan(kept))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def trace_middleware(tracer: Tracer, *, continues: Callable[[web.Request], bool] = lambda _: True) -> Middleware:
    """A server span per request named by its route template; the caller's ``traceparent`` is continued when
    ``continues(request)`` (the access point's /as4 continues a partner's only when allowed)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        parent = extract(request.headers) if continues(request) else otel_context.Context()
        route = route_label(request)
        with tracer.start_as_current_span(
            f"{request.method} {route}", context=parent, kind=SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        ) as span:  # fmt: skip
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                span.set_attribute("http.response.status_code", exc.status)
                raise
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            return response

    return middleware


def _wanted() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return bool(endpoint) or exporter == "otlp"


def configure_tracing(service_name: str) -> bool:
    """Install the SDK exporting over OTLP/HTTP when the ``OTEL_*`` variables ask for it; whether it did.

    Called once per process by a serving command (OpenTelemetry's provider is per process); the exporter reads
    its endpoint, headers and timeouts from the same variables. Spans go out in batches, off the event loop.
    """
    if not _wanted():
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("OTEL_* asks for traces but the OpenTelemetry SDK is missing (pip install accesspoint[otel])")
        return False
    name = os.environ.get("OTEL_SERVICE_NAME") or service_name  # the standard variable names the service first
    provider = SdkTracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting spans of %s over OTLP", service_name)
    return True
