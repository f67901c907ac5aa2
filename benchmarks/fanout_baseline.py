"""The yardstick for benchmarks/fanout.py: a hand-written ASGI broadcast server, nothing of the gateway.

It speaks just enough graphql-transport-ws for tests/node/fanout-client.mjs (connection_init -> ack, one
`subscribe` per socket, pings answered by the client) and broadcasts one pre-serialized frame per change
with a plain loop of `send_text`, under the uvicorn settings `opencsp-gateway serve` uses (same loop, same
websocket implementation, same size limit, no compression). A change is published by
`POST /publish {"name": ..., "to": ...}`; its `at` is stamped there, as the gateway stamps the transition
just before it is published. What the gateway costs beyond this is its own layers.

    python -m benchmarks.fanout_baseline --port 8100
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.serving import loop_factory
from gateway.settings import load_settings

PROTOCOL = "graphql-transport-ws"


def baseline_app() -> Starlette:
    subscribers: dict[WebSocket, str] = {}  # socket -> its subscription id

    async def graphql(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=PROTOCOL)
        try:
            while True:
                message = orjson.loads(await websocket.receive_text())
                kind = message.get("type")
                if kind == "connection_init":
                    await websocket.send_text('{"type":"connection_ack"}')
                elif kind == "subscribe":
                    subscribers[websocket] = str(message["id"])
                elif kind == "ping":
                    await websocket.send_text('{"type":"pong"}')
        except WebSocketDisconnect:
            pass
        finally:
            subscribers.pop(websocket, None)

    async def publish(request: Request) -> Response:
        body = orjson.loads(await request.body())
        change = {
            "at": datetime.now(UTC).isoformat(),
            "to": body["to"],
            "instance": {"name": body["name"]},
        }
        payload = orjson.dumps({"data": {"instanceStatusChanges": change}}).decode()
        frames: dict[str, str] = {}  # one frame per subscription id (the clients all use "1")
        for websocket, sid in list(subscribers.items()):
            frame = frames.get(sid)
            if frame is None:
                frame = frames[sid] = (
                    f'{{"id":{orjson.dumps(sid).decode()},"type":"next","payload":{payload}}}'
                )
            try:
                await websocket.send_text(frame)
            except (WebSocketDisconnect, RuntimeError, OSError):
                subscribers.pop(websocket, None)
        return Response(str(len(subscribers)))

    async def ready(_: Request) -> Response:
        return Response("ok")

    return Starlette(
        routes=[
            WebSocketRoute("/graphql", graphql),
            Route("/publish", publish, methods=["POST"]),
            Route("/readyz", ready),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings(_env_file=None)
    config = uvicorn.Config(  # as gateway/serving.py configures the public server
        baseline_app(),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        proxy_headers=True,
        lifespan="off",
        ws=settings.websocket_implementation,
        ws_max_size=settings.max_body_bytes,
        ws_per_message_deflate=False,
    )
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
