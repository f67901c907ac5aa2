"""Subscribers as they come: real third-party clients (graphql-ws and subscriptions-transport-ws on Node),
clients that stop reading, clients that vanish, idle clients (keep-alives) and greedy ones (the cap).

Each gateway here is a real uvicorn server with its lifespan on, so the event hub runs as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from gateway.websocket import GraphQLWebSocket
from schema.build import build_schema
from schema.context import Context
from services.events.hub import Hub
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import Issuer
from tests.support.documents import CHANGES, LIFECYCLE, create_instance

NODE_DIR = Path(__file__).parent / "node"
INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"
TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"


@contextlib.asynccontextmanager
async def gateway(
    settings: Settings, engine: AsyncEngine, *, send_buffer: int | None = None, **overrides: Any
) -> AsyncIterator[tuple[str, Runtime]]:
    """A real server over a runtime with `overrides`; `send_buffer` shrinks each accepted socket's kernel
    send buffer, so a client that stops reading makes the server's sends wait after a few messages."""
    # Unshared by default: these tests count one hub mailbox per subscription (sharing: test_multiplex).
    changed = Settings(
        **{**settings.model_dump(), "share_subscriptions": False, **overrides, "_env_file": None}
    )
    runtime = await build_runtime(
        changed,
        engine=engine,
        cluster=SimulatedCluster(step_delay=0.01),
        runner=SimulatedSemaphore(step_delay=0.01),
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)  # inherited on accept
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime, own_runtime=True), log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", runtime
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        listener.close()


async def receive(socket: Any, timeout: float = 10) -> dict[str, Any]:
    """The next protocol message that is not a keep-alive."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def connect(base: str, token: str, protocol: str = TRANSPORT, **kw: Any) -> Any:
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=[protocol],  # type: ignore[list-item]
        **kw,
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert await receive(ws) == {"type": "connection_ack"}
    return ws


def subscribe_message(protocol: str, operation_id: str, query: str) -> str:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    return json.dumps({"id": operation_id, "type": kind, "payload": {"query": query}})


async def until(condition: Any, what: str, timeout: float = 10) -> None:
    """Wait for a condition the server reaches by itself (no fixed sleeps, no timed assertions)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def create(base: str, issuer: Issuer, name: str) -> str:
    return await create_instance(base, issuer, name, role="admin", sub="admin-1")


# -- real third-party clients -----------------------------------------------------------------------


async def node_subscriber(client: str, base: str, token: str, query: str) -> asyncio.subprocess.Process:
    node = shutil.which("node")
    assert node, "Node.js is needed for the client suites; install it and run `make test`."
    assert INSTALLED.exists(), (
        "the Node clients are not installed; run `make tests/node/node_modules/.package-lock.json`."
    )
    # A subprocess on the event loop: the server in this same loop must keep serving it.
    return await asyncio.create_subprocess_exec(
        node,
        str(NODE_DIR / "subscribe.mjs"),
        client,
        base.replace("http://", "ws://") + "/graphql",
        query,
        "ACTIVE",
        cwd=NODE_DIR,
        env={**os.environ, "SUBSCRIBE_AUTHORIZATION": f"Bearer {token}"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_real_clients_of_both_protocols_receive_the_whole_lifecycle_in_order(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    clients = {"graphql-ws": TRANSPORT, "subscriptions-transport-ws": LEGACY}
    async with gateway(settings, engine) as (base, runtime):
        processes = [
            await node_subscriber(client, base, issuer.token("viewer"), CHANGES) for client in clients
        ]
        try:
            for process, protocol in zip(processes, clients.values(), strict=True):
                assert process.stdout is not None
                line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
                assert json.loads(line) == {"connected": protocol}, line
            await until(lambda: runtime.services.hub.subscribers == 2, "both subscriptions")
            instance_id = await create(base, issuer, "watched-vm")
            outputs = [await asyncio.wait_for(process.communicate(), timeout=20) for process in processes]
        finally:
            for process in processes:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        changes = [
            json.loads(line)["result"]["data"]["instanceStatusChanges"] for line in stdout.splitlines()
        ]
        assert [change["instance"] for change in changes] == [{"id": instance_id, "name": "watched-vm"}] * 4
        assert [change["to"] for change in changes] == LIFECYCLE
        assert [change["from"] for change in changes] == [None, *LIFECYCLE[:-1]]


# -- a client that stops reading ------------------------------------------------------------------

# A large result (25 aliased instances) fills the socket's buffers after a few events.
WIDE = (
    "subscription { instanceStatusChanges { to "
    + " ".join(
        f"i{n}: instance {{ id name description flavor image ownerName createdAt }}" for n in range(25)
    )
    + " } }"
)


async def test_a_stalled_subscriber_never_slows_others_and_is_closed_with_a_reason(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    limit, instances = 2, 8
    async with gateway(settings, engine, send_buffer=4096, subscription_backlog_limit=limit) as (
        base,
        runtime,
    ):
        hub: Hub = runtime.services.hub
        token = issuer.token("admin")
        # The stalled client: a tiny receive buffer, and its library stops reading after one queued message.
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.setblocking(False)
        await asyncio.get_running_loop().sock_connect(raw, ("127.0.0.1", int(base.rsplit(":", 1)[1])))
        stalled = await connect(base, token, sock=raw, max_queue=1, compression=None)
        healthy = await connect(base, token)
        try:
            for n in range(3):
                await stalled.send(subscribe_message(TRANSPORT, f"wide-{n}", WIDE))
            await healthy.send(subscribe_message(TRANSPORT, "all", CHANGES))
            await until(lambda: hub.subscribers == 4, "four subscriptions")

            ids = await asyncio.gather(*(create(base, issuer, f"load-{n}") for n in range(instances)))
            # The healthy subscriber gets every change of every instance while the other one is stuck.
            seen: dict[str, list[str]] = {}
            while sum(map(len, seen.values())) < 4 * instances:
                message = await receive(healthy)
                assert message["type"] == "next", message
                change = message["payload"]["data"]["instanceStatusChanges"]
                seen.setdefault(change["instance"]["id"], []).append(change["to"])
            assert seen == {instance_id: LIFECYCLE for instance_id in ids}
            # Its three subscriptions fell more than `limit` changes behind, so the hub let them go...
            await until(lambda: hub.overflows == 3, "the stalled subscriptions to be closed")

            # ...and once it reads again it learns why, after what was already on the wire.
            reasons: dict[str, str] = {}
            completed: set[str] = set()
            while len(completed) < 3:
                message = await receive(stalled)
                if message["type"] == "complete":
                    completed.add(message["id"])
                elif message["type"] == "next" and message["payload"].get("errors"):
                    error = message["payload"]["errors"][0]
                    assert error["extensions"]["code"] == "SUBSCRIPTION_CLOSED"
                    reasons[message["id"]] = error["message"]
            assert reasons == {
                f"wide-{n}": f"the subscriber fell more than {limit} changes behind; subscribe again"
                for n in range(3)
            }
            await until(lambda: hub.subscribers == 1, "the closed subscriptions to be released")
        finally:
            await stalled.close()
            await healthy.close()


# -- a client that vanishes ------------------------------------------------------------------------


def listeners(runtime: Runtime) -> int:
    bus: Any = runtime.bus
    return bus.listeners if hasattr(bus, "listeners") else len(bus._queues)


async def test_a_vanished_client_leaves_no_task_or_queue_behind(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    async with gateway(settings, engine) as (base, runtime):
        hub = runtime.services.hub
        await until(lambda: listeners(runtime) == 1, "the hub to listen")
        tasks_before = asyncio.all_tasks()
        sockets = []
        for protocol in (TRANSPORT, LEGACY):
            ws = await connect(base, issuer.token("viewer"), protocol)
            for n in range(5):
                await ws.send(subscribe_message(protocol, str(n), CHANGES))
            sockets.append(ws)
        await until(lambda: hub.subscribers == 10, "ten subscriptions")
        assert asyncio.all_tasks() - tasks_before  # each connection and subscription has its tasks
        for ws in sockets:
            ws.transport.abort()  # gone without a close frame, as when a laptop lid shuts
        await until(lambda: hub.subscribers == 0, "the subscriptions to be released")
        # Every task started since then has ended (the runtime's own may come and go meanwhile).
        await until(lambda: not asyncio.all_tasks() - tasks_before, "the connections' tasks to end")
        assert listeners(runtime) == 1  # the hub's one queue on the bus, none per subscriber


# -- idle clients and greedy ones -----------------------------------------------------------------


@pytest.fixture
async def quick_keep_alive(runtime: Runtime) -> AsyncIterator[str]:
    """The websocket view alone, with keep-alives every 50 ms."""

    async def context(_: WebSocket) -> Context:
        return Context.create(runtime.services, None)

    view = GraphQLWebSocket(
        build_schema(),
        context,
        verifier=runtime.verifier,
        max_subscriptions=5,
        init_timeout=5,
        keep_alive_interval=0.05,
    )
    await runtime.refresh_keys()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=[WebSocketRoute("/graphql", view)]), port=0, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started, "the server")
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@pytest.mark.parametrize(("protocol", "keep_alive"), [(TRANSPORT, "ping"), (LEGACY, "ka")])
async def test_idle_connections_get_keep_alives(
    quick_keep_alive: str, issuer: Issuer, protocol: str, keep_alive: str
) -> None:
    ws = await connect(quick_keep_alive, issuer.token("viewer"), protocol)
    try:
        for _ in range(3):
            message = json.loads(await asyncio.wait_for(ws.recv(), timeout=5))
            assert message == {"type": keep_alive}
            if keep_alive == "ping":
                await ws.send(json.dumps({"type": "pong"}))
        if protocol == TRANSPORT:  # and the server still answers the client's own pings
            await ws.send(json.dumps({"type": "ping"}))
            while (message := json.loads(await asyncio.wait_for(ws.recv(), timeout=5))) != {"type": "pong"}:
                assert message == {"type": "ping"}
    finally:
        await ws.close()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_the_subscription_over_the_cap_is_refused(
    settings: Settings, engine: AsyncEngine, issuer: Issuer, protocol: str
) -> None:
    async with gateway(settings, engine, max_subscriptions_per_connection=2) as (base, runtime):
        ws = await connect(base, issuer.token("viewer"), protocol)
        try:
            for n in range(2):
                await ws.send(subscribe_message(protocol, f"ok-{n}", CHANGES))
            await until(lambda: runtime.services.hub.subscribers == 2, "two subscriptions")
            await ws.send(subscribe_message(protocol, "third", CHANGES))
            refused = await receive(ws)
            assert refused["type"] == "error"
            assert refused["id"] == "third"
            errors = refused["payload"] if isinstance(refused["payload"], list) else [refused["payload"]]
            assert errors[0]["message"] == "Subscription limit reached"
            # The two admitted subscriptions are untouched and still deliver.
            instance_id = await create(base, issuer, f"cap-{uuid.uuid4().hex[:6]}")
            got = {(await receive(ws))["id"] for _ in range(2)}
            assert got == {"ok-0", "ok-1"}
            assert runtime.services.hub.subscribers == 2
            assert instance_id
        finally:
            await ws.close()


# -- a long-lived subscriber ----------------------------------------------------------------------


async def test_nested_fields_are_read_afresh_for_every_change(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    """A connection's loaders live as long as it does; a change must not be answered from an old read."""
    query = "subscription { instanceStatusChanges { to instance { events(last: 1) { toStatus } } } }"
    async with gateway(settings, engine) as (base, runtime):
        ws = await connect(base, issuer.token("viewer"))
        try:
            await ws.send(subscribe_message(TRANSPORT, "history", query))
            await until(lambda: runtime.services.hub.subscribers == 1, "the subscription")
            await create(base, issuer, "history-vm")
            for status in LIFECYCLE:
                change = (await receive(ws))["payload"]["data"]["instanceStatusChanges"]
                assert change == {"to": status, "instance": {"events": [{"toStatus": status}]}}
        finally:
            await ws.close()
