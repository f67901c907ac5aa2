"""OpenTelemetry traces over OTLP/HTTP: the HTTP request, its GraphQL operation, and calls to peers.

Imported only when `OPENCSP_OTLP_ENDPOINT` is set, so a gateway without tracing never loads the SDK.
The provider is the app's own, not the global one, so two apps (or tests) never share exporters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.starlette import StarletteInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from starlette.applications import Starlette
from strawberry.extensions import SchemaExtension
from strawberry.extensions.tracing import OpenTelemetryExtension

SERVICE = "opencsp-gateway"
TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """OTLP/HTTP's traces URL from a collector's base URL (`http://collector:4318`) or the URL itself."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def _no_arguments(_: dict[str, Any], __: Any) -> dict[str, Any]:
    # Resolver arguments are the caller's data; spans name the field, not what was asked for.
    return {}


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    @classmethod
    def to_collector(cls, endpoint: str) -> Tracing:
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: SERVICE}), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        return cls(provider)

    def schema_extension(self) -> Callable[[], SchemaExtension]:
        return lambda: OpenTelemetryExtension(tracer_provider=self.provider, arg_filter=_no_arguments)

    def instrument_app(self, app: Starlette) -> None:
        """Before the app serves: Starlette builds its middleware stack on the first request."""
        StarletteInstrumentor.instrument_app(app, tracer_provider=self.provider)

    def instrument_client(self, client: httpx.AsyncClient) -> None:
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=self.provider)

    def shutdown(self) -> None:
        """Export what is buffered and stop; the app's lifespan calls it at shutdown."""
        self.provider.shutdown()
