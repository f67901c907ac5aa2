"""A shared group's frames written to its members' sockets as the group's one task produces them (issue 13).

Each websocket connection has one `Outbox`. Writing to it never waits: under the pre-framed uvicorn
protocol (`gateway.wsprotocol`, named in the ASGI scope's extensions) a frame's bytes go straight to the
transport; on any other server the ASGI `send` is driven by hand, which completes at once whenever the
server need not wait (uvicorn's send only waits while its write buffer is over the high-water mark), and
only a send that must wait is finished by a task, with the frames after it queued behind it in order.

A `SharedMember` is one subscription of one connection in a shared group (`schema.multiplex.Sink`): it
turns each result into its protocol's frame (made once per message type and id for the whole group, so
ten thousand members with the same id share one frame), and measures its connection's backlog before
writing. A member whose connection holds `limit` or more unsent frames gets the SUBSCRIPTION_CLOSED error
("fell behind", as the hub and the queue-based members give it) and `complete`, and leaves the group;
the others never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Coroutine, Generator
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

    __slots__ = ("_direct", "_drainer", "_pending", "_socket", "closed")

    def __init__(self, websocket: WebSocket) -> None:
        extensions = websocket.scope.get("extensions") or {}
        self._direct: FramedWriter | None = extensions.get(EXTENSION)
        self._socket = websocket
        self._pending: deque[str | tuple[int, str]] | None = None  # behind a send that had to wait
        self._drainer: asyncio.Task[None] | None = None  # held: the loop keeps only weak references
        self.closed = False

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def backlog(self, frame_bytes: int) -> int:
        """About how many frames of this size are written but not yet taken by the socket."""
        if self._direct is not None:
            return self._direct.buffered() // max(frame_bytes, 1)
        return 0 if self._pending is None else len(self._pending) + 1

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


class Owner(Protocol):
    """The connection a member belongs to (gateway.websocket's handlers)."""

    def shared_ended(self, operation_id: str) -> None:
        """The member ended on its own (its run ended, it fell behind, an error): forget the id."""


class SharedMember:
    """One subscription of one connection in a shared group; see the module's docstring."""

    __slots__ = ("_kind", "_legacy", "_owner", "done", "group", "id", "limit", "outbox", "started")
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
        if self.outbox.backlog(len(text)) >= self.limit:
            self._stop(self._message(closed_result(fell_behind(self.limit))), complete=True)
            return
        self.outbox.write(text, frame)

    def finish(self) -> None:
        """The group's run ended: `complete`, as Strawberry sends when a stream ends."""
        if not self.done:
            self.done = True
            self.outbox.write(encode_message({"id": self.id, "type": "complete"}))
            self._owner.shared_ended(self.id)

    def stop(self, *, complete: bool) -> None:
        """The client ended it (or went away): leave the group; `complete` answers a legacy `stop`."""
        if self.done:
            return
        self.done = True
        if self.group is not None:
            self.group.detach(self)
        if complete:
            self.outbox.write(encode_message({"type": "complete", "id": self.id}))

    def _stop(self, last: str, *, complete: bool = False) -> None:
        self.done = True
        if self.group is not None:
            self.group.detach(self)
        self.outbox.write(last)
        if complete:
            self.outbox.write(encode_message({"id": self.id, "type": "complete"}))
        self._owner.shared_ended(self.id)

    def _frame(self, result: ExecutionResult) -> tuple[str, bytes | None]:
        data = result.data
        if not isinstance(data, SharedData):
            return self._message(result), None
        direct = self.outbox.direct
        key = (self._kind, self.id, direct)
        made: tuple[str, bytes | None] | None = data.frames.get(key)
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
