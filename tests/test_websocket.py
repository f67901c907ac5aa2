"""Both websocket protocols against a real uvicorn server with a real websocket client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from starlette.applications import Starlette

from tests.conftest import Issuer
from tests.support.servers import serve


@pytest.fixture
async def ws_url(app: Starlette) -> AsyncIterator[str]:
    async with serve(app) as base:
        yield base.replace("http://", "ws://") + "/graphql"


async def receive(socket: Any) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await socket.recv())
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def test_graphql_transport_ws_runs_a_query(ws_url: str, issuer: Issuer) -> None:
    async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "graphql-transport-ws"
        await socket.send(json.dumps({"type": "connection_init", "payload": issuer.headers("viewer")}))
        assert await receive(socket) == {"type": "connection_ack"}
        await socket.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": "{ catalog { images { name } } }"}}
            )
        )
        result = await receive(socket)
        assert result["type"] == "next"
        assert result["payload"]["data"]["catalog"]["images"][0] == {"name": "debian-12"}
        assert await receive(socket) == {"id": "1", "type": "complete"}


async def test_legacy_graphql_ws_serves_subscriptions_only(ws_url: str, issuer: Issuer) -> None:
    async with websockets.connect(ws_url, subprotocols=["graphql-ws"]) as socket:  # type: ignore[list-item]
        assert socket.subprotocol == "graphql-ws"
        await socket.send(json.dumps({"type": "connection_init", "payload": issuer.headers("viewer")}))
        assert await receive(socket) == {"type": "connection_ack"}
        await socket.send(
            json.dumps({"id": "1", "type": "start", "payload": {"query": "{ catalog { flavors { name } } }"}})
        )
        result = await receive(socket)
        assert result == {"type": "error", "id": "1", "payload": {"message": "queries are not allowed"}}


async def test_an_unknown_subprotocol_is_refused(ws_url: str) -> None:
    async with websockets.connect(ws_url, subprotocols=["chat"]) as socket:  # type: ignore[list-item]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await socket.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4406
