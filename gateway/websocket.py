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

The init deadline, the keep-alives and the token's expiry are one timer per connection (`loop.call_at`,
rescheduled to the earliest), not tasks. A subscription that joins a shared group is written by the group
itself (`gateway.fanout`): its operation task ends once it has joined, and Strawberry's handlers serve
only the control messages and unshared operations.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketState
from strawberry.asgi import GraphQL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message as TransportMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyConnectionInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import OperationMessage, StartMessage

from gateway.authn import (
    IssuerUnavailable,
    Unauthenticated,
    authenticate,
    authorization_of,
    bearer_token,
    write_check,
)
from gateway.documents import DocumentGate, DocumentRequestError, requested_id
from gateway.fanout import Outbox, SharedMember, text_frame
from gateway.observability.logs import bind_sub
from schema.build import GatewaySchema
from schema.context import Context
from schema.errors import BAD_REQUEST
from schema.multiplex import encode_message
from schema.subscription_cost import requested
from services.auth.introspection import Introspector
from services.auth.principal import Principal
from services.auth.tokens import TokenVerifier
from services.instances.access import visibility_of
from services.instances.visibility import Visibility

BAD_TOKEN = 4403
EXPIRED = 4401
SIGNED_OUT = "signed out"
TRY_AGAIN_LATER = 1013  # the issuer's keys never loaded: the token cannot be judged yet
INIT_TIMEOUT = 4408  # as graphql-transport-ws closes a socket that never sent connection_init
_TIMER_CONTEXT = contextvars.Context()
_VISIBILITIES = 4096  # principals whose Visibility is kept for the next socket with the same token
_REASON_BYTES = 120  # a close frame's reason must stay under 123 bytes


def _reason(text: str) -> str:
    return text.encode()[:_REASON_BYTES].decode(errors="ignore")


def _forget_payload(message: object) -> None:
    """Strawberry's loop holds the last message until the next arrives; its payload (the token, the
    query) need not live that long on an idle socket."""
    if isinstance(message, dict):
        message.clear()


class _Connection:
    """What both protocols add to Strawberry's handlers: the token checked before the ack; one timer for
    the init deadline, keep-alives and the token's expiry; and shared subscriptions written by their
    group (`gateway.fanout`), with no task of their own."""

    view: Any  # GraphQLWebSocket; typed loosely as Strawberry's handlers type it
    context: Context
    websocket: Any
    schema: Any
    connection_acknowledged: bool
    _LEGACY = False
    _PING = '{"type":"ping"}'
    _PING_FRAME = text_frame(_PING.encode())  # for the pre-framed write: made once, not per ping
    # One timer handle, at the earliest of these loop times (None: not pending).
    _timer: asyncio.TimerHandle | None = None
    _init_deadline: float | None = None
    _expires: float | None = None
    _next_ping: float | None = None
    _outbox: Outbox | None = None
    _shared: dict[str, SharedMember] | None = None

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            self._outbox = Outbox(self.context.websocket)
        return self._outbox

    def _start_clock(self) -> None:
        self._init_deadline = asyncio.get_running_loop().time() + self.view.init_timeout
        self._reschedule()

    def _start_pings(self) -> None:
        interval = self.view.keep_alive_interval
        if interval and self._next_ping is None:
            self._next_ping = asyncio.get_running_loop().time() + interval
            self._reschedule()

    def _stop_clock(self) -> None:
        self._init_deadline = self._expires = self._next_ping = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _closed(self) -> None:
        """The socket is done: no timer, and no longer among the open ones `close_revoked` may close."""
        self._stop_clock()
        self.view.untrack(self.context)

    def _reschedule(self) -> None:
        due = [t for t in (self._init_deadline, self._expires, self._next_ping) if t is not None]
        if self._timer is not None:
            if due and self._timer.when() == min(due):
                return
            self._timer.cancel()
            self._timer = None
        if due:
            # In an empty context: copying the connection's for every timer would cost each socket one.
            self._timer = asyncio.get_running_loop().call_at(min(due), self._tick, context=_TIMER_CONTEXT)

    def _tick(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        if self._expires is not None and now >= self._expires:
            self._stop_clock()
            self.outbox.close(EXPIRED, "token expired")
            return
        if self._init_deadline is not None and now >= self._init_deadline:
            self._init_deadline = None
            if not self.connection_acknowledged:
                self._stop_clock()
                self._timed_out()
                self.outbox.close(INIT_TIMEOUT, "Connection initialisation timeout")
                return
        if self._next_ping is not None and now >= self._next_ping:
            self._next_ping = now + self.view.keep_alive_interval
            self.outbox.write(self._PING, self._PING_FRAME)
        self._reschedule()

    def _timed_out(self) -> None:
        """The init deadline passed without an ack (Strawberry's flag, where it has one)."""

    async def _attach_shared(
        self, operation_id: str, query: str, variables: dict[str, Any] | None, operation_name: str | None
    ) -> bool:
        """Join this subscription's shared group as a member its group writes to; False: not shared."""
        schema = self.schema
        if not isinstance(schema, GatewaySchema) or schema.multiplexer is None:
            return False
        member = SharedMember(
            self.outbox, operation_id, legacy=self._LEGACY, limit=schema.multiplexer.limit, owner=self
        )
        group = await schema.attach(member, query, variables, self.context, operation_name)
        if group is None:
            return False
        member.group = group
        self._store(member)
        return True

    def shared_ended(self, operation_id: str) -> None:
        """The member ended itself (its group ended, it fell behind, an error): forget its id."""
        self._take(operation_id)

    def _store(self, member: SharedMember) -> None:
        if self._shared is None:
            self._shared = {}
        self._shared[member.id] = member

    def _take(self, operation_id: str) -> SharedMember | None:
        """Forget the operation `operation_id`; its shared member, if it is one."""
        return self._shared.pop(operation_id, None) if self._shared is not None else None

    def _leave_shared(self, operation_id: str, *, complete: bool) -> bool:
        member = self._take(operation_id)
        if member is None:
            return False
        member.stop(complete=complete)
        return True

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
        self.context.authenticate(principal, self.view.visibility_of(principal))
        if self.view.introspector is not None:
            token = bearer_token(authorization_of(params))
            self.context.confirm_write = write_check(self.view.introspector, token, principal)
        self.view.track(self.context)
        bind_sub(principal.sub)
        remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
        self._expires = asyncio.get_running_loop().time() + max(0.0, remaining)
        self._reschedule()
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


class TransportWSHandler(_Connection, BaseGraphQLTransportWSHandler[Context, None]):
    async def handle_message(self, message: TransportMessage) -> None:
        try:
            await super().handle_message(message)
        finally:
            _forget_payload(message)

    def on_request_accepted(self) -> None:
        self._start_clock()  # the init deadline, instead of Strawberry's task

    def _timed_out(self) -> None:
        self.connection_timed_out = True

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged and message.get("id") not in self.operations:
            error = self._admit_document(message.get("payload"))
            if error is not None:
                await self.send_message({"id": message["id"], "type": "error", "payload": [error.formatted]})
                return
        requested(message.get("payload"))  # its extensions reach the schema (schema.subscription_cost)
        await super().handle_subscribe(message)

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        query, variables, name = operation.query, operation.variables, operation.operation_name
        if not await self._attach_shared(operation.id, query, variables, name):
            await super().run_operation(operation)

    def _store(self, member: SharedMember) -> None:
        # In Strawberry's own table, in the Operation's place (the member has its `id` and a `task` of
        # None): the id stays taken and counted towards the cap, at no cost of a table of its own.
        if member.id in self.operations:
            self.operations[member.id] = member  # type: ignore[assignment]
        else:  # completed by the client while it joined
            member.stop(complete=False)

    def _take(self, operation_id: str) -> SharedMember | None:
        found: object = self.operations.get(operation_id)
        if isinstance(found, SharedMember):
            del self.operations[operation_id]
            return found
        return None

    async def cleanup_operation(self, operation_id: str) -> None:
        if not self._leave_shared(operation_id, complete=False):
            await super().cleanup_operation(operation_id)

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        if self.connection_init_received or await self._admit(message.get("payload")):
            await super().handle_connection_init(message)
            self.context.connection_params = None  # read once (the token): not kept for the socket's life
            if self.connection_acknowledged:
                self._init_deadline = None
                self._start_pings()

    async def shutdown(self) -> None:
        self._closed()
        await super().shutdown()


class LegacyWSHandler(_Connection, BaseGraphQLWSHandler[Context, None]):
    _LEGACY = True
    _PING = '{"type":"ka"}'
    _PING_FRAME = text_frame(_PING.encode())

    async def handle(self) -> None:
        # Strawberry's graphql-ws handler has no init timeout: without this, a client that never sends
        # connection_init would hold an unauthenticated socket open for as long as it answers pings.
        # Its keep-alive task is replaced by the connection's timer.
        self.keep_alive = False
        self._start_clock()
        try:
            await super().handle()
        finally:
            self._closed()

    async def handle_message(self, message: OperationMessage) -> None:
        try:
            await super().handle_message(message)
        finally:
            _forget_payload(message)

    async def handle_connection_init(self, message: LegacyConnectionInitMessage) -> None:
        if self.connection_acknowledged:
            return  # a second init changes nothing, in particular not the principal
        if await self._admit(message.get("payload")):
            await super().handle_connection_init(message)
            self.context.connection_params = None
            if self.connection_acknowledged:
                self._init_deadline = None
                self.outbox.write(self._PING, self._PING_FRAME)  # at once, as Strawberry's keep-alive did
                self._start_pings()

    async def handle_start(self, message: StartMessage) -> None:
        if self.connection_acknowledged:
            error = self._admit_document(message.get("payload"))
            if error is not None:
                await self.send_message({"type": "error", "id": message["id"], "payload": error.formatted})
                return
        requested(message.get("payload"))  # its extensions reach the schema (schema.subscription_cost)
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # A shared member keeps its (finished) task in `tasks`: it still counts towards the cap.
        if not await self._attach_shared(operation_id, query, variables, operation_name):
            await super().handle_async_results(operation_id, query, operation_name, variables)

    def _take(self, operation_id: str) -> SharedMember | None:
        member = super()._take(operation_id)
        if member is not None:
            self.tasks.pop(operation_id, None)  # its finished task, kept so the cap counts it
        return member

    async def cleanup_operation(self, operation_id: str) -> None:
        if not self._leave_shared(operation_id, complete=True):
            await super().cleanup_operation(operation_id)


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
        self.init_timeout = init_timeout
        self.introspector: Introspector | None = None  # set when writes need an active token
        self.documents: DocumentGate | None = None  # trusted documents (gateway.documents)
        self._context_factory = context_factory
        # Authenticated sockets' contexts by the sub of their token (keyed by id: contexts are unhashable).
        self._open: dict[str, dict[int, Context]] = {}
        self._visibilities: dict[int, tuple[Principal, Visibility]] = {}  # by id(principal)

    def visibility_of(self, principal: Principal) -> Visibility:
        """The principal's row rule, one object for every socket with the same cached principal (the
        token verifier's cache hands out one Principal per token)."""
        cached = self._visibilities.get(id(principal))
        if cached is not None and cached[0] is principal:
            return cached[1]
        if len(self._visibilities) >= _VISIBILITIES:
            self._visibilities.clear()
        visibility = visibility_of(principal)
        self._visibilities[id(principal)] = (principal, visibility)
        return visibility

    def track(self, context: Context) -> None:
        assert context.principal is not None
        self._open.setdefault(context.principal.sub, {})[id(context)] = context

    def untrack(self, context: Context) -> None:
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
        return context
