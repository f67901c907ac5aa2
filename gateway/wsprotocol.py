"""uvicorn's websockets-sansio protocol, plus a write of already framed messages for the fan-out path.

It puts itself in the ASGI scope's extensions (`gateway.fanout.EXTENSION`): a shared group then writes
each member's frame (made once per group and id, `gateway.fanout`) straight to the connection's transport,
instead of going through Starlette's and uvicorn's `send` and the websocket library's framing per member.
The frames are the same bytes uvicorn would write (unfragmented, unmasked, uncompressed: compression is
off, `ws_per_message_deflate=False`), so the protocol is unchanged for the client; everything else
(handshake, control frames, closing) is uvicorn's. Other servers lack the extension and the gateway uses
the ASGI `send` instead. It also tells the gateway when the transport drains (`resume_writing`, once its
buffer is under the low-water mark after going over the high one): a shared member that held its frames
meanwhile (`gateway.fanout.Held`) writes them then.
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

from gateway.fanout import EXTENSION


class PreFramedWebSocketProtocol(WebSocketsSansIOProtocol):
    drained: Callable[[], None] | None = None  # the connection's `Outbox`, once it has one

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was refused
        if scope is not None:
            scope["extensions"][EXTENSION] = self

    def write_frame(self, frame: bytes) -> bool:
        """Write one whole frame now; False (nothing written) once the connection is closing."""
        if self.close_sent or self.disconnected or not self.handshake_complete:
            return False
        transport = self.transport
        if transport.is_closing():
            return False
        transport.write(frame)
        return True

    def buffered(self) -> int:
        return self.transport.get_write_buffer_size()

    def paused(self) -> bool:
        return not self.writable.is_set()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.drained is not None and not self.disconnected:
            self.drained()  # the transport accepts writes from here ("may append to buffer")
