"""The Starlette application factory: a wired app from a Runtime, with nothing reached through globals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from gateway.asgi import GatewayApp
from gateway.authn import IssuerUnavailable, Unauthenticated, authenticate, bearer_token, write_check
from gateway.backchannel import backchannel_logout
from gateway.bootstrap import Runtime, document_limits
from gateway.dashboard import dashboard_routes
from gateway.documents import DocumentGate, TrustedDocuments
from gateway.documents import load as load_documents
from gateway.graphql_http import GraphQLHTTP, GraphQLRequest, RequestError
from gateway.health import healthz, readyz
from gateway.introspection import is_introspection_only
from gateway.observability import Observability
from gateway.observability.logs import bind_sub
from gateway.sse import GraphQLSSE, wants_event_stream
from gateway.webhooks import semaphore_webhook
from gateway.websocket import GraphQLWebSocket
from schema.budget import Budget
from schema.build import build_schema
from schema.compiled import CompiledQueries
from schema.context import Context
from services.auth.revocation import Revocation

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_app(runtime: Runtime, *, own_runtime: bool = True, background: bool = True) -> Starlette:
    """`own_runtime`: the app starts the runtime's background work and closes it at shutdown.

    `/metrics` is not among its routes: `app.state.metrics_app` (None with metrics off) serves it, on the
    port `gateway.serving` gives it."""
    settings = runtime.settings
    observability = Observability.create(settings)
    trusted = TrustedDocuments()
    budget = Budget(settings.cost_per_minute, settings.redis_url) if settings.cost_per_minute else None
    schema = build_schema(
        document_limits(settings),
        observability.schema_extensions(trusted.label),
        share_subscriptions=settings.subscription_backlog_limit if settings.share_subscriptions else None,
        max_operation_cost=settings.max_operation_cost,
        budget=budget,
    )
    if settings.trusted_documents is not None:
        trusted.replace(
            load_documents(
                settings.trusted_documents, schema, document_limits(settings), settings.max_operation_cost
            )
        )
    gate = DocumentGate(trusted, settings.documents_mode)

    async def http_context(request: Request, graphql_request: GraphQLRequest) -> Context:
        try:
            principal = await authenticate(runtime.verifier, request.headers.get("authorization"))
        except Unauthenticated as error:
            if (
                settings.public_introspection
                and len(graphql_request.query) <= settings.max_query_bytes
                and is_introspection_only(graphql_request.query, settings.max_tokens)
            ):
                return Context.create(runtime.services, None, schema_public=True)
            observability.unauthenticated()
            raise RequestError(401, str(error), {"WWW-Authenticate": error.challenge}) from None
        except IssuerUnavailable as error:
            raise RequestError(503, str(error), {"Retry-After": "5"}) from None
        bind_sub(principal.sub)
        context = Context.create(runtime.services, principal, schema_public=settings.public_introspection)
        if runtime.introspector is not None:
            context.confirm_write = write_check(
                runtime.introspector, bearer_token(request.headers.get("authorization")), principal
            )
        return context

    async def websocket_context(_: WebSocket) -> Context:
        return Context.create(runtime.services, None, schema_public=settings.public_introspection)

    graphql_http = GraphQLHTTP(
        schema,
        http_context,
        body_limit=settings.max_body_bytes,
        graphiql=settings.graphiql,
        compiled=CompiledQueries.for_schema(schema) if settings.compiled_execution else None,
        documents=gate,
    )
    graphql_ws = GraphQLWebSocket(
        schema,
        websocket_context,
        verifier=runtime.verifier,
        max_subscriptions=settings.max_subscriptions_per_connection,
        init_timeout=settings.websocket_init_timeout_seconds,
        keep_alive_interval=settings.websocket_keep_alive_seconds,
    )
    graphql_ws.introspector = runtime.introspector
    graphql_ws.documents = gate

    graphql_sse = GraphQLSSE(
        schema,
        http_context,
        body_limit=settings.max_body_bytes,
        keep_alive_interval=settings.websocket_keep_alive_seconds,
    )

    async def graphql_route(request: Request) -> Response:
        """graphql-sse at the same path: `POST` with `Accept: text/event-stream` (gateway/sse.py)."""
        if wants_event_stream(request):
            return await graphql_sse.handle(request)
        return await graphql_http.handle(request)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if own_runtime:
            await runtime.start(background=background)
        try:
            yield
        finally:
            if own_runtime:
                await runtime.aclose()
            if budget is not None:
                await budget.aclose()
            observability.shutdown()

    routes = [
        Route("/graphql", graphql_route, methods=ALL_METHODS),
        WebSocketRoute("/graphql", graphql_ws),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz(runtime.readiness), methods=["GET"]),
        Route("/webhooks/semaphore", semaphore_webhook(runtime), methods=["POST"]),
    ]
    if runtime.revocations is not None:
        revocations = runtime.revocations

        async def close_sockets(revocation: Revocation) -> None:
            await graphql_ws.close_revoked(revocation.covers, revocation.sub)
            graphql_sse.close_revoked(revocation.covers)

        revocations.on_revoked(close_sockets)
        if runtime.logout_tokens is not None:
            logout = backchannel_logout(
                runtime.logout_tokens, revocations, max_body_bytes=settings.oidc_max_token_bytes + 1024
            )
            routes.append(Route("/auth/backchannel-logout", logout, methods=["POST"]))
    if runtime.dev_issuer is not None:
        issuer = runtime.dev_issuer

        async def dev_jwks(_: Request) -> Response:
            return JSONResponse(issuer.jwks())

        routes.append(Route("/dev/jwks", dev_jwks, methods=["GET"]))
    routes += dashboard_routes(runtime)  # /static/…, the dashboard when on, /dev/token in dev mode
    app = GatewayApp(routes=routes, lifespan=lifespan, middleware=observability.middleware())
    app.serve_websockets("/graphql", graphql_ws, observability.middleware())  # gateway/asgi.py says why
    observability.observe(app, runtime)
    app.state.runtime = runtime
    app.state.schema = schema
    app.state.compiled = graphql_http.compiled  # None when off (a setting, or an extension that observes)
    app.state.budget = budget  # None without OPENCSP_COST_PER_MINUTE
    app.state.observability = observability
    # Served on its own port (gateway.serving): unauthenticated, so never reachable where tenants are.
    app.state.metrics_app = observability.metrics_app()
    return app
