"""The Starlette application factory: a wired app from a Runtime, with nothing reached through globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.bootstrap import Runtime, document_limits
from gateway.graphql_http import GraphQLHTTP
from gateway.health import database_check, healthz, readyz
from gateway.websocket import GraphQLWebSocket
from schema.build import build_schema
from schema.context import Context
from services.instances.visibility import Visibility

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(runtime: Runtime, *, own_runtime: bool = True) -> Starlette:
    settings = runtime.settings
    schema = build_schema(document_limits(settings))

    async def http_context(_: Request) -> Context:
        return Context.create(runtime.services, Visibility.everything())

    async def websocket_context(_: WebSocket) -> Context:
        return Context.create(runtime.services, Visibility.everything())

    graphql_http = GraphQLHTTP(
        schema, http_context, body_limit=settings.max_body_bytes, graphiql=settings.graphiql
    )
    graphql_ws = GraphQLWebSocket(schema, websocket_context, max_subscriptions=20, init_timeout=10)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if own_runtime:
                await runtime.aclose()

    routes = [
        Route("/graphql", graphql_http.handle, methods=ALL_METHODS),
        WebSocketRoute("/graphql", graphql_ws),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz({"database": database_check(runtime.engine)}), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.runtime = runtime
    return app
