"""What an operator sees of one app: Prometheus metrics, request-tagged logs, and (optionally) traces.

`Observability.create(settings)` is built by the app factory next to the schema; it hands out the
middleware, the `/metrics` app (served on a port of its own) and the schema extensions, and hooks onto
the runtime's parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from strawberry.extensions import SchemaExtension

from gateway.bootstrap import Runtime
from gateway.observability.logs import RequestId
from gateway.observability.metrics import HTTPMetrics, Metrics, metrics_endpoint
from gateway.settings import Settings
from schema.metrics import OperationMetrics, OperationNamer

if TYPE_CHECKING:  # optional (the `otel` extra): imported for real only when tracing is configured
    from gateway.observability.tracing import Tracing


@dataclass(slots=True)
class Observability:
    metrics: Metrics | None
    tracing: Tracing | None

    @classmethod
    def create(cls, settings: Settings) -> Observability:
        tracing = None
        if settings.otlp_endpoint:
            # Optional: OpenTelemetry is the `otel` extra, loaded only when a collector is configured.
            from gateway.observability.tracing import Tracing

            tracing = Tracing.to_collector(settings.otlp_endpoint)
        return cls(metrics=Metrics() if settings.metrics else None, tracing=tracing)

    def schema_extensions(self, namer: OperationNamer | None = None) -> list[Callable[[], SchemaExtension]]:
        """Outermost first: metrics time the whole operation, the trace's span wraps the others'.
        `namer`: operations are labelled by trusted document (gateway.documents), not by clients' names."""
        found: list[Callable[[], SchemaExtension]] = []
        if self.metrics is not None:
            metrics = self.metrics
            found.append(lambda: OperationMetrics(metrics, namer))
        if self.tracing is not None:
            found.append(self.tracing.schema_extension())
        return found

    def middleware(self) -> list[Middleware]:
        found = [Middleware(RequestId)]
        if self.metrics is not None:
            found.append(Middleware(HTTPMetrics, metrics=self.metrics))
        return found

    def metrics_app(self) -> Starlette | None:
        """`/metrics` alone, for a listener of its own (OPENCSP_METRICS_PORT); None with metrics off.
        Scrapes are not counted in the HTTP metrics: they would only measure the scraper."""
        if self.metrics is None:
            return None
        return Starlette(routes=[Route("/metrics", metrics_endpoint(self.metrics), methods=["GET"])])

    def unauthenticated(self) -> None:
        """Refused before GraphQL ran, so no extension saw it. Counted as anonymous: callers without a
        token must not choose label values (each would cost a series and crowd out real names)."""
        if self.metrics is not None:
            self.metrics.operation(None, "unauthenticated", None)

    def observe(self, app: Starlette, runtime: Runtime) -> None:
        """Hook onto the runtime's parts: the cluster watch, committed transitions, peers' HTTP clients."""
        clients = runtime.http_clients
        if self.metrics is not None:
            metrics = self.metrics
            metrics.watch_cluster(lambda: runtime.watch_health)
            runtime.observe_transitions(metrics.transition)
            for peer, client in clients.items():
                metrics.watch_client(client, peer)
        if self.tracing is not None:
            self.tracing.instrument_app(app)
            for client in clients.values():
                self.tracing.instrument_client(client)

    def shutdown(self) -> None:
        if self.tracing is not None:
            self.tracing.shutdown()
