"""Two gateway replicas on one PostgreSQL database: a change committed through either reaches the
subscribers of both, exactly once each (NOTIFY in the transition's transaction, LISTEN on each replica).

The replicas are two runtimes, each with its own engine and its own real uvicorn server, sharing one
simulated cluster and Semaphore as real replicas share one cluster: both watch it and race to record
each transition, and the compare-and-set lets exactly one of them commit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from services.db.engine import make_engine
from services.instances.states import InstanceStatus
from services.instances.store import InstanceStore
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import Issuer
from tests.support.databases import postgres_database
from tests.support.documents import CHANGES, CREATE, LIFECYCLE
from tests.support.servers import serve

pytestmark = pytest.mark.postgres

DELETE = "mutation($id: ID!) { deleteInstance(id: $id) { userErrors { code message } } }"


@pytest.fixture
async def database_url() -> AsyncIterator[str]:
    """PostgreSQL only: replicas share state through it (SQLite has no NOTIFY, and no second process)."""
    async with postgres_database() as url:
        yield url


@contextlib.asynccontextmanager
async def replicas(settings: Settings, count: int) -> AsyncIterator[list[tuple[str, Runtime]]]:
    cluster = SimulatedCluster(step_delay=0.01)
    runner = SimulatedSemaphore(step_delay=0.01)
    # Each subscription on its own, so the test can count them per replica; sharing has its own tests.
    settings = Settings(**{**settings.model_dump(), "share_subscriptions": False, "_env_file": None})
    async with contextlib.AsyncExitStack() as stack:
        running: list[tuple[str, Runtime]] = []
        for _ in range(count):
            engine = make_engine(settings.database_url)  # one pool per replica, as one per process
            runtime = await build_runtime(settings, engine=engine, cluster=cluster, runner=runner)
            base = await stack.enter_async_context(serve(create_app(runtime, own_runtime=True)))
            running.append((base, runtime))
        yield running


async def subscriber(base: str, token: str, protocol: str) -> Any:
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=[protocol],  # type: ignore[list-item]
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    await ws.send(json.dumps({"id": "changes", "type": start, "payload": {"query": CHANGES}}))
    return ws


async def changes_until_deleting(ws: Any) -> list[tuple[str, str | None, str]]:
    """(instance id, from, to) of each change, up to and including the first DELETING."""
    seen: list[tuple[str, str | None, str]] = []
    while not seen or seen[-1][2] != "DELETING":
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] in ("ka", "ping", "pong"):
            continue
        assert message["type"] in ("next", "data"), message
        change = message["payload"]["data"]["instanceStatusChanges"]
        seen.append((change["instance"]["id"], change["from"], change["to"]))
    return seen


async def mutate(base: str, issuer: Issuer, query: str, variables: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, headers=issuer.headers("admin")) as http:
        body: dict[str, Any] = (
            await http.post("/graphql", json={"query": query, "variables": variables})
        ).json()
    payload: dict[str, Any] = next(iter(body["data"].values()))
    assert payload["userErrors"] == [], body
    return payload


async def test_a_change_through_either_replica_reaches_every_subscriber_once(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    # `engine` brought the database to the head revision; each replica connects with its own.
    async with replicas(settings, 2) as ((base_a, runtime_a), (base_b, runtime_b)):
        token = issuer.token("viewer")
        sockets = [
            await subscriber(base, token, protocol)
            for base in (base_a, base_b)
            for protocol in ("graphql-transport-ws", "graphql-ws")
        ]
        try:
            for runtime in (runtime_a, runtime_b):
                hub = runtime.services.hub
                for _ in range(500):
                    if hub.subscribers == 2:
                        break
                    await asyncio.sleep(0.01)
                assert hub.subscribers == 2

            # One instance ordered through each replica; the lifecycle is driven by whichever replica wins.
            first = (await mutate(base_a, issuer, CREATE, {"name": "via-a"}))["instance"]["id"]
            second = (await mutate(base_b, issuer, CREATE, {"name": "via-b"}))["instance"]["id"]
            store = InstanceStore(runtime_a.engine, runtime_a.bus)  # read only
            for instance_id in (first, second):
                for _ in range(2000):
                    record = await store.get(uuid.UUID(instance_id))
                    if record is not None and record.status is InstanceStatus.ACTIVE:
                        break
                    await asyncio.sleep(0.01)
            # Deleting through replica B marks the end: anything delivered twice would have come before it.
            await mutate(base_b, issuer, DELETE, {"id": first})

            expected = Counter(
                [(first, None, "PENDING"), (second, None, "PENDING")]
                + [
                    (instance_id, before, after)
                    for instance_id in (first, second)
                    for before, after in itertools.pairwise(LIFECYCLE)
                ]
            )
            for ws in sockets:
                seen = await changes_until_deleting(ws)
                assert seen[-1] == (first, "ACTIVE", "DELETING")
                assert Counter(seen[:-1]) == expected  # each change once, none missing
                # And each instance's own changes arrived in order.
                for instance_id in (first, second):
                    assert [to for i, _, to in seen if i == instance_id][:4] == LIFECYCLE
        finally:
            for ws in sockets:
                await ws.close()
