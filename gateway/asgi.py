"""The gateway's Starlette app, with GraphQL websockets taken before Starlette's per-connection layers.

A websocket lives as long as the dashboard showing it, and every layer it passed through on the way in
stays suspended on its stack for that whole life: Starlette's error and exception middlewares (the latter
builds a `WebSocket` and a closure per connection), the router and the route. At ten thousand idle
subscribers those frames are a tenth of the gateway's memory per socket (issue 13's goal is measured per
idle subscriber). So a websocket to the GraphQL path goes straight to the GraphQL websocket app, through
only what the middlewares do for websockets: the request id in the logs and the open-connection gauge
(the observability middlewares, applied to that app alone). None of the skipped layers acts on a
websocket the GraphQL app serves: it handles its own errors and closes its own sockets. With tracing on,
OpenTelemetry's Starlette middleware is one of them: a GraphQL websocket gets no connection span (that
middleware would add spans for every frame sent, at fan-out scale), while its operations keep theirs from
the schema's OpenTelemetry extension.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send


class GatewayApp(Starlette):
    websocket_path: str | None = None
    websocket_app: ASGIApp | None = None

    def serve_websockets(self, path: str, app: ASGIApp, middleware: list[Middleware]) -> None:
        """Websockets to `path` go to `app` wrapped in `middleware` (innermost last, as Starlette's)."""
        for layer in reversed(middleware):
            factory, args, kwargs = layer
            app = factory(app, *args, **kwargs)
        self.websocket_path, self.websocket_app = path, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and _route_path(scope) == self.websocket_path and self.websocket_app:
            scope["app"] = self
            await self.websocket_app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path as Starlette's router matches it: without the root path a proxy serves the app under."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
