"""One execution per event for every subscriber who would get the same answer.

Subscribers with the same document, variables and operation, the same permissions in every org and the
same row-level visibility receive identical results, so they share a group: the group runs the
subscription once (with a context of its own), and each result is serialized once (`SharedData`) and
handed to every member's bounded queue. A member that falls more than `limit` results behind is dropped
with the same SUBSCRIPTION_CLOSED error the hub gives; the others never wait for it.

A transport that can write without waiting (gateway.fanout) attaches a `Sink` instead of a queue: the
group's one task hands each result to every sink in turn, and the sink writes its frame at once, so a
delivery wakes no task per member. A sink bounds its own backlog (its connection's unsent output). So it
can coalesce a slow member per instance, as the hub's mailboxes do, each result carries the instance of the
change it reports (`SharedData.instance`), which the group takes from its run right after the result
(`tag`: the run's context, where the subscription resolver names it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from graphql import GraphQLError, OperationDefinitionNode, OperationType
from strawberry.types import ExecutionResult

from schema.document_cache import parse_cached
from schema.errors import subscription_closed
from services.events.hub import fell_behind

logger = logging.getLogger(__name__)


class SharedData(dict[str, Any]):
    """A result's `data` whose payload (data, errors, extensions) is serialized once for all members."""

    __slots__ = ("frames", "instance", "payload_json")

    def __init__(
        self, data: dict[str, Any] | None, result: ExecutionResult, instance: Hashable | None = None
    ) -> None:
        super().__init__(data or {})
        # The instance whose change this is (None: unknown, never coalesced away).
        self.instance = instance
        # Whole frames made from it, by the transport's own key (message type and id): members whose
        # frames are identical (the same id, as most clients use) share one.
        self.frames: dict[Hashable, Any] = {}
        payload: dict[str, Any] = {"data": data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        self.payload_json = orjson.dumps(payload).decode()


def _instance_of(result: object) -> Hashable | None:
    data = getattr(result, "data", None)
    return data.instance if isinstance(data, SharedData) else None


def shared(result: ExecutionResult, instance: Hashable | None = None) -> ExecutionResult:
    if result.data is None:
        return result
    return ExecutionResult(
        data=SharedData(result.data, result, instance), errors=result.errors, extensions=result.extensions
    )


# Called right after the run produced a result: the instance that result is of (None: none, or unknown).
Tag = Callable[[], Hashable | None]


def _untagged() -> None:
    return None


def _operation_types(query: str, max_tokens: int) -> tuple[tuple[str | None, OperationType], ...]:
    try:
        document = parse_cached(query, max_tokens=max_tokens)
    except GraphQLError:
        return ()
    return tuple(
        (d.name.value if d.name else None, d.operation)
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    )


def is_subscription(query: str, operation_name: str | None, *, max_bytes: int, max_tokens: int) -> bool:
    """Whether the operation to run is a subscription. A document over the limits is not shared: the
    schema's own limits refuse it, and it must not be parsed (or cached) here before they do."""
    if len(query) > max_bytes:
        return False
    chosen = [
        t
        for name, t in _operation_types(query, max_tokens)
        if operation_name is None or name == operation_name
    ]
    return len(chosen) == 1 and chosen[0] is OperationType.SUBSCRIPTION


def closed_result(reason: str) -> ExecutionResult:
    return ExecutionResult(data=None, errors=[subscription_closed(reason)])


class Sink(Protocol):
    """A member that takes each result as it comes (gateway.fanout), instead of a queue read by a task.
    `deliver` must not wait: it writes, or buffers within its own bound, or ends its own membership."""

    def deliver(self, result: Any) -> None: ...

    def finish(self) -> None:
        """The run ended (the source completed or failed): no more results will come."""


class Membership(Protocol):
    """What a sink's group offers it (`Multiplexer.attach`): a way out."""

    def detach(self, sink: Sink) -> None:
        """`sink` leaves; the last member to leave stops the run."""


@dataclass(eq=False, slots=True)
class _Member:
    limit: int
    queue: deque[ExecutionResult] = field(default_factory=deque)
    # A bare future, not an asyncio.Event: waking ten thousand members is the hot loop of a fan-out.
    waiter: asyncio.Future[None] | None = None
    done: bool = False

    def put(self, result: ExecutionResult) -> None:
        """As the hub's mailboxes and the websocket members' held frames: at the limit, older results of
        this result's instance give way to it; still at the limit, the member is closed with the reason."""
        if self.done:
            return
        if len(self.queue) >= self.limit:
            instance = _instance_of(result)
            if instance is not None:
                self.queue = deque(r for r in self.queue if _instance_of(r) != instance)
        if len(self.queue) >= self.limit:
            self.queue.clear()
            self.queue.append(closed_result(fell_behind(self.limit)))
            self.done = True
        else:
            self.queue.append(result)
        self._wake()

    def finish(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        if self.queue or self.done:
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None


class _Group:
    def __init__(
        self,
        key: Hashable,
        source: AsyncGenerator[Any, None],
        on_empty: Callable[[Hashable, _Group], None],
        tag: Tag = _untagged,
    ):
        self.key = key
        self._tag = tag
        self.members: set[_Member] = set()
        self.sinks: dict[Sink, None] = {}  # in order of joining
        self._source = source
        self._on_empty = on_empty
        self._task = asyncio.create_task(self._pump(), name="shared subscription")

    @property
    def finished(self) -> bool:
        """Its run ended (the source completed or failed): nobody may join it any more."""
        return self._task.done()

    async def _pump(self) -> None:
        try:
            async for result in self._source:
                self.publish(result, self._tag())  # one generator in this one task: the tag is this result's
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("a shared subscription failed")
        finally:
            with contextlib.suppress(Exception):
                await self._source.aclose()
            self._on_empty(self.key, self)
            for member in list(self.members):
                member.finish()
            for sink in list(self.sinks):
                with contextlib.suppress(Exception):
                    sink.finish()
            self.sinks.clear()

    def publish(self, result: Any, instance: Hashable | None = None) -> None:
        """One result of the run (of `instance`'s change, when known) to every member, in the order they
        joined; no member can make it wait."""
        result = shared(result, instance) if isinstance(result, ExecutionResult) else result
        for member in list(self.members):
            member.put(result)
        for sink in list(self.sinks):
            try:
                sink.deliver(result)
            except Exception:  # one member's transport must never stop the others' deliveries
                logger.exception("a shared subscription's member failed")
                self.sinks.pop(sink, None)

    async def leave(self, member: _Member) -> None:
        self.members.discard(member)
        if not self.members and not self.sinks:
            self._on_empty(self.key, self)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def detach(self, sink: Sink) -> None:
        """`sink` leaves; the last member to leave stops the run (without waiting for it to unwind)."""
        self.sinks.pop(sink, None)
        if not self.members and not self.sinks:
            self._on_empty(self.key, self)
            self._task.cancel()


class Multiplexer:
    def __init__(self, *, limit: int, max_query_bytes: int, max_tokens: int) -> None:
        self.limit = limit
        self.max_query_bytes = max_query_bytes
        self.max_tokens = max_tokens
        self._groups: dict[Hashable, _Group] = {}

    @property
    def groups(self) -> int:
        return len(self._groups)

    async def join(
        self, key: Hashable, start: Callable[[], Awaitable[AsyncGenerator[Any, None]]], tag: Tag = _untagged
    ) -> AsyncGenerator[Any, None]:
        """The results of the group `key`, started with `start()` if no member runs it yet (`tag`: the
        instance of each result that run produces)."""
        group = await self._group(key, start, tag)
        member = _Member(self.limit)
        group.members.add(member)
        return self._receive(group, member)

    async def attach(
        self,
        key: Hashable,
        start: Callable[[], Awaitable[AsyncGenerator[Any, None]]],
        sink: Sink,
        tag: Tag = _untagged,
    ) -> Membership:
        """Deliver the results of the group `key` to `sink` from now on; `detach(sink)` leaves."""
        group = await self._group(key, start, tag)
        group.sinks[sink] = None
        return group

    async def _group(
        self, key: Hashable, start: Callable[[], Awaitable[AsyncGenerator[Any, None]]], tag: Tag
    ) -> _Group:
        group = self._groups.get(key)
        if group is None or group.finished:
            source = await start()
            group = self._groups.get(key)  # another member may have started one meanwhile
            if group is None or group.finished:
                group = _Group(key, source, self._forget, tag)
                self._groups[key] = group
            else:
                await source.aclose()
        return group

    def _forget(self, key: Hashable, group: _Group) -> None:
        if self._groups.get(key) is group:
            del self._groups[key]

    async def _receive(self, group: _Group, member: _Member) -> AsyncGenerator[Any, None]:
        try:
            while True:
                await member.wait()
                while member.queue:
                    yield member.queue.popleft()
                if member.done:
                    return
        finally:
            await group.leave(member)


def encode_message(message: object) -> str:
    """A websocket message as JSON text; a shared result's payload is spliced in, not serialized again."""
    if isinstance(message, dict):
        payload = message.get("payload")
        if isinstance(payload, dict) and isinstance(payload.get("data"), SharedData):
            head = orjson.dumps({"id": message.get("id"), "type": message.get("type")}).decode()
            return f'{head[:-1]},"payload":{payload["data"].payload_json}}}'
    return orjson.dumps(message).decode()
