"""Prometheus metrics of one app, in a registry of its own so tests and several apps never share series.

Labels are bounded on purpose: routes are the router's templates (unmatched paths share one label),
methods are the ones HTTP defines, and operation names are clients' words, so only the first
`MAX_OPERATION_NAMES` distinct ones get a series of their own.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schema.metrics import OperationOutcome
from services.instances.records import StatusChanged

if TYPE_CHECKING:
    from services.kubernetes.watch import WatchHealth

logger = logging.getLogger(__name__)

MAX_OPERATION_NAMES = 200
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,99}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Requests are fast; subscriptions and Semaphore's calls are not measured by the same scale.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STARTED = "opencsp.started"


class Metrics:
    """Every series the gateway exports; `registry` is what `/metrics` serves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._operation_names: set[str] = set()
        r = self.registry
        self.http_requests = Counter(
            "opencsp_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.http_latency = Histogram(
            "opencsp_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.operations = Counter(
            "opencsp_graphql_operations",
            "GraphQL operations by name ('anonymous' without one) and outcome.",
            ["operation", "outcome"],
            registry=r,
        )
        self.operation_latency = Histogram(
            "opencsp_graphql_operation_duration_seconds",
            "Time from parsing to result of a query or mutation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.websockets = Gauge("opencsp_websocket_connections", "Open websocket connections.", registry=r)
        self.subscriptions_active = Gauge(
            "opencsp_graphql_subscriptions", "GraphQL subscriptions being served.", registry=r
        )
        self.transitions = Counter(
            "opencsp_instance_transitions",
            "Instance status changes this process committed, by the status reached.",
            ["to_status"],
            registry=r,
        )
        self.upstream_started = Counter(
            "opencsp_upstream_requests_started",
            "Requests sent to a peer; those without a response failed in transport.",
            ["peer"],
            registry=r,
        )
        self.upstream_responses = Counter(
            "opencsp_upstream_responses",
            "Responses from a peer, by status class.",
            ["peer", "status"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "opencsp_upstream_request_duration_seconds",
            "Time until a peer's response headers arrived.",
            ["peer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    # GraphQL (schema.metrics.OperationRecorder).
    def operation(self, name: str | None, outcome: OperationOutcome, seconds: float | None) -> None:
        label = self._operation_label(name)
        self.operations.labels(label, outcome).inc()
        if seconds is not None:
            self.operation_latency.labels(label).observe(seconds)

    def subscriptions(self, delta: int) -> None:
        self.subscriptions_active.inc(delta)

    def _operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if not _NAME.fullmatch(name):
            return "invalid"
        if name not in self._operation_names:
            if len(self._operation_names) >= MAX_OPERATION_NAMES:
                return "other"
            self._operation_names.add(name)
        return name

    # Lifecycle.
    def transition(self, event: StatusChanged) -> None:
        self.transitions.labels(event.to_status.value).inc()

    def watch_cluster(self, health: Callable[[], WatchHealth]) -> None:
        """Read the watch's own counters at scrape time, so the watch loop knows nothing of metrics."""
        self.registry.register(_WatchCollector(health))

    # Peers over httpx: event hooks see every response; a request without one failed in transport.
    def watch_client(self, client: httpx.AsyncClient, peer: str) -> None:
        async def on_request(request: httpx.Request) -> None:
            request.extensions[_STARTED] = time.perf_counter()
            self.upstream_started.labels(peer).inc()

        async def on_response(response: httpx.Response) -> None:
            started = response.request.extensions.get(_STARTED)
            if isinstance(started, float):
                self.upstream_latency.labels(peer).observe(time.perf_counter() - started)
            self.upstream_responses.labels(peer, f"{response.status_code // 100}xx").inc()

        client.event_hooks["request"].append(on_request)
        client.event_hooks["response"].append(on_response)


class _WatchCollector(Collector):
    def __init__(self, health: Callable[[], WatchHealth]) -> None:
        self._health = health

    def collect(self) -> Iterable[Metric]:
        health = self._health()
        yield GaugeMetricFamily(
            "opencsp_cluster_watch_connected",
            "1 while the Terraform watch is live.",
            value=int(health.connected),
        )
        yield CounterMetricFamily(
            "opencsp_cluster_watch_reconnects",
            "Times the Terraform watch started over.",
            value=health.reconnects,
        )
        yield CounterMetricFamily(
            "opencsp_cluster_watch_relists",
            "Times the Terraform objects were listed anew (at start, after 410 Gone or a failure).",
            value=health.relists,
        )


class HTTPMetrics:
    """ASGI middleware: every HTTP request by route template, method and status; open websockets."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            self.metrics.websockets.inc()
            try:
                await self.app(scope, receive, send)
            finally:
                self.metrics.websockets.dec()
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before it answers
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.http_requests.labels(route, method, str(status)).inc()
            self.metrics.http_latency.labels(route, method).observe(time.perf_counter() - started)


def metrics_endpoint(metrics: Metrics) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return serve
