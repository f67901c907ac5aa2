"""Shared subscription groups: one run for many members, each member bounded on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import orjson
from strawberry.types import ExecutionResult

from schema.errors import SUBSCRIPTION_CLOSED
from schema.multiplex import Multiplexer, SharedData, encode_message, is_subscription


class Source:
    """A subscription run that counts how often it was started and yields what the test feeds it."""

    def __init__(self) -> None:
        self.starts = 0
        self.closed = 0
        self.feed: asyncio.Queue[int] = asyncio.Queue()

    async def start(self) -> AsyncGenerator[ExecutionResult, None]:
        self.starts += 1
        return self._run()

    async def _run(self) -> AsyncGenerator[ExecutionResult, None]:
        try:
            while True:
                yield ExecutionResult(data={"n": await self.feed.get()}, errors=None)
        finally:
            self.closed += 1


async def test_members_of_one_key_share_one_run_and_one_serialization() -> None:
    source = Source()
    multiplexer = Multiplexer(limit=10, max_query_bytes=1000, max_tokens=100)
    members = [await multiplexer.join("key", source.start) for _ in range(3)]
    assert source.starts == 1
    await source.feed.put(1)
    results = [await anext(member) for member in members]
    assert {id(result.data) for result in results} == {id(results[0].data)}  # one object, serialized once
    assert isinstance(results[0].data, SharedData)
    frame = encode_message({"id": "7", "type": "next", "payload": {"data": results[0].data}})
    assert orjson.loads(frame) == {"id": "7", "type": "next", "payload": {"data": {"n": 1}}}
    for member in members:
        await member.aclose()
    assert multiplexer.groups == 0
    await asyncio.sleep(0)
    assert source.closed == 1


async def test_a_member_that_falls_behind_is_closed_and_the_others_go_on() -> None:
    source = Source()
    multiplexer = Multiplexer(limit=2, max_query_bytes=1000, max_tokens=100)
    slow = await multiplexer.join("key", source.start)
    fast = await multiplexer.join("key", source.start)
    for n in range(5):
        await source.feed.put(n)
        assert (await anext(fast)).data == {"n": n}
    closed = await anext(slow)
    assert closed.data is None
    assert closed.errors is not None
    assert closed.errors[0].extensions == {"code": SUBSCRIPTION_CLOSED}
    assert closed.errors[0].message == "the subscriber fell more than 2 changes behind; subscribe again"
    assert [result async for result in slow] == []  # and then it ends
    await source.feed.put(5)
    assert (await anext(fast)).data == {"n": 5}
    await fast.aclose()
    assert multiplexer.groups == 0


async def test_a_queued_member_at_its_limit_keeps_the_newest_change_per_instance() -> None:
    """The queue path (graphql-sse's members) as the hub's mailboxes: at the limit, older results of the
    new result's instance give way to it, in order; still at the limit, the member is closed."""
    source = Source()
    tags = ["a", "b", "a", "a", "b", "c"]
    fed: list[int] = []
    multiplexer = Multiplexer(limit=2, max_query_bytes=1000, max_tokens=100)

    async def feed(n: int) -> None:
        fed.append(n)
        await source.feed.put(n)

    def tag() -> str:
        return tags[fed[-1]]

    coalesced = await multiplexer.join("key", source.start, tag)
    closed = await multiplexer.join("key", source.start, tag)
    fast = await multiplexer.join("key", source.start, tag)
    for n in range(5):
        await feed(n)
        assert (await anext(fast)).data == {"n": n}
    # a0 b1, then a2 replaces a0, a3 replaces a2, b4 replaces b1: the newest of each, in order.
    assert [(await anext(coalesced)).data, (await anext(coalesced)).data] == [{"n": 3}, {"n": 4}]
    await feed(5)  # c5: a third instance while two wait, nothing to give way: closed
    assert (await anext(fast)).data == {"n": 5}
    assert (await anext(coalesced)).data == {"n": 5}  # it read meanwhile: room again
    ended = await anext(closed)
    assert ended.errors is not None
    assert ended.errors[0].extensions == {"code": SUBSCRIPTION_CLOSED}
    for member in (coalesced, closed, fast):
        await member.aclose()


async def test_only_subscriptions_within_the_limits_are_shared() -> None:
    def shared(query: str, name: str | None = None, max_bytes: int = 1000, max_tokens: int = 100) -> bool:
        return is_subscription(query, name, max_bytes=max_bytes, max_tokens=max_tokens)

    assert shared("subscription { a }")
    assert not shared("query { a }")
    assert not shared("subscription A { a } query B { b }", "B")
    assert shared("subscription A { a } query B { b }", "A")
    assert not shared("subscription {")
    # Over a limit it is not even parsed here: the schema's own limits refuse it with their message.
    assert not shared("subscription { " + "a " * 600 + "}")
    assert not shared("subscription { " + "a " * 200 + "}", max_bytes=10_000)


async def test_a_group_whose_run_ended_is_not_joined_again() -> None:
    source = Source()
    multiplexer = Multiplexer(limit=10, max_query_bytes=1000, max_tokens=100)
    first = await multiplexer.join("key", source.start)
    source.feed.put_nowait(1)
    assert (await anext(first)).data == {"n": 1}
    await first.aclose()
    assert multiplexer.groups == 0

    async def ended() -> AsyncGenerator[ExecutionResult, None]:
        return
        yield  # an async generator that ends at once

    async def start_ended() -> AsyncGenerator[ExecutionResult, None]:
        return ended()

    gone = await multiplexer.join("key", start_ended)
    await asyncio.sleep(0)  # its run ends while its member is still there, unread
    again = await multiplexer.join("key", source.start)  # a new run, not the finished one
    assert [result async for result in gone] == []
    source.feed.put_nowait(2)
    assert (await anext(again)).data == {"n": 2}
    await again.aclose()
    assert source.starts == 2


async def test_each_result_carries_the_instance_its_run_named_for_it() -> None:
    """The group takes the tag right after each result (the run's context, where the subscription
    resolver names the instance of the change): a result produced without one is untagged."""
    named: list[str | None] = []

    async def start() -> AsyncGenerator[ExecutionResult, None]:
        async def run() -> AsyncGenerator[ExecutionResult, None]:
            for n, instance in enumerate(["a", "b", None, "a"]):
                named.append(instance)
                yield ExecutionResult(data={"n": n}, errors=None)

        return run()

    def take() -> str | None:
        instance = named.pop() if named else None
        named.clear()
        return instance

    class Sink:
        def __init__(self) -> None:
            self.got: list[tuple[object, object]] = []
            self.ended = asyncio.Event()

        def deliver(self, result: ExecutionResult) -> None:
            assert isinstance(result.data, SharedData)
            self.got.append((result.data["n"], result.data.instance))

        def finish(self) -> None:
            self.ended.set()

    sink = Sink()
    multiplexer = Multiplexer(limit=10, max_query_bytes=1000, max_tokens=100)
    await multiplexer.attach("key", start, sink, take)
    await asyncio.wait_for(sink.ended.wait(), 5)
    assert sink.got == [(0, "a"), (1, "b"), (2, None), (3, "a")]
