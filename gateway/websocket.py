"""GraphQL over websockets (`graphql-transport-ws`, legacy `graphql-ws`), served by Strawberry's handlers.

Both protocols authenticate at `connection_init` (`{"authorization": "Bearer …"}` in its payload, the key
in any letter case). A bad token closes the socket with 4403 and a reason; nothing is served before the
ack (Strawberry closes with 4401 on a subscribe before it), nor kept open without one (4408 after
`websocket_init_timeout_seconds`, on both protocols); an open socket is closed with 4401 when its
token expires, because a dashboard must not outlive the authority it was opened with. Both protocols send
keep-alives every `keep_alive_interval` seconds once acknowledged (`ping` on graphql-transport-ws, which
Strawberry only answers, never sends; `ka` on the legacy protocol), so idle dashboards survive proxies
that cut quiet connections. A socket whose token is revoked (sign-out, admin lockout) is closed with 4401
and the reason "signed out" (`close_revoked`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketState
from strawberry.asgi import GraphQL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage

from gateway.authn import (
    IssuerUnavailable,
    Unauthenticated,
    authenticate,
    authorization_of,
    bearer_token,
    write_check,
)
from gateway.documents import DocumentGate, DocumentRequestError, requested_id
from gateway.observability.logs import bind_sub
from schema.context import Context
from schema.errors import BAD_REQUEST
from schema.multiplex import encode_message
from schema.subscription_cost import requested
from services.auth.introspection import Introspector
from services.auth.principal import Principal
from services.auth.tokens import TokenVerifier

BAD_TOKEN = 4403
EXPIRED = 4401
SIGNED_OUT = "signed out"
TRY_AGAIN_LATER = 1013  # the issuer's keys never loaded: the token cannot be judged yet
INIT_TIMEOUT = 4408  # as graphql-transport-ws closes a socket that never sent connection_init
_CONTEXT = "opencsp.context"
_REASON_BYTES = 120  # a close frame's reason must stay under 123 bytes


def _reason(text: str) -> str:
    return text.encode()[:_REASON_BYTES].decode(errors="ignore")


class _Authenticating:
    """Checks the token before Strawberry acknowledges the connection."""

    view: Any  # GraphQLWebSocket; typed loosely as Strawberry's handlers type it
    context: Context
    websocket: Any

    async def _admit(self, payload: object) -> bool:
        params = payload if isinstance(payload, dict) else None
        try:
            principal = await authenticate(self.view.verifier, authorization_of(params))
        except Unauthenticated as error:
            await self.websocket.close(code=BAD_TOKEN, reason=_reason(str(error)))
            return False
        except IssuerUnavailable as error:
            await self.websocket.close(code=TRY_AGAIN_LATER, reason=_reason(str(error)))
            return False
        self.context.authenticate(principal)
        if self.view.introspector is not None:
            token = bearer_token(authorization_of(params))
            self.context.confirm_write = write_check(self.view.introspector, token, principal)
        self.view.track(self.context)
        bind_sub(principal.sub)
        self.view.close_at_expiry(self.context, principal.expires_at)
        return True

    def _admit_document(self, payload: object) -> GraphQLError | None:
        """Resolve a subscribe/start payload naming a trusted document (gateway.documents) into its text,
        in place; the error to answer when it is unknown or untrusted."""
        gate: DocumentGate | None = self.view.documents
        if gate is None or not isinstance(payload, dict):
            return None
        query = payload.get("query")
        extensions = payload.get("extensions")
        try:
            admitted = gate.resolve(
                query if isinstance(query, str) else None,
                requested_id(payload.get("documentId"), extensions if isinstance(extensions, dict) else None),
            )
            gate.admit(admitted.document, self.context.principal)
        except DocumentRequestError as error:
            return GraphQLError(str(error), extensions={"code": BAD_REQUEST})
        except GraphQLError as error:
            return error
        payload["query"] = admitted.text
        return None


class TransportWSHandler(_Authenticating, BaseGraphQLTransportWSHandler[Context, None]):
    _pinger: asyncio.Task[None] | None = None

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message.get("id") not in self.operations:
            error = self._admit_document(message.get("payload"))
            if error is not None:
                await self.send_message({"id": message["id"], "type": "error", "payload": [error.formatted]})
                return
        requested(message.get("payload"))  # its extensions reach the schema (schema.subscription_cost)
        await super().handle_subscribe(message)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_init_received or await self._admit(message.get("payload")):
            await super().handle_connection_init(message)
            interval = self.view.keep_alive_interval
            if self.connection_acknowledged and self._pinger is None and interval:
                self._pinger = asyncio.create_task(
                    self._ping_every(interval), name="graphql-transport-ws ping"
                )

    async def _ping_every(self, interval: float) -> None:
        with contextlib.suppress(Exception):  # the socket went away: shutdown() cancels us anyway
            while True:
                await asyncio.sleep(interval)
                await self.send_message({"type": "ping"})

    async def shutdown(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await super().shutdown()


class LegacyWSHandler(_Authenticating, BaseGraphQLWSHandler[Context, None]):
    async def handle(self) -> None:
        # Strawberry's graphql-ws handler has no init timeout: without this, a client that never sends
        # connection_init would hold an unauthenticated socket open for as long as it answers pings.
        deadline = asyncio.create_task(self._close_unless_acknowledged(), name="graphql-ws init timeout")
        try:
            await super().handle()
        finally:
            deadline.cancel()

    async def _close_unless_acknowledged(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            with contextlib.suppress(Exception):  # the socket may be closing already
                await self.websocket.close(code=INIT_TIMEOUT, reason="Connection initialisation timeout")

    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        if self.connection_acknowledged:
            return  # a second init changes nothing, in particular not the principal
        if await self._admit(message.get("payload")):
            await super().handle_connection_init(message)

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            error = self._admit_document(message.get("payload"))
            if error is not None:
                await self.send_message({"type": "error", "id": message["id"], "payload": error.formatted})
                return
        requested(message.get("payload"))  # its extensions reach the schema (schema.subscription_cost)
        await super().handle_start(message)


class GraphQLWebSocket(GraphQL[Context, None]):
    """Only the websocket half of Strawberry's ASGI view; HTTP is `gateway.graphql_http`."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: Any,
        context_factory: Callable[[WebSocket], Awaitable[Context]],
        *,
        verifier: TokenVerifier,
        max_subscriptions: int,
        init_timeout: float,
        keep_alive_interval: float = 15.0,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            keep_alive=True,
            keep_alive_interval=keep_alive_interval,
            connection_init_wait_timeout=timedelta(seconds=init_timeout),
            max_subscriptions_per_connection=max_subscriptions,
        )
        self.verifier = verifier
        self.introspector: Introspector | None = None  # set when writes need an active token
        self.documents: DocumentGate | None = None  # trusted documents (gateway.documents)
        self._context_factory = context_factory
        # Authenticated sockets' contexts by the sub of their token (keyed by id: contexts are unhashable).
        self._open: dict[str, dict[int, Context]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            context = scope.get(_CONTEXT)
            if isinstance(context, Context):
                self._untrack(context)
                if context.expiry is not None:
                    context.expiry.cancel()

    def track(self, context: Context) -> None:
        assert context.principal is not None
        self._open.setdefault(context.principal.sub, {})[id(context)] = context

    def _untrack(self, context: Context) -> None:
        if context.principal is not None and (same := self._open.get(context.principal.sub)) is not None:
            same.pop(id(context), None)
            if not same:
                del self._open[context.principal.sub]

    async def close_revoked(self, covered: Callable[[Principal], bool], sub: str | None) -> int:
        """Close every open socket whose token `covered` selects (all subs' when `sub` is None); how many."""
        groups = [self._open.get(sub, {})] if sub is not None else list(self._open.values())
        closed = 0
        for context in [context for group in groups for context in list(group.values())]:
            socket = context.websocket
            if context.principal is None or not covered(context.principal):
                continue
            if isinstance(socket, WebSocket) and socket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError):
                    await socket.close(code=EXPIRED, reason=SIGNED_OUT)
                    closed += 1
        return closed

    def encode_json(self, data: object) -> str:
        return encode_message(data)

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        assert isinstance(request, WebSocket)
        context = await self._context_factory(request)
        context.websocket = request
        request.scope[_CONTEXT] = context
        return context

    def close_at_expiry(self, context: Context, expires_at: datetime) -> None:
        async def close_when_expired() -> None:
            await asyncio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
            socket = context.websocket
            if isinstance(socket, WebSocket) and socket.application_state is WebSocketState.CONNECTED:
                with contextlib.suppress(RuntimeError):
                    await socket.close(code=EXPIRED, reason="token expired")

        context.expiry = asyncio.create_task(close_when_expired(), name="close socket at token expiry")
