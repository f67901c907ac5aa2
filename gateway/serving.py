"""One serving process: its runtime, and its listeners on one event loop (the public API, and `/metrics` on
a port of its own). `serve` and `dev` both end in `run_server`.

`/metrics` is unauthenticated and tells who calls what and how often, so it never shares the port tenants
reach: its own uvicorn server serves it on OPENCSP_METRICS_PORT, which the Service and NetworkPolicy open
to the monitoring namespace only. Both servers share the loop (and so the app's registry and runtime);
when either stops (a signal, a port that cannot be bound), the other stops too.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Sequence

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.bootstrap import build_runtime
from gateway.documents import ManifestError
from gateway.observability.logs import configure_logging
from gateway.settings import Settings
from gateway.startup import StartupError, warn_without_admin_org
from gateway.wsprotocol import PreFramedWebSocketProtocol
from services.kubernetes.errors import ClusterError


def run_server(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    """Build the runtime and serve it (and /metrics, on its own port) on one event loop, so pools and
    clients live where they are used. `sockets`: an already bound public listener (`serve --workers`)."""
    configure_logging(format=settings.logs_as, level=settings.log_level)
    warn_without_admin_org(settings)

    async def main() -> None:
        try:
            runtime = await build_runtime(settings)
        except ClusterError as error:
            raise StartupError(str(error)) from None
        try:
            app = create_app(runtime)
        except ManifestError as error:  # one line naming each bad entry, not a traceback
            await runtime.aclose()
            raise StartupError(str(error)) from None
        await serve_all(servers(app, settings), sockets)

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(main())


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (uvicorn[standard] brings it); the benchmarks serve on the same loop."""
    try:
        import uvloop  # optional: uvicorn[standard] brings it, a plain uvicorn does not
    except ImportError:
        return None
    return uvloop.new_event_loop


def websocket_protocol(settings: Settings) -> str | type[asyncio.Protocol]:
    """uvicorn's websocket implementation; websockets-sansio with the pre-framed write of shared frames
    (gateway.wsprotocol) unless OPENCSP_WEBSOCKET_PREFRAMED=false."""
    if settings.websocket_implementation == "websockets-sansio" and settings.websocket_preframed:
        return PreFramedWebSocketProtocol
    return settings.websocket_implementation


def servers(app: Starlette, settings: Settings) -> list[uvicorn.Server]:
    """The public server (runs the app's lifespan), then the metrics server if metrics are on."""
    public = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,  # uvicorn's loggers go through ours (configure_logging)
        proxy_headers=True,
        lifespan="on",
        ws=websocket_protocol(settings),
        ws_max_size=settings.max_body_bytes,  # a websocket message is a request body too
        ws_per_message_deflate=False,
    )
    found = [uvicorn.Server(public)]
    metrics_app: Starlette | None = app.state.metrics_app
    if metrics_app is not None:
        metrics = uvicorn.Config(
            metrics_app,
            host=settings.host,
            port=settings.metrics_port,
            log_level=settings.log_level.lower(),
            log_config=None,
            lifespan="off",  # the public server's lifespan starts and stops the runtime
            access_log=False,  # a scrape every few seconds is not news
            ws="none",
        )
        found.append(uvicorn.Server(metrics))
    return found


async def serve_all(running: Sequence[uvicorn.Server], sockets: list[socket.socket] | None = None) -> None:
    """Serve until the first server stops, then stop the rest and wait for them. `sockets` go to the first
    (public) server; the others bind their own ports."""
    tasks = [
        asyncio.create_task(server.serve(sockets if n == 0 else None), name=f"uvicorn {n}")
        for n, server in enumerate(running)
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for server in running:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
