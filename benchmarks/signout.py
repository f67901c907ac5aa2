"""Sign-out latency: from posting a logout token to replica A until a websocket of that user closes.

    .venv/bin/python -m benchmarks.signout                 # two replicas on one PostgreSQL, 50 rounds
    .venv/bin/python -m benchmarks.signout --sqlite        # one gateway on SQLite (no NOTIFY)

Each round opens a `graphql-transport-ws` socket for a new user on replica B (on SQLite: the same
gateway), posts that user's logout token to replica A and times until the socket's 4401 close arrives.
Replicas are runtimes with their own engine, each served by uvicorn on this event loop, as in
tests/test_revocation_replicas.py. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import websockets
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.bootstrap import build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.auth.dev_issuer import DevIssuer
from services.db.engine import make_engine
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.peers.jwks_server import JwksServer
from tests.support.databases import database
from tests.support.servers import serve

CONSOLE = "console-bench"
PROJECT = "bench"


@contextlib.asynccontextmanager
async def gateways(kind: str, count: int, directory: Path) -> AsyncIterator[tuple[list[str], DevIssuer]]:
    async with database(kind, directory) as url, JwksServer() as server:
        issuer = DevIssuer(directory=directory / "issuer", issuer=server.issuer, project_id=PROJECT)
        server.jwks = issuer.jwks()
        settings = Settings(  # type: ignore[call-arg]
            database_url=url,
            oidc_issuer=server.issuer,
            oidc_project_id=PROJECT,
            oidc_jwks_url=server.jwks_url,
            oidc_logout_client_ids=[CONSOLE],
            metrics=False,
            _env_file=None,
        )
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()
        async with contextlib.AsyncExitStack() as stack:
            bases = []
            for _ in range(count):
                runtime = await build_runtime(
                    settings,
                    engine=make_engine(url),
                    cluster=SimulatedCluster(step_delay=0.01),
                    runner=SimulatedSemaphore(),
                )
                bases.append(await stack.enter_async_context(serve(create_app(runtime), access_log=False)))
            yield bases, issuer


async def one_round(post_to: str, socket_on: str, issuer: DevIssuer, sub: str) -> float:
    token = issuer.issue("viewer", sub=sub)
    async with websockets.connect(
        socket_on.replace("http://", "ws://") + "/graphql", subprotocols=[Subprotocol("graphql-transport-ws")]
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        await ws.recv()
        logout = issuer.logout_token(audience=CONSOLE, sub=sub)
        async with httpx.AsyncClient(base_url=post_to) as http:
            started = time.perf_counter()
            response = await http.post("/auth/backchannel-logout", data={"logout_token": logout})
            if response.status_code != 200:
                raise RuntimeError(f"logout refused: {response.text}")
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed as closed:
                if closed.rcvd is None or closed.rcvd.code != 4401:
                    raise RuntimeError(f"closed otherwise: {closed}") from None
            return time.perf_counter() - started


async def run(sqlite: bool, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        async with gateways("sqlite" if sqlite else "postgresql", 1 if sqlite else 2, Path(directory)) as (
            bases,
            issuer,
        ):
            post_to, socket_on = bases[0], bases[-1]
            await one_round(post_to, socket_on, issuer, "warm-up")
            times = [await one_round(post_to, socket_on, issuer, f"user-{n}") for n in range(rounds)]
    ms = sorted(1000 * t for t in times)
    where = "one gateway, SQLite" if sqlite else "two replicas, PostgreSQL (posted to A, socket on B)"
    print(f"{where}: {rounds} rounds, logout POST → 4401 close")
    p90 = ms[int(0.9 * (len(ms) - 1))]
    print(f"  p50 {statistics.median(ms):.1f} ms   p90 {p90:.1f} ms   max {ms[-1]:.1f} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--sqlite", action="store_true", help="one gateway on SQLite instead of two on PostgreSQL"
    )
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    asyncio.run(run(args.sqlite, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
