"""Live status changes over both websocket protocols, from a real uvicorn server with its lifespan on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.bootstrap import Runtime
from schema.multiplex import _Group
from tests.conftest import Issuer
from tests.support.documents import create_instance
from tests.support.servers import serve

CHANGES = "subscription { instanceStatusChanges { instance { id name } from to reason } }"


@pytest.fixture
async def live(runtime: Runtime) -> AsyncIterator[str]:
    """The gateway with its background work running (event hub, watch, reconcile)."""
    app: Starlette = create_app(runtime, own_runtime=True)
    async with serve(app) as base:
        yield base


async def receive(socket: Any, timeout: float = 10) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), timeout))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def open_transport_ws(base: str, token: str) -> Any:
    socket = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    await socket.send(
        json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    )
    assert await receive(socket) == {"type": "connection_ack"}
    return socket


async def test_a_dashboard_sees_the_whole_lifecycle_in_order(live: str, issuer: Issuer) -> None:
    socket = await open_transport_ws(live, issuer.token("viewer"))
    try:
        await socket.send(json.dumps({"id": "all", "type": "subscribe", "payload": {"query": CHANGES}}))
        await asyncio.sleep(0.2)  # the subscription is registered before the first change
        instance_id = await create_instance(live, issuer, "web-1")
        seen: list[tuple[str | None, str]] = []
        while not seen or seen[-1][1] != "ACTIVE":
            message = await receive(socket)
            assert message["type"] == "next", message
            change = message["payload"]["data"]["instanceStatusChanges"]
            assert change["instance"] == {"id": instance_id, "name": "web-1"}
            seen.append((change["from"], change["to"]))
        assert seen == [
            (None, "PENDING"),
            ("PENDING", "PROVISIONING"),
            ("PROVISIONING", "CONFIGURING"),
            ("CONFIGURING", "ACTIVE"),
        ]
    finally:
        await socket.close()


async def test_row_level_rules_decide_who_receives_a_change(live: str, issuer: Issuer) -> None:
    bob = await open_transport_ws(live, issuer.token("user", sub="bob"))
    alice = await open_transport_ws(live, issuer.token("user", sub="alice"))
    try:
        for socket in (bob, alice):
            await socket.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": CHANGES}}))
        await asyncio.sleep(0.2)
        await create_instance(live, issuer, "alices-vm", sub="alice")
        first = await receive(alice)
        assert first["payload"]["data"]["instanceStatusChanges"]["to"] == "PENDING"
        # Bob may not see Alice's instance: he gets nothing, while his own creation reaches him.
        await create_instance(live, issuer, "bobs-vm", sub="bob")
        message = await receive(bob)
        assert message["payload"]["data"]["instanceStatusChanges"]["instance"]["name"] == "bobs-vm"
    finally:
        await bob.close()
        await alice.close()


async def test_field_rules_apply_to_the_payload(live: str, issuer: Issuer) -> None:
    query = "subscription { instanceStatusChanges { to instance { name ipAddress } } }"
    socket = await open_transport_ws(live, issuer.token("viewer"))
    try:
        await socket.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": query}}))
        await asyncio.sleep(0.2)
        await create_instance(live, issuer, "net-1")
        message = await receive(socket)
        assert message["type"] == "next"
        assert (
            message["payload"]["data"] is None
            or message["payload"]["data"]["instanceStatusChanges"]["instance"]["ipAddress"] is None
        )
        assert message["payload"]["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    finally:
        await socket.close()


async def test_one_instance_subscription_and_no_existence_leak(live: str, issuer: Issuer) -> None:
    theirs = await create_instance(live, issuer, "private-1", sub="carol")
    socket = await open_transport_ws(live, issuer.token("user", sub="mallory"))
    try:
        query = "subscription($id: ID!) { instanceStatusChanged(id: $id) { to } }"
        payload = {"query": query, "variables": {"id": theirs}}
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        message = await receive(socket)
        assert message["type"] == "next"
        assert message["payload"]["errors"][0]["message"] == "no such instance"
        assert await receive(socket) == {"id": "1", "type": "complete"}
        payload = {"query": query, "variables": {"id": "00000000-0000-0000-0000-000000000000"}}
        await socket.send(json.dumps({"id": "2", "type": "subscribe", "payload": payload}))
        missing = await receive(socket)
        assert missing["payload"]["errors"][0]["message"] == "no such instance"
        assert await receive(socket) == {"id": "2", "type": "complete"}
    finally:
        await socket.close()


async def eventually(check: Any, attempts: int = 250) -> bool:
    for _ in range(attempts):
        if check():
            return True
        await asyncio.sleep(0.02)
    return bool(check())


async def test_identical_subscriptions_share_one_execution_and_leave_nothing_behind(
    live: str, issuer: Issuer, runtime: Runtime
) -> None:
    hub = runtime.services.hub
    sockets = [await open_transport_ws(live, issuer.token("viewer", sub=f"viewer-{n}")) for n in range(3)]
    for n, socket in enumerate(sockets):
        for m in range(2):
            message = {"id": f"{n}-{m}", "type": "subscribe", "payload": {"query": CHANGES}}
            await socket.send(json.dumps(message))
    # Six subscribers with the same document and the same rights: one execution, one hub mailbox.
    assert await eventually(lambda: hub.subscribers == 1)
    await create_instance(live, issuer, "shared-1")
    for socket in sockets:
        got = [await receive(socket), await receive(socket)]
        assert sorted(m["id"] for m in got)[-1].endswith("-1")
        assert {m["payload"]["data"]["instanceStatusChanges"]["to"] for m in got} == {"PENDING"}
    # Other rights, other answers: a user's subscription runs on its own.
    mine = await open_transport_ws(live, issuer.token("user", sub="alice"))
    await mine.send(json.dumps({"id": "u", "type": "subscribe", "payload": {"query": CHANGES}}))
    assert await eventually(lambda: hub.subscribers == 2)
    for socket in [*sockets, mine]:
        await socket.close()  # the clients vanish without completing their subscriptions
    assert await eventually(lambda: hub.subscribers == 0)


async def test_a_shared_run_tags_each_change_with_its_instance(
    live: str, issuer: Issuer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The resolver names the instance of each change on the run's context, and the group puts it on the
    result (`SharedData.instance`): what the fan-out writer coalesces a slow member by."""
    tags: list[object] = []
    publish = _Group.publish

    def recording(group: _Group, result: Any, instance: Any = None) -> None:
        tags.append(instance)
        publish(group, result, instance)

    monkeypatch.setattr(_Group, "publish", recording)
    socket = await open_transport_ws(live, issuer.token("viewer"))
    try:
        await socket.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": CHANGES}}))
        assert await eventually(lambda: runtime.services.hub.subscribers == 1)
        instance_id = await create_instance(live, issuer, "tagged-1")
        message = await receive(socket)
        assert message["payload"]["data"]["instanceStatusChanges"]["instance"]["id"] == instance_id
        assert tags
        assert all(str(tag) == instance_id for tag in tags), tags
    finally:
        await socket.close()


async def test_readiness_covers_the_watch_and_the_event_listener(live: str) -> None:
    async with httpx.AsyncClient(base_url=live) as http:
        for _ in range(100):
            body = (await http.get("/readyz")).json()
            if body["status"] == "ready":
                break
            await asyncio.sleep(0.05)
    assert body == {
        "status": "ready",
        "checks": {"database": "ok", "jwks": "ok", "cluster_watch": "ok", "events": "ok"},
    }
