"""Two gateway replicas on one PostgreSQL: a logout posted to one is honoured by both (NOTIFY on the
revocation channel, the row re-read from the table), and a replica whose LISTEN connection dropped
catches up on what was recorded meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.authn import REVOKED_CHALLENGE
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from services.auth.revocation_store import APPLICATION_NAME
from services.db.engine import make_engine
from services.db.models import SessionRevocation
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import Issuer
from tests.support.databases import postgres_database
from tests.support.servers import serve

pytestmark = pytest.mark.postgres

CONSOLE = "console-client-1"
ME = {"query": "{ me { sub } }"}


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def replicas(settings: Settings) -> AsyncIterator[list[tuple[str, Runtime]]]:
    settings = Settings(**{**settings.model_dump(), "oidc_logout_client_ids": [CONSOLE], "_env_file": None})
    cluster, runner = SimulatedCluster(step_delay=0.01), SimulatedSemaphore()
    async with contextlib.AsyncExitStack() as stack:
        running = []
        for _ in range(2):
            runtime = await build_runtime(
                settings, engine=make_engine(settings.database_url), cluster=cluster, runner=runner
            )
            running.append((await stack.enter_async_context(serve(create_app(runtime))), runtime))
        yield running


async def me(base: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base) as http:
        return await http.post("/graphql", json=ME, headers={"Authorization": f"Bearer {token}"})


async def open_socket(base: str, token: str, protocol: str) -> Any:
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql", subprotocols=[Subprotocol(protocol)]
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
    return ws


async def closed_with(ws: Any) -> tuple[int, str] | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed as closed:
        frame = closed.rcvd
    return (frame.code, frame.reason) if frame is not None else None


async def test_a_logout_posted_to_one_replica_is_honoured_by_both(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with replicas(settings) as ((base_a, _), (base_b, _)):
        old = issuer.token("viewer", sub="leaving-1")
        for base in (base_a, base_b):
            assert (await me(base, old)).status_code == 200
        sockets = [
            await open_socket(base_a, old, "graphql-transport-ws"),
            await open_socket(base_b, old, "graphql-transport-ws"),
            await open_socket(base_b, old, "graphql-ws"),
        ]
        logout = issuer.dev.logout_token(audience=CONSOLE, sub="leaving-1")
        async with httpx.AsyncClient(base_url=base_a) as http:
            assert (
                await http.post("/auth/backchannel-logout", data={"logout_token": logout})
            ).status_code == 200

        for ws in sockets:
            assert await closed_with(ws) == (4401, "signed out")
        for base in (base_a, base_b):
            refused = await me(base, old)
            assert refused.status_code == 401, base
            assert refused.headers["www-authenticate"] == REVOKED_CHALLENGE


async def test_a_replica_catches_up_when_its_listen_connection_comes_back(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with replicas(settings) as (_, (base_b, runtime_b)):
        token = issuer.token("viewer", sub="missed-1")
        assert (await me(base_b, token)).status_code == 200
        revocations = runtime_b.revocations
        assert revocations is not None
        before = len(revocations)
        # Recorded while nobody hears of it (no NOTIFY), as a revocation committed during a LISTEN gap.
        now = datetime.now(UTC)
        async with engine.begin() as connection:
            await connection.execute(
                insert(SessionRevocation).values(
                    sub="missed-1",
                    revoked_at=now + timedelta(seconds=5),
                    expires_at=now + timedelta(hours=1),
                    source="test",
                    created_at=now,
                )
            )
        assert (await me(base_b, token)).status_code == 200  # nothing announced it yet
        async with engine.connect() as connection:
            killed = await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :name AND datname = current_database()"
                ),
                {"name": APPLICATION_NAME},
            )
            assert list(killed.scalars()) == [True, True]  # both replicas' LISTEN connections
        for _ in range(1000):
            if len(revocations) > before:
                break
            await asyncio.sleep(0.01)
        refused = await me(base_b, token)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == REVOKED_CHALLENGE
