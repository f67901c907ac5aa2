"""Serve an ASGI app with a real uvicorn on a free loopback port, for tests that need real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn


def free_port() -> int:
    """A loopback port nothing listens on now, for a server that must be told its port up front."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "on", access_log: bool = True, ws: Any = "auto"
) -> AsyncIterator[str]:
    """Yield the base URL (http://127.0.0.1:PORT) while uvicorn serves `app`; stop it on exit. `ws`:
    uvicorn's websocket implementation (a name, or a protocol class such as gateway.wsprotocol's)."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan=lifespan, access_log=access_log, ws=ws
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@contextlib.asynccontextmanager
async def serve_gateway(app: Any, settings: Any) -> AsyncIterator[list[str]]:
    """Serve the gateway's app as `opencsp-gateway serve` does (gateway.serving: the public server, then
    the metrics server if metrics are on), each on a free loopback port; yield their base URLs."""
    from gateway.serving import serve_all, servers

    running = servers(app, settings)
    for server in running:
        server.config.host, server.config.port = "127.0.0.1", 0
    task = asyncio.create_task(serve_all(running))
    try:
        while not all(server.started for server in running):
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield [f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}" for server in running]
    finally:
        for server in running:
            server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
