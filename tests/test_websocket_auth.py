"""Authentication on websockets, both protocols, against a real uvicorn gateway and a real client.

The token travels in `connection_init`'s payload. A missing or bad one closes the socket with 4403 and
a reason; nothing runs before the ack (4401); the socket closes with 4401 when the token expires,
scheduled from the token's own `exp` (the verifier's leeway only decides what is accepted at init).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from tests.conftest import AppFactory, Issuer
from tests.support.factories import insert_instances, instance_row
from tests.support.servers import serve

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
PROTOCOLS = [TRANSPORT, LEGACY]
CHANGES = "subscription { instanceStatusChanges { to } }"
WAIT = 15.0  # an upper bound on waiting for the server, never an expectation of speed


def websocket_url(base: str) -> str:
    return base.replace("http://", "ws://") + "/graphql"


@pytest.fixture
async def url(app: Starlette) -> AsyncIterator[str]:
    async with serve(app) as base:
        yield websocket_url(base)


async def connect(url: str, protocol: str) -> Any:
    socket = await websockets.connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    assert socket.subprotocol == protocol
    return socket


async def receive(socket: Any) -> dict[str, Any]:
    """The next protocol message, skipping keep-alives."""
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), WAIT))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def closed(socket: Any) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; the close code, its reason, and what arrived before it."""
    before: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as info:
        await drain(socket, before)
    received = info.value.rcvd
    assert received is not None, "the server did not send a close frame"
    return received.code, received.reason, before


async def drain(socket: Any, into: list[dict[str, Any]]) -> None:
    while True:
        into.append(await receive(socket))


async def init(socket: Any, payload: object = None, *, omit: bool = False) -> None:
    message: dict[str, Any] = {"type": "connection_init"}
    if not omit:
        message["payload"] = payload
    await socket.send(json.dumps(message))


async def start(socket: Any, protocol: str, operation_id: str, query: str, **variables: Any) -> None:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    payload = {"query": query, "variables": variables}
    await socket.send(json.dumps({"id": operation_id, "type": kind, "payload": payload}))


async def stop(socket: Any, protocol: str, operation_id: str) -> None:
    kind = "complete" if protocol == TRANSPORT else "stop"
    await socket.send(json.dumps({"id": operation_id, "type": kind}))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def exp_of(token: str) -> int:
    segment = token.split(".")[1]
    exp: int = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))["exp"]
    return exp


async def test_without_a_good_token_the_socket_closes_with_4403(url: str, issuer: Issuer) -> None:
    cases: list[tuple[str, object, str]] = [
        ("no payload", ..., "a bearer token is required"),
        ("empty payload", {}, "a bearer token is required"),
        ("payload not an object", f"Bearer {issuer.token('admin')}", "a bearer token is required"),
        ("token not a string", {"authorization": 42}, "a bearer token is required"),
        (
            "Basic scheme",
            {"authorization": "Basic YTpi"},
            "the Authorization header must be 'Bearer <token>'",
        ),
        ("garbage", bearer("garbage"), "invalid token: malformed token"),
        ("expired", bearer(issuer.token("admin", ttl=-120)), "invalid token: token expired"),
        (
            "tampered signature",
            bearer(issuer.token("admin")[:-8] + "AAAAAAAA"),
            "invalid token: bad signature",
        ),
    ]
    for protocol in PROTOCOLS:
        for case, payload, reason in cases:
            socket = await connect(url, protocol)
            await init(socket, payload, omit=payload is ...)
            assert await closed(socket) == (4403, reason, []), (protocol, case)


async def test_the_handshake(url: str, issuer: Issuer) -> None:
    for protocol in PROTOCOLS:
        # The payload key is matched in any letter case.
        for key in ("authorization", "Authorization", "AUTHORIZATION", "aUtHoRiZaTiOn"):
            async with await connect(url, protocol) as socket:
                await init(socket, {key: f"Bearer {issuer.token('viewer')}"})
                assert await receive(socket) == {"type": "connection_ack"}, (protocol, key)
                if protocol == TRANSPORT:  # queries run over graphql-transport-ws only
                    await start(socket, protocol, "1", "{ me { sub } }")
                    assert await receive(socket) == {
                        "id": "1",
                        "type": "next",
                        "payload": {"data": {"me": {"sub": "viewer-1"}}},
                    }, key
        # Nothing is served before the ack.
        socket = await connect(url, protocol)
        await start(socket, protocol, "1", CHANGES)
        assert await closed(socket) == (4401, "Unauthorized", []), protocol

    # A second connection_init: graphql-transport-ws closes the socket (so no principal can change).
    socket = await connect(url, TRANSPORT)
    await init(socket, bearer(issuer.token("viewer")))
    assert await receive(socket) == {"type": "connection_ack"}
    await init(socket, bearer(issuer.token("admin", sub="root")))
    assert await closed(socket) == (4429, "Too many initialisation requests", [])


async def expires(url: str, protocol: str, token: str) -> None:
    """The socket is acknowledged, then closed 4401 no earlier than the token's exp."""
    socket = await connect(url, protocol)
    await init(socket, bearer(token))
    assert await receive(socket) == {"type": "connection_ack"}
    await start(socket, protocol, "live", CHANGES)  # a subscription does not outlive the token either
    code, reason, before = await closed(socket)
    assert time.time() >= exp_of(token) - 0.05, "closed before the token expired"
    assert (code, reason) == (4401, "token expired"), protocol
    # graphql-ws completes the cancelled subscription on its way out, if the socket still takes it.
    assert all(message == {"type": "complete", "id": "live"} for message in before), before


async def expires_at_once(url: str, protocol: str, token: str) -> None:
    """A token past its exp but within the verifier's leeway (60 s) is admitted, then closed at once."""
    socket = await connect(url, protocol)
    await init(socket, bearer(token))
    code, reason, before = await closed(socket)
    assert (code, reason) == (4401, "token expired"), protocol
    assert before in ([], [{"type": "connection_ack"}]), protocol


async def second_init_changes_nothing(url: str, issuer: Issuer, other_org_instance: str) -> None:
    """graphql-ws ignores a second connection_init: neither its token nor its expiry take over."""
    short = issuer.token("viewer", ttl=2)
    socket = await connect(url, LEGACY)
    await init(socket, bearer(short))
    assert await receive(socket) == {"type": "connection_ack"}
    await init(socket, bearer("garbage"))  # would close 4403 if it were checked
    await init(socket, bearer(issuer.token("admin", sub="root", ttl=3600)))  # would see org-b
    # Still the viewer of org-a: org-b's instance is "no such instance".
    query = "subscription($id: ID!) { instanceStatusChanged(id: $id) { to } }"
    await start(socket, LEGACY, "1", query, id=other_org_instance)
    first = await receive(socket)
    assert first["id"] == "1"
    assert "no such instance" in json.dumps(first["payload"]), first
    # And the first token's expiry still holds: the admin token did not extend it.
    code, reason, _ = await closed(socket)
    assert (code, reason) == (4401, "token expired")


async def test_token_expiry_closes_the_socket(url: str, issuer: Issuer, engine: AsyncEngine) -> None:
    """Concurrently, so the whole test waits for one short-lived token (2 s) only."""
    [other_org] = await insert_instances(engine, [instance_row(1, org_id="org-b")])
    await asyncio.gather(
        *(expires(url, protocol, issuer.token("viewer", ttl=2)) for protocol in PROTOCOLS),
        *(expires_at_once(url, protocol, issuer.token("viewer", ttl=-5)) for protocol in PROTOCOLS),
        second_init_changes_nothing(url, issuer, str(other_org["id"])),
    )


async def test_subscriptions_per_connection_are_capped(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(max_subscriptions_per_connection=2)
    async with serve(app) as base:
        for protocol in PROTOCOLS:
            async with await connect(websocket_url(base), protocol) as socket:
                await init(socket, bearer(issuer.token("viewer")))
                assert await receive(socket) == {"type": "connection_ack"}
                for operation_id in ("1", "2", "3"):
                    await start(socket, protocol, operation_id, CHANGES)
                refused = await receive(socket)
                assert (refused["id"], refused["type"]) == ("3", "error"), protocol
                assert "Subscription limit reached" in json.dumps(refused["payload"]), protocol
                # Ending one frees its slot, and only one.
                await stop(socket, protocol, "1")
                if protocol == LEGACY:
                    assert await receive(socket) == {"type": "complete", "id": "1"}
                await start(socket, protocol, "4", CHANGES)
                await start(socket, protocol, "5", CHANGES)
                refused = await receive(socket)
                assert (refused["id"], refused["type"]) == ("5", "error"), protocol


async def test_a_socket_that_never_initialises_is_closed(make_app: AppFactory) -> None:
    """Unauthenticated sockets must not pile up: both protocols close them after the init timeout."""
    app = await make_app(websocket_init_timeout_seconds=0.5)
    async with serve(app) as base:
        for protocol in PROTOCOLS:
            socket = await connect(websocket_url(base), protocol)
            assert await closed(socket) == (4408, "Connection initialisation timeout", []), protocol
