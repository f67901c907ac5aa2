"""A real HTTP issuer for tests: JWKS and OIDC discovery served by uvicorn on 127.0.0.1.

Tests steer it (published keys, `Cache-Control`, status, up/down, a gate that holds responses) and read
what it saw (fetch counts), so the key-set cache is tested against real sockets, not a fake client.

    async with JwksServer() as server:
        server.publish(key)
        ... KeySetCache(jwks_url=server.jwks_url) ...
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from types import TracebackType
from typing import Any

import uvicorn
from joserfc import jwk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

JWKS_PATH = "/oauth/v2/keys"
DISCOVERED_JWKS_PATH = "/discovered/keys"
DISCOVERY_PATH = "/.well-known/openid-configuration"


class JwksServer:
    """One issuer. Attributes tests set: `jwks`, `cache_control`, `status`, `discovery`, `gate`."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.cache_control: str | None = None
        self.status = 200
        self.discovery = True
        self.discovery_issuer: str | None = None  # None: the true issuer; set to make it lie
        self.gate: asyncio.Event | None = None
        """When set, JWKS responses wait for it: lets a test hold a fetch in flight."""
        self.requests: Counter[str] = Counter()
        self.request_seen = asyncio.Event()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._app = Starlette(
            routes=[
                Route(JWKS_PATH, self._keys),
                Route(DISCOVERED_JWKS_PATH, self._keys),
                Route(DISCOVERY_PATH, self._discovery),
            ]
        )

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}{JWKS_PATH}"

    @property
    def fetches(self) -> int:
        """JWKS requests answered (at either path), whatever the status."""
        return self.requests[JWKS_PATH] + self.requests[DISCOVERED_JWKS_PATH]

    @property
    def up(self) -> bool:
        return self._server is not None

    def reset(self, *keys: jwk.Key) -> None:
        """Back to a healthy issuer publishing `keys`, with counters at zero (for a shared server)."""
        self.publish(*keys)
        self.cache_control = None
        self.status = 200
        self.discovery = True
        self.discovery_issuer = None
        self.gate = None
        self.requests.clear()
        self.request_seen = asyncio.Event()

    def publish(self, *keys: jwk.Key) -> None:
        """Serve the public halves of `keys` from now on."""
        self.jwks = {"keys": [key.as_dict(private=False) for key in keys]}

    async def _keys(self, request: Request) -> Response:
        self.requests[request.url.path] += 1
        self.request_seen.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return Response("upstream trouble", status_code=self.status)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else None
        return JSONResponse(self.jwks, headers=headers)

    async def _discovery(self, request: Request) -> Response:
        self.requests[DISCOVERY_PATH] += 1
        if not self.discovery:
            return Response("not found", status_code=404)
        issuer = self.discovery_issuer or self.issuer
        return JSONResponse({"issuer": issuer, "jwks_uri": f"{self.issuer}{DISCOVERED_JWKS_PATH}"})

    async def start(self) -> None:
        """Listen (again) on our port; the first start picks a free one."""
        if self._server is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, lifespan="off", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                await self._task  # re-raises why it could not start
                raise RuntimeError("JWKS test server stopped during start-up")
            await asyncio.sleep(0.005)
        self._server = server

    async def stop(self) -> None:
        """Stop listening: clients now get connection refused (the issuer is down)."""
        if self._server is None or self._task is None:
            return
        if self.gate is not None:
            self.gate.set()
        self._server.should_exit = True
        await self._task
        self._server = None
        self._task = None

    async def __aenter__(self) -> JwksServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
