"""Prometheus metrics for every service: one registry per application, exposed on the admin listener only.

A service makes a :class:`Metrics` when its application is made and declares its series on it (``counter``,
``gauge``, ``histogram``); :func:`http_metrics_middleware` counts every request by route template (never by
path, so ids in URLs never become labels). Gauges whose value lives elsewhere (rows waiting in a database,
certificate dates) are set by *refreshers*: coroutines run just before each scrape, each bounded by a timeout so
a slow database cannot hang Prometheus.

Several worker processes: set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) and each
scrape adds up the series every process wrote there; gauges then say how they combine (``multiprocess_mode``).

Labels are bounded by construction: P-Mode ids, party names from the P-Mode files, outcomes and ebMS codes from
fixed tables; never a message id, a conversation id or a person number.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from accesspoint.servicekit.tracing import route_label

log = logging.getLogger("accesspoint.servicekit.metrics")

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
REFRESH_TIMEOUT = 5.0  # seconds a scrape waits for the refreshers before it answers with what it has
# Seconds: from a fast in-memory lookup to a slow partner (the send timeout defaults to 30 s).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

Refresher = Callable[[], Awaitable[None]]
_Series = TypeVar("_Series", bound="_LabelCache")


class _LabelCache:
    """``labels(...)`` answered from a dict keyed by the values as given.

    prometheus-client checks the label names, turns every value into a string and takes a lock on each call before
    it finds the child; several series are counted per message, so the child is looked up once per label tuple.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._children: dict[tuple[tuple[object, ...], tuple[tuple[str, object], ...]], Any] = {}

    def labels(self: _Series, *labelvalues: object, **labelkwargs: object) -> _Series:
        key = (labelvalues, tuple(labelkwargs.items()))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc]
        return child  # type: ignore[no-any-return]

    def remove(self, *labelvalues: object) -> None:
        self._children.clear()
        super().remove(*labelvalues)  # type: ignore[misc]

    def clear(self) -> None:
        self._children.clear()
        super().clear()  # type: ignore[misc]


class _Counter(_LabelCache, Counter):
    pass


class _Gauge(_LabelCache, Gauge):
    pass


class _Histogram(_LabelCache, Histogram):
    pass


class Metrics:
    """One service's series in its own registry (two services in one process, as in tests, never collide)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        self.refreshers: list[Refresher] = []
        self.http_requests = self.counter(
            "http_requests_total", "HTTP requests by route template, method, status", ("route", "method", "status")
        )
        self.http_duration = self.histogram(
            "http_request_duration_seconds", "Time to answer an HTTP request, by route template", ("route",)
        )

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter (``name`` ends in ``_total``, as Prometheus names counters)."""
        return _Counter(name.removesuffix("_total"), documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = (), *, combine: str = "max") -> Gauge:
        """A gauge; ``combine`` is how several processes' values add up (prometheus-client's multiprocess_mode)."""
        return _Gauge(name, documentation, labels, registry=self.registry, multiprocess_mode=combine)

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str] = (), buckets: Sequence[float] = DURATION_BUCKETS
    ) -> Histogram:
        """A histogram of seconds (or of ``buckets`` given)."""
        return _Histogram(name, documentation, labels, registry=self.registry, buckets=buckets)

    def refresh_with(self, refresher: Refresher) -> None:
        """Run ``refresher`` before each scrape (it sets gauges from where their values live)."""
        self.refreshers.append(refresher)

    async def refresh(self) -> None:
        """Run every refresher, each bounded; a failing one is logged and leaves its gauges as they were."""
        for refresher in self.refreshers:
            try:
                await asyncio.wait_for(refresher(), REFRESH_TIMEOUT)
            except Exception as exc:  # the scrape still answers: stale gauges beat no metrics at all
                log.warning("%s: a metrics refresher failed: %s: %s", self.service, type(exc).__name__, exc)

    def exposition(self) -> bytes:
        """The text exposition format: this registry's series, or every process's in multiprocess mode."""
        if os.environ.get(MULTIPROCESS_ENV):
            gathered = CollectorRegistry()
            MultiProcessCollector(gathered)  # type: ignore[no-untyped-call]
            return generate_latest(gathered)
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """GET /metrics (the admin application checks the caller first)."""
        await self.refresh()
        body = await asyncio.to_thread(self.exposition) if os.environ.get(MULTIPROCESS_ENV) else self.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@contextmanager
def timed(histogram: Histogram, **labels: str) -> Iterator[None]:
    """Observe the seconds the block took (also when it raises)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        (histogram.labels(**labels) if labels else histogram).observe(time.perf_counter() - start)


def http_metrics_middleware(metrics: Metrics) -> Middleware:
    """Count and time every request by route template, method and status (an HTTPException counts too)."""

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_label(request)
            method = request.method if request.method in _METHODS else "other"
            metrics.http_requests.labels(route=route, method=method, status=str(status)).inc()
            metrics.http_duration.labels(route=route).observe(time.perf_counter() - start)

    return middleware


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
