"""GraphQL over Server-Sent Events: the `graphql-sse` protocol, distinct-connections mode.

For dashboards behind proxies that cut websockets: `POST /graphql` with `Accept: text/event-stream` runs one
operation per request and streams its results as `event: next` messages, then `event: complete`. It is the
HTTP endpoint's front half (the same body parsing and size limit, the same Authorization header and
context, so the same field and row rules) with the websocket path's back half (the same schema, so the same
document limits and shared subscription groups). The stream ends when the token expires, as a websocket
is closed then: a dashboard must not outlive the authority it was opened with; a sign-out or lockout that
covers its token ends it too (`close_revoked`).

Errors before the stream starts (a bad body, no or bad token) are the HTTP endpoint's JSON answers with
their status codes; errors of the operation (validation, permissions) arrive as a `next` with `errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from strawberry import Schema
from strawberry.types import ExecutionResult

from gateway.graphql_http import GraphQLRequest, RequestError, error_body, parse_request
from schema.context import Context
from schema.errors import BAD_REQUEST, TRANSPORT_CODES
from schema.multiplex import SharedData
from services.auth.principal import Principal

logger = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
COMPLETE = b"event: complete\ndata:\n\n"
KEEP_ALIVE = b":\n\n"  # an SSE comment: keeps proxies from cutting a quiet stream

ContextFactory = Callable[[Request, GraphQLRequest], Awaitable[Context]]


def wants_event_stream(request: Request) -> bool:
    """graphql-sse clients send `Accept: text/event-stream`; everything else is the JSON endpoint's."""
    return request.method == "POST" and EVENT_STREAM in request.headers.get("accept", "")


def next_event(result: ExecutionResult) -> bytes:
    """One `next` message; a shared group's payload is spliced in, serialized once for all members."""
    if isinstance(result.data, SharedData):
        payload = result.data.payload_json.encode()
    else:
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            body["extensions"] = result.extensions
        payload = orjson.dumps(body)
    return b"event: next\ndata: " + payload + b"\n\n"


class GraphQLSSE:
    def __init__(
        self,
        schema: Schema,
        context_factory: ContextFactory,
        *,
        body_limit: int,
        keep_alive_interval: float,
    ) -> None:
        self.schema = schema
        self.context_factory = context_factory
        self.body_limit = body_limit
        self.keep_alive_interval = keep_alive_interval
        self._open: dict[asyncio.Event, Principal] = {}  # each open stream's end signal -> its principal

    def close_revoked(self, covered: Callable[[Principal], bool]) -> int:
        """End every open stream whose token `covered` selects (sign-out, lockout), as sockets are closed."""
        ending = [end for end, principal in self._open.items() if covered(principal)]
        for end in ending:
            end.set()
        return len(ending)

    async def handle(self, request: Request) -> Response:
        try:
            graphql_request = await parse_request(request, self.body_limit)
            context = await self.context_factory(request, graphql_request)
        except RequestError as error:
            return Response(
                error_body(error.message, TRANSPORT_CODES.get(error.status, BAD_REQUEST)),
                error.status,
                error.headers,
                media_type="application/json; charset=utf-8",
            )
        except ClientDisconnect:
            return Response(status_code=400)
        return StreamingResponse(
            self._stream(graphql_request, context),
            media_type=EVENT_STREAM,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, request: GraphQLRequest, context: Context) -> AsyncIterator[bytes]:
        expires_at = context.principal.expires_at if context.principal is not None else None
        results = await self.schema.subscribe(
            request.query,
            variable_values=request.variables,
            context_value=context,
            operation_name=request.operation_name,
            operation_extensions=request.extensions,
        )
        if isinstance(results, ExecutionResult):  # refused before it started (validation, limits)
            yield next_event(results)
            yield COMPLETE
            return
        source = aiter(results)
        pending: asyncio.Task[ExecutionResult] | None = None
        end = asyncio.Event()
        if context.principal is not None:
            self._open[end] = context.principal
        ended = asyncio.ensure_future(end.wait())
        try:
            while True:
                remaining = self.keep_alive_interval
                if expires_at is not None:
                    remaining = min(remaining, (expires_at - datetime.now(UTC)).total_seconds())
                    if remaining <= 0:
                        return  # the token expired: the stream ends, the client must sign in again
                if pending is None:
                    pending = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait(
                    (pending, ended), timeout=remaining, return_when="FIRST_COMPLETED"
                )
                if ended in done:
                    return  # signed out: the stream ends, as a socket closes with "signed out"
                if not done:
                    yield KEEP_ALIVE
                    continue
                step, pending = pending, None
                try:
                    result = step.result()
                except StopAsyncIteration:
                    yield COMPLETE
                    return
                yield next_event(result)
        finally:
            self._open.pop(end, None)
            ended.cancel()
            if pending is not None:  # the generator cannot close while a step of it still runs
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pending
            if isinstance(results, AsyncGenerator):
                await results.aclose()
