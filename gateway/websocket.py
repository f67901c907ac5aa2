"""GraphQL over websockets (`graphql-transport-ws`, legacy `graphql-ws`), served by Strawberry's handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from schema.context import Context


class GraphQLWebSocket(GraphQL[Context, None]):
    """Only the websocket half of Strawberry's ASGI view; HTTP is `gateway.graphql_http`."""

    def __init__(
        self,
        schema: Any,
        context_factory: Callable[[WebSocket], Awaitable[Context]],
        *,
        max_subscriptions: int,
        init_timeout: float,
    ) -> None:
        super().__init__(
            schema,
            graphql_ide=None,
            keep_alive=True,
            keep_alive_interval=15,
            connection_init_wait_timeout=timedelta(seconds=init_timeout),
            max_subscriptions_per_connection=max_subscriptions,
        )
        self._context_factory = context_factory

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        assert isinstance(request, WebSocket)
        return await self._context_factory(request)
