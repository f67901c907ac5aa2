"""The fan-out writer (gateway.fanout): a shared group writes each member's frame itself, on both websocket
protocols, through the ASGI `send` and through the pre-framed uvicorn protocol (gateway.wsprotocol).

The bursts are published into the real group the sockets joined (`_Group.publish`, what its task does
with each result of the run), so they can be as large and as fast as the test needs without a cluster."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from typing import Any, cast

import pytest
import websockets
from starlette.applications import Starlette
from starlette.websockets import WebSocket, WebSocketState
from strawberry.types import ExecutionResult

from gateway.fanout import Held, Outbox, SharedMember
from gateway.serving import websocket_protocol
from gateway.settings import Settings
from gateway.wsprotocol import PreFramedWebSocketProtocol
from schema.multiplex import _Group, shared
from tests.conftest import AppFactory, Issuer
from tests.support.servers import serve

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
CHANGES = "subscription { instanceStatusChanges { to } }"
WAIT = 15.0
PATHS = {"asgi": "websockets-sansio", "preframed": PreFramedWebSocketProtocol}


@pytest.fixture(params=sorted(PATHS))
def path(request: pytest.FixtureRequest) -> Any:
    return PATHS[request.param]


async def open_socket(base: str, token: str, protocol: str, **options: Any) -> Any:
    url = base.replace("http://", "ws://") + "/graphql"
    ws = await websockets.connect(url, subprotocols=[protocol], ping_interval=None, **options)  # type: ignore[list-item]
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert await receive(ws) == {"type": "connection_ack"}
    return ws


async def subscribe(ws: Any, protocol: str, operation_id: str) -> None:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    await ws.send(json.dumps({"id": operation_id, "type": kind, "payload": {"query": CHANGES}}))


async def receive(ws: Any) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def the_group(app: Starlette, members: int) -> _Group:
    """The one shared group, once `members` sockets have joined it."""
    for _ in range(500):
        groups = list(app.state.schema.multiplexer._groups.values())
        if len(groups) == 1 and len(groups[0].sinks) == members:
            group: _Group = groups[0]
            return group
        await asyncio.sleep(0.01)
    raise AssertionError(f"no shared group of {members}: {app.state.schema.multiplexer._groups}")


def change(n: int, pad: int = 0) -> ExecutionResult:
    return ExecutionResult(data={"instanceStatusChanges": {"to": f"{n}", "pad": "x" * pad}}, errors=None)


async def read_numbers(ws: Any, operation_id: str, count: int) -> list[int]:
    got: list[int] = []
    while len(got) < count:
        message = await receive(ws)
        assert message["id"] == operation_id, message
        assert message["type"] in ("next", "data"), message
        got.append(int(message["payload"]["data"]["instanceStatusChanges"]["to"]))
    return got


async def test_every_member_gets_every_frame_in_order(
    make_app: AppFactory, issuer: Issuer, path: Any
) -> None:
    app = await make_app()
    async with serve(app, ws=path) as base:
        sockets = [
            (await open_socket(base, issuer.token("viewer"), TRANSPORT), TRANSPORT, "a"),
            (await open_socket(base, issuer.token("viewer"), TRANSPORT), TRANSPORT, "b"),
            (await open_socket(base, issuer.token("viewer"), LEGACY), LEGACY, "c"),
        ]
        for ws, protocol, operation_id in sockets:
            await subscribe(ws, protocol, operation_id)
        group = await the_group(app, members=3)
        count = 600

        async def burst() -> None:
            for n in range(count):
                group.publish(change(n))
                if n % 50 == 0:
                    await asyncio.sleep(0)  # bursts of 50 written with no pause at all

        readers = [read_numbers(ws, operation_id, count) for ws, _, operation_id in sockets]
        _, *got = await asyncio.gather(burst(), *readers)
        assert got == [list(range(count))] * 3
        # Ending a subscription: transport-ws needs no answer, graphql-ws gets `complete`.
        await sockets[0][0].send(json.dumps({"id": "a", "type": "complete"}))
        await sockets[2][0].send(json.dumps({"id": "c", "type": "stop"}))
        assert await receive(sockets[2][0]) == {"type": "complete", "id": "c"}
        await the_group(app, members=1)
        group.publish(change(count))
        assert await read_numbers(sockets[1][0], "b", 1) == [count]
        for ws, _, _ in sockets:
            await ws.close()
        for _ in range(200):
            if not app.state.schema.multiplexer.groups:
                break
            await asyncio.sleep(0.01)
        assert app.state.schema.multiplexer.groups == 0


class RawClient:
    """Just enough of a websocket client to stop reading: nothing reads its socket until `receive`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, protocol: str) -> None:
        self.reader, self.writer, self.protocol = reader, writer, protocol

    @classmethod
    async def open(cls, base: str, protocol: str) -> RawClient:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", int(base.rsplit(":", 1)[1])))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer, protocol)

    async def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message).encode()
        mask = os.urandom(4)
        size = len(data)
        head = bytes((0x81, 0x80 | size)) if size < 126 else struct.pack("!BBH", 0x81, 0x80 | 126, size)
        self.writer.write(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))
        await self.writer.drain()

    async def subscribe(self, operation_id: str) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT else "start"
        await self.send({"id": operation_id, "type": kind, "payload": {"query": CHANGES}})

    async def receive(self) -> dict[str, Any]:
        while True:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), WAIT)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            data = await self.reader.readexactly(size)
            assert first == 0x81, (first, data[:100])  # whole text frames only
            message: dict[str, Any] = json.loads(data)
            if message["type"] not in ("ka", "ping", "pong"):
                return message


async def open_slow(base: str, issuer: Issuer, protocol: str, operation_id: str) -> RawClient:
    """A client that stops reading, with a small receive buffer: the server's output to it piles up."""
    slow = await RawClient.open(base, protocol)
    await slow.send(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {issuer.token('viewer')}"}}
    )
    assert await slow.receive() == {"type": "connection_ack"}
    await slow.subscribe(operation_id)
    return slow


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
@pytest.mark.parametrize("instances", ["untagged", "distinct"])
async def test_a_reader_that_stops_is_closed_and_the_others_get_everything(
    make_app: AppFactory, issuer: Issuer, path: Any, protocol: str, instances: str
) -> None:
    """Changes of more instances than the limit (or of none: never coalesced) cannot be coalesced within
    it: the slow reader is closed with the reason after a prefix in order."""
    limit = 8
    app = await make_app(subscription_backlog_limit=limit)
    async with serve(app, ws=path) as base:
        fast = await open_socket(base, issuer.token("viewer"), TRANSPORT)
        await subscribe(fast, TRANSPORT, "fast")
        slow = await open_slow(base, issuer, protocol, "slow")
        group = await the_group(app, members=2)
        count, pad = 300, 32_000

        async def burst() -> None:
            for n in range(count):
                group.publish(change(n, pad), None if instances == "untagged" else f"instance-{n}")
                await asyncio.sleep(0.002)

        _, got = await asyncio.gather(burst(), read_numbers(fast, "fast", count))
        assert got == list(range(count))
        assert len(group.sinks) == 1  # the slow one left; the group goes on for the fast one

        # The slow reader gets what it was sent, in order, then the reason and the end of its subscription.
        seen: list[int] = []
        reasons: list[str] = []
        while True:
            message = await slow.receive()
            assert message["id"] == "slow", message
            if message["type"] == "complete":
                break
            payload = message["payload"]
            if payload.get("errors"):
                assert payload["errors"][0]["extensions"]["code"] == "SUBSCRIPTION_CLOSED"
                assert payload["data"] is None
                reasons.append(payload["errors"][0]["message"])
            else:
                assert not reasons, "nothing after the reason"
                seen.append(int(payload["data"]["instanceStatusChanges"]["to"]))
        assert len(reasons) == 1
        assert f"fell more than {limit} changes behind" in reasons[0]
        assert seen == list(range(len(seen)))
        assert len(seen) < count
        # Its socket stays open and usable: another subscription on it is served.
        await slow.subscribe("again")
        group = await the_group(app, members=2)
        group.publish(change(count))
        again = await slow.receive()
        assert again["id"] == "again", again
        assert again["payload"]["data"]["instanceStatusChanges"]["to"] == str(count)
        await fast.close()
        slow.writer.close()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_reader_that_stops_on_few_instances_is_coalesced_not_closed(
    make_app: AppFactory, issuer: Issuer, path: Any, protocol: str
) -> None:
    """Changes of fewer instances than the limit: the slow reader's frames are held, a newer change of an
    instance replacing the older one, and written once it reads again: per instance its changes in order,
    ending with the newest, some in between skipped. A fast member of the group gets every frame."""
    limit, kinds = 8, 3
    app = await make_app(subscription_backlog_limit=limit)
    async with serve(app, ws=path) as base:
        fast = await open_socket(base, issuer.token("viewer"), TRANSPORT)
        await subscribe(fast, TRANSPORT, "fast")
        slow = await open_slow(base, issuer, protocol, "slow")
        group = await the_group(app, members=2)
        count, pad = 300, 32_000

        async def burst() -> None:
            for n in range(count):
                group.publish(change(n, pad), f"instance-{n % kinds}")
                await asyncio.sleep(0.002)

        _, got = await asyncio.gather(burst(), read_numbers(fast, "fast", count))
        assert got == list(range(count))
        assert len(group.sinks) == 2  # the slow one is still a member
        member = next(sink for sink in group.sinks if getattr(sink, "id", None) == "slow")
        assert isinstance(member, SharedMember)
        assert member._held is not None
        assert 0 < len(member._held) <= kinds

        newest = set(range(count - kinds, count))
        seen: list[int] = []
        while not newest <= set(seen):
            message = await slow.receive()
            assert (message["id"], message["type"]) == ("slow", protocol_next(protocol)), message
            assert not message["payload"].get("errors"), message
            seen.append(int(message["payload"]["data"]["instanceStatusChanges"]["to"]))
        # In order overall (a replaced change moves to its newest's place), so in order per instance,
        # each instance ending with its newest change; changes in between were coalesced away.
        assert seen == sorted(set(seen))
        assert seen[-kinds:] == sorted(newest)
        assert len(seen) < count
        assert seen[0] == 0  # what went before the connection was full was written as it came
        # Drained: it holds nothing, and the next change is written at once.
        assert member._held is None
        assert not member.done
        group.publish(change(count), "instance-0")
        assert (await slow.receive())["payload"]["data"]["instanceStatusChanges"]["to"] == str(count)
        assert await read_numbers(fast, "fast", 1) == [count]
        await fast.close()
        slow.writer.close()


def protocol_next(protocol: str) -> str:
    return "next" if protocol == TRANSPORT else "data"


_CONNECTION_CODE = ("uvicorn/", "strawberry/", "starlette/", "gateway/", "schema/multiplex")


def _connection_tasks() -> set[asyncio.Task[Any]]:
    """Tasks of the server's connections and subscriptions: not the runtime's background work, which may
    come and go meanwhile, nor the websocket clients' own (which run in this loop too)."""
    found = set()
    for task in asyncio.all_tasks():
        filename = task.get_coro().cr_code.co_filename  # type: ignore[union-attr]
        if "site-packages/websockets/" not in filename and any(p in filename for p in _CONNECTION_CODE):
            found.add(task)
    return found


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_an_idle_connection_holds_one_task_only(
    make_app: AppFactory, issuer: Issuer, path: Any, protocol: str
) -> None:
    """Keep-alive, init timeout and token expiry are one timer, and a shared subscription has no task:
    what an idle socket with two subscriptions holds is the server's one task for the connection."""
    app = await make_app(websocket_keep_alive_seconds=0.05)
    async with serve(app, ws=path) as base:
        warm = await open_socket(base, issuer.token("viewer"), protocol)
        await subscribe(warm, protocol, "1")
        await the_group(app, members=1)
        before = _connection_tasks()
        sockets = []
        for _ in range(10):
            ws = await open_socket(base, issuer.token("viewer", ttl=3600), protocol)
            await subscribe(ws, protocol, "1")
            await subscribe(ws, protocol, "2")
            sockets.append(ws)
        await the_group(app, members=21)
        await asyncio.sleep(0.2)  # several keep-alive periods
        grown = _connection_tasks() - before
        names = sorted(task.get_coro().__qualname__ for task in grown)  # type: ignore[union-attr]
        assert names == ["WebSocketsSansIOProtocol.run_asgi"] * 10, names
        for ws in sockets:  # and the keep-alives still come, from the timer
            kinds = {json.loads(await asyncio.wait_for(ws.recv(), WAIT))["type"] for _ in range(3)}
            assert kinds == {"ping" if protocol == TRANSPORT else "ka"}
        for ws in [warm, *sockets]:
            await ws.close()


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The qualified names of the coroutines a task is suspended in, outermost first."""
    chain: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        chain.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return chain


async def test_an_idle_socket_holds_no_starlette_layer_only_the_observability_ones(
    make_app: AppFactory, issuer: Issuer
) -> None:
    """gateway/asgi.py: a GraphQL websocket skips Starlette's error and exception middlewares, router and
    route (each would stay suspended for the socket's life) but keeps the request id and the gauge."""
    app = await make_app()
    async with serve(app) as base:
        before = _connection_tasks()
        ws = await open_socket(base, issuer.token("viewer"), TRANSPORT)
        await subscribe(ws, TRANSPORT, "1")
        await the_group(app, members=1)
        [task] = [t for t in _connection_tasks() - before if t.get_coro().__qualname__.endswith("run_asgi")]  # type: ignore[union-attr]
        chain = _awaiting(task)
        assert "RequestId.__call__" in chain, chain
        assert "HTTPMetrics.__call__" in chain, chain
        skipped = ("ServerErrorMiddleware", "ExceptionMiddleware", "Router", "WebSocketRoute", "wrap_app")
        assert not [name for name in chain if name.startswith(skipped)], chain
        metrics = app.state.observability.metrics
        assert metrics.websockets._value.get() == 1  # the open-connection gauge still counts it
        await ws.close()


def test_serve_uses_the_pre_framed_protocol_unless_told_not_to(settings: Settings) -> None:
    def with_(**overrides: Any) -> Settings:
        return Settings(**{**settings.model_dump(), **overrides, "_env_file": None})

    assert websocket_protocol(with_()) is PreFramedWebSocketProtocol
    assert websocket_protocol(with_(websocket_preframed=False)) == "websockets-sansio"
    assert websocket_protocol(with_(websocket_implementation="wsproto")) == "wsproto"


async def test_an_outbox_keeps_order_behind_a_send_that_must_wait() -> None:
    """The ASGI path: a send that completes at once costs no task; one that must wait is finished by a
    task, and what is written meanwhile (frames, then a close) follows it in order."""
    sent: list[Any] = []
    writable = asyncio.Event()
    writable.set()

    async def send(message: Any) -> None:
        await writable.wait()  # as uvicorn's send waits while its write buffer is over the high-water mark
        sent.append(message.get("text") or message.get("code"))

    async def receive() -> Any:
        raise AssertionError("not read")

    socket_ = WebSocket({"type": "websocket", "path": "/", "headers": []}, receive=receive, send=send)
    socket_.application_state = WebSocketState.CONNECTED
    outbox = Outbox(socket_)
    assert not outbox.direct
    tasks = len(asyncio.all_tasks())
    outbox.write("a")
    assert sent == ["a"]  # at once, no task
    assert len(asyncio.all_tasks()) == tasks
    writable.clear()
    outbox.write("b")
    outbox.write("c")
    outbox.close(4401, "token expired")
    assert sent == ["a"]
    assert outbox.backlog(1) == 3  # b (waiting), then c and the close
    assert outbox.full(1, limit=3)
    assert not outbox.full(1, limit=4)

    class Holding:
        flushed = 0

        def flush(self) -> None:
            self.flushed += 1

    holding = Holding()
    outbox.hold(cast(Any, holding))  # told when the waiting sends are done
    writable.set()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == ["a", "b", "c", 4401]
    assert outbox.backlog(1) == 0
    assert not outbox.full(1, limit=1)
    assert holding.flushed == 1
    outbox.release(cast(Any, holding))
    outbox.write("d")  # after a close: Starlette refuses, and the outbox is closed
    assert outbox.closed
    assert sent == ["a", "b", "c", 4401]


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_shared_subscription_the_schema_refuses_is_answered_with_its_error(
    make_app: AppFactory, issuer: Issuer, path: Any, protocol: str
) -> None:
    """Validation runs in the group (its one execution): every member gets the protocol's `error`, as
    Strawberry answers an unshared one, and the socket serves on."""
    app = await make_app()
    async with serve(app, ws=path) as base:
        ws = await open_socket(base, issuer.token("viewer"), protocol)
        kind = "subscribe" if protocol == TRANSPORT else "start"
        bad = {"query": "subscription { instanceStatusChanges { nope } }"}
        for operation_id in ("1", "2"):
            await ws.send(json.dumps({"id": operation_id, "type": kind, "payload": bad}))
        for operation_id in ("1", "2"):
            answer = await receive(ws)
            assert (answer["id"], answer["type"]) == (operation_id, "error"), answer
            first = answer["payload"][0] if protocol == TRANSPORT else answer["payload"]
            assert "Cannot query field 'nope'" in first["message"], answer
        for _ in range(200):  # the refused run ends, and its group with it
            if not app.state.schema.multiplexer.groups:
                break
            await asyncio.sleep(0.01)
        assert app.state.schema.multiplexer.groups == 0
        await subscribe(ws, protocol, "1")  # the id is free again
        group = await the_group(app, members=1)
        group.publish(change(7))
        assert await read_numbers(ws, "1", 1) == [7]
        await ws.close()


def test_held_frames_keep_the_newest_of_each_instance_in_the_place_of_its_newest() -> None:
    held = Held()
    for instance, text in [("a", "a1"), ("b", "b1"), (None, "e1"), ("a", "a2"), ("c", "c1"), ("b", "b2")]:
        held.put(instance, (text, None))
    held.put(None, ("e2", None))
    assert len(held) == 5  # a, b and c once each; both untagged results
    assert held.first() == ("e1", None)
    assert [held.pop()[0] for _ in range(len(held))] == ["e1", "a2", "c1", "b2", "e2"]
    assert not held


def test_untagged_frames_are_never_dropped() -> None:
    held = Held()
    for n in range(5):
        held.put(None, (f"{n}", None))
        held.put("a", (f"a{n}", None))
    assert [held.pop()[0] for _ in range(len(held))] == ["0", "1", "2", "3", "4", "a4"]


class FakeOutbox:
    """An outbox whose fullness the test decides; `drain` is the connection's drain notification."""

    def __init__(self) -> None:
        self.written: list[str] = []
        self.is_full = False
        self.holding: dict[Any, None] = {}
        self.direct = False

    def full(self, frame_bytes: int, limit: int) -> bool:
        return self.is_full

    def write(self, text: str, frame: bytes | None = None) -> None:
        self.written.append(text)

    def hold(self, member: Any) -> None:
        self.holding[member] = None

    def release(self, member: Any) -> None:
        self.holding.pop(member, None)

    def drain(self) -> None:
        self.is_full = False
        for member in list(self.holding):
            member.flush()


class FakeOwner:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def shared_ended(self, operation_id: str) -> None:
        self.ended.append(operation_id)


def member_of(outbox: FakeOutbox, owner: FakeOwner, limit: int) -> SharedMember:
    fake: Any = outbox
    return SharedMember(fake, "1", legacy=False, limit=limit, owner=owner)


def tagged(n: int, instance: str | None) -> ExecutionResult:
    return shared(ExecutionResult(data={"n": n}, errors=None), instance)


def numbers(written: list[str]) -> list[Any]:
    out: list[Any] = []
    for text in written:
        message = json.loads(text)
        payload = message.get("payload") or {}
        if payload.get("errors"):
            out.append(payload["errors"][0]["extensions"]["code"])
        else:
            out.append(payload["data"]["n"] if "payload" in message else message["type"])
    return out


def test_a_member_holds_while_its_connection_is_full_and_writes_in_order_when_it_drains() -> None:
    outbox, owner = FakeOutbox(), FakeOwner()
    member = member_of(outbox, owner, limit=3)
    member.deliver(tagged(0, "a"))
    outbox.is_full = True
    for n, instance in enumerate(["a", "b", "a", None, "b", "a"], start=1):
        member.deliver(tagged(n, instance))
    assert numbers(outbox.written) == [0]
    assert member in outbox.holding
    outbox.drain()
    assert numbers(outbox.written) == [0, 4, 5, 6]  # 1, 2 and 3 replaced by their instance's newer change
    assert member not in outbox.holding
    member.deliver(tagged(7, "a"))  # not full: written at once
    assert numbers(outbox.written) == [0, 4, 5, 6, 7]
    assert not member.done
    assert owner.ended == []


def test_a_member_holding_more_than_its_limit_is_closed_and_others_on_the_socket_go_on() -> None:
    outbox, owner = FakeOutbox(), FakeOwner()
    member = member_of(outbox, owner, limit=3)
    other = SharedMember(cast(Any, outbox), "2", legacy=True, limit=3, owner=owner)
    outbox.is_full = True
    for n, instance in enumerate(["a", "b", None, "a", "b"]):
        member.deliver(tagged(n, instance))
        if n < 3:
            other.deliver(tagged(n, "x"))
    assert not member.done  # a, b, the untagged one; then a and b again replace theirs
    member.deliver(tagged(5, "d"))  # a fourth distinct entry: over the limit
    assert member.done
    assert owner.ended == ["1"]
    assert numbers(outbox.written) == ["SUBSCRIPTION_CLOSED", "complete"]
    assert "fell more than 3 changes behind" in outbox.written[0]
    assert member not in outbox.holding
    outbox.drain()
    assert numbers(outbox.written)[2:] == [2]  # the other member's newest, its only instance's


def test_a_run_that_ends_writes_what_is_held_before_complete() -> None:
    outbox, owner = FakeOutbox(), FakeOwner()
    member = member_of(outbox, owner, limit=3)
    outbox.is_full = True
    member.deliver(tagged(0, "a"))
    member.deliver(tagged(1, "a"))
    member.deliver(tagged(2, None))
    member.finish()
    assert numbers(outbox.written) == [1, 2, "complete"]
    assert member not in outbox.holding
    assert owner.ended == ["1"]
