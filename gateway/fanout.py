"""A shared group's frames written to its members' sockets as the group's one task produces them (issue 13).

Each websocket connection has one `Outbox`. Writing to it never waits: under the pre-framed uvicorn
protocol (`gateway.wsprotocol`, named in the ASGI scope's extensions) a frame's bytes go straight to the
transport; on any other server the ASGI `send` is driven by hand, which completes at once whenever the
server need not wait (uvicorn's send only waits while its write buffer is over the high-water mark), and
only a send that must wait is finished by a task, with the frames after it queued behind it in order.

A `SharedMember` is one subscription of one connection in a shared group (`schema.multiplex.Sink`): it
turns each result into its protocol's frame (made once per message type and id for the whole group, so
ten thousand members with the same id share one frame), and measures its connection's backlog before
writing. The semantics are the hub's mailboxes' (`services.events.hub.Mailbox`), with the connection's
unsent output in the place of the mailbox: while a member keeps up it gets every change; once its
connection is full (`Outbox.full`: `limit` or more unsent frames, behind a transport that has paused
writing) it stops writing and holds its frames (`Held`), where a newer change of an instance replaces the
older one; a member holding more than `limit` frames (distinct instances, plus results of no instance,
which are never dropped) gets the SUBSCRIPTION_CLOSED error ("fell behind", as the hub and the
queue-based members give it) and `complete`, and leaves the group. Held frames are written, oldest first,
as soon as the connection drains (`Outbox.hold`: the transport's `resume_writing`, or the end of a send
that had to wait), and before the `complete` of a run that ends. The others never wait for any of it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Generator, Hashable
from typing import Any, Protocol

from graphql import GraphQLError
from starlette.websockets import WebSocket
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError

from schema.multiplex import Membership, SharedData, closed_result, encode_message
from services.events.hub import fell_behind

logger = logging.getLogger(__name__)

EXTENSION = "opencsp.framed_write"  # scope["extensions"] key of the pre-framed uvicorn protocol


class FramedWriter(Protocol):
    """What `gateway.wsprotocol` puts in the scope's extensions: writes of whole websocket frames."""

    def write_frame(self, frame: bytes) -> bool:
        """Write one already framed message; False once the connection is closing (nothing written)."""

    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""

    def paused(self) -> bool:
        """The transport is over its high-water mark; `drained` is called once it is under its low one."""

    drained: Callable[[], None] | None


def text_frame(text: bytes) -> bytes:
    """One unfragmented, unmasked (server-to-client) websocket text frame (RFC 6455 5.2)."""
    size = len(text)
    if size < 126:
        return bytes((0x81, size)) + text
    if size < 65536:
        return struct.pack("!BBH", 0x81, 126, size) + text
    return struct.pack("!BBQ", 0x81, 127, size) + text


class _Resumed:
    """Finish, inside a task, a coroutine that was started by hand and suspended on `waiting`."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, Any, None]:
        coro, value = self.coro, self.waiting
        while True:
            try:
                sent = yield value
            except BaseException as error:  # cancellation: into the coroutine, as `yield from` would
                try:
                    value = coro.throw(error)
                except StopIteration:
                    return
                continue
            try:
                value = coro.send(sent)
            except StopIteration:
                return


class Outbox:
    """One connection's frames written from outside its own task (shared groups, its timer), in order."""

    __slots__ = ("_direct", "_drainer", "_holding", "_pending", "_socket", "closed")

    def __init__(self, websocket: WebSocket) -> None:
        extensions = websocket.scope.get("extensions") or {}
        self._direct: FramedWriter | None = extensions.get(EXTENSION)
        self._socket = websocket
        self._pending: deque[str | tuple[int, str]] | None = None  # behind a send that had to wait
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        # Members holding frames until the socket drains; made when one does (most connections never).
        self._holding: dict[SharedMember, None] | None = None
        self.closed = False

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def backlog(self, frame_bytes: int) -> int:
        """About how many frames of this size are written but not yet taken by the socket."""
        if self._direct is not None:
            return self._direct.buffered() // max(frame_bytes, 1)
        return 0 if self._pending is None else len(self._pending) + 1

    def full(self, frame_bytes: int, limit: int) -> bool:
        """Whether a frame of this size should wait: `limit` or more frames are unsent, and the connection
        will say when that changes (`hold`). On the pre-framed path that is while the transport has paused
        writing (its buffer went over the high-water mark, 64 KiB) and holds `limit` such frames; on the
        ASGI path while a send waits with `limit` frames queued (a send only waits while uvicorn is
        paused)."""
        if self._direct is not None:
            return self._direct.paused() and self._direct.buffered() // max(frame_bytes, 1) >= limit
        return self._pending is not None and len(self._pending) + 1 >= limit

    def hold(self, member: SharedMember) -> None:
        """Call `member.flush()` once the connection drains (until `release`)."""
        if self._holding is None:
            self._holding = {}
            if self._direct is not None:
                self._direct.drained = self._drained
        self._holding[member] = None

    def release(self, member: SharedMember) -> None:
        if self._holding is not None:
            self._holding.pop(member, None)
            if not self._holding:
                self._holding = None
                if self._direct is not None:
                    self._direct.drained = None

    def _drained(self) -> None:
        """The socket took what was waiting: the members holding frames write them, in the order they began
        to hold (each member's own frames in order)."""
        for member in list(self._holding or ()):
            try:
                member.flush()
            except Exception:  # one member must never stop the others' frames
                logger.exception("writing a shared subscription's held frames failed")
                self.release(member)

    def write(self, text: str, frame: bytes | None = None) -> None:
        """Send `text` (as `frame`, its websocket frame, on the pre-framed path) after what came before."""
        if self.closed:
            return
        if self._direct is not None:
            if not self._direct.write_frame(frame if frame is not None else text_frame(text.encode())):
                self.closed = True
            return
        if self._pending is not None:
            self._pending.append(text)
            return
        self._start(self._socket.send({"type": "websocket.send", "text": text}))

    def close(self, code: int, reason: str) -> None:
        """Close the socket after what was written before."""
        if self.closed:
            return
        if self._pending is not None:
            self._pending.append((code, reason))
            return
        self._start(self._socket.close(code=code, reason=reason))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            waiting = coro.send(None)
        except StopIteration:
            return
        except Exception:  # the socket is gone (Starlette's RuntimeError, uvicorn's ClientDisconnected)
            self.closed = True
            return
        self._pending = deque()
        self._drainer = asyncio.get_running_loop().create_task(
            self._drain(_Resumed(coro, waiting)), name="websocket drain"
        )

    async def _drain(self, first: _Resumed) -> None:
        try:
            await first
            while self._pending:
                item = self._pending.popleft()
                if isinstance(item, str):
                    await self._socket.send({"type": "websocket.send", "text": item})
                else:
                    await self._socket.close(code=item[0], reason=item[1])
        except Exception:
            self.closed = True
        finally:
            self._pending = self._drainer = None
        if not self.closed and self._holding:
            self._drained()


class Owner(Protocol):
    """The connection a member belongs to (gateway.websocket's handlers)."""

    def shared_ended(self, operation_id: str) -> None:
        """The member ended on its own (its run ended, it fell behind, an error): forget the id."""


Frame = tuple[str, bytes | None]  # a message's text, and its websocket frame on the pre-framed path


class Held:
    """A member's frames waiting for its connection to drain, in order. A change of an instance already
    held replaces the older one, which moves to the newer's place (as the hub's mailbox removes the old and
    appends the new); a frame of no instance (an error, a result not of one change) is never replaced."""

    __slots__ = ("_frames",)

    def __init__(self) -> None:
        self._frames: OrderedDict[Hashable, Frame] = OrderedDict()

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, instance: Hashable | None, frame: Frame) -> None:
        if instance is None:
            self._frames[object()] = frame  # a key nothing else has: never replaced
            return
        self._frames.pop(instance, None)
        self._frames[instance] = frame

    def first(self) -> Frame:
        return next(iter(self._frames.values()))

    def pop(self) -> Frame:
        return self._frames.popitem(last=False)[1]


class SharedMember:
    """One subscription of one connection in a shared group; see the module's docstring."""

    __slots__ = ("_held", "_kind", "_legacy", "_owner", "done", "group", "id", "limit", "outbox", "started")
    task = None  # in Strawberry's table of operations, where an Operation's task would be

    def __init__(self, outbox: Outbox, operation_id: str, *, legacy: bool, limit: int, owner: Owner) -> None:
        self.outbox = outbox
        self.id = operation_id
        self.limit = limit
        self._legacy = legacy
        self._kind = "data" if legacy else "next"
        self._owner = owner
        self.group: Membership | None = None  # set once attached
        self.started = False
        self.done = False
        self._held: Held | None = None  # while its connection is full

    def deliver(self, result: Any) -> None:
        if self.done:
            return
        if not self.started and isinstance(result, PreExecutionError) and result.errors:
            self._stop(self._error(result.errors))
            return
        if not isinstance(result, ExecutionResult):
            error = GraphQLError("Incremental delivery is not supported over websockets")
            self._stop(self._error([error]))
            return
        self.started = True
        text, frame = self._frame(result)
        held = self._held
        if held is None:
            if not self.outbox.full(len(text), self.limit):
                self.outbox.write(text, frame)
                return
            held = self._held = Held()
            self.outbox.hold(self)
        data = result.data
        held.put(data.instance if isinstance(data, SharedData) else None, (text, frame))
        if len(held) > self.limit:
            self._stop(self._message(closed_result(fell_behind(self.limit))), complete=True)
            return
        self.flush()

    def flush(self) -> None:
        """Write the held frames, oldest first, while the connection takes them; all written: stop holding."""
        held = self._held
        if held is None:
            return
        while held:
            text, frame = held.first()
            if self.outbox.full(len(text), self.limit):
                return
            held.pop()
            self.outbox.write(text, frame)
        self._drop_held()

    def finish(self) -> None:
        """The group's run ended: what it holds, then `complete`, as Strawberry sends when a stream ends."""
        if not self.done:
            self.done = True
            held = self._held
            while held:
                self.outbox.write(*held.pop())
            self._drop_held()
            self.outbox.write(encode_message({"id": self.id, "type": "complete"}))
            self._owner.shared_ended(self.id)

    def stop(self, *, complete: bool) -> None:
        """The client ended it (or went away): leave the group; `complete` answers a legacy `stop`."""
        if self.done:
            return
        self.done = True
        self._drop_held()
        if self.group is not None:
            self.group.detach(self)
        if complete:
            self.outbox.write(encode_message({"type": "complete", "id": self.id}))

    def _drop_held(self) -> None:
        if self._held is not None:
            self._held = None
            self.outbox.release(self)

    def _stop(self, last: str, *, complete: bool = False) -> None:
        """End it with `last` (what it held is dropped, as the hub's mailbox drops its pending updates)."""
        self.done = True
        self._drop_held()
        if self.group is not None:
            self.group.detach(self)
        self.outbox.write(last)
        if complete:
            self.outbox.write(encode_message({"id": self.id, "type": "complete"}))
        self._owner.shared_ended(self.id)

    def _frame(self, result: ExecutionResult) -> Frame:
        data = result.data
        if not isinstance(data, SharedData):
            return self._message(result), None
        direct = self.outbox.direct
        key = (self._kind, self.id, direct)
        made: Frame | None = data.frames.get(key)
        if made is None:
            text = self._message(result)
            made = data.frames[key] = (text, text_frame(text.encode()) if direct else None)
        return made

    def _message(self, result: ExecutionResult) -> str:
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [error.formatted for error in result.errors]
        if result.extensions:
            payload["extensions"] = result.extensions
        return encode_message({"id": self.id, "type": self._kind, "payload": payload})

    def _error(self, errors: list[GraphQLError]) -> str:
        if self._legacy:  # graphql-ws carries the first error only, as Strawberry sends it
            return encode_message({"type": "error", "id": self.id, "payload": errors[0].formatted})
        return encode_message({"id": self.id, "type": "error", "payload": [e.formatted for e in errors]})
