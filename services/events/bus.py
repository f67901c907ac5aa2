"""Publishing status changes exactly when their transaction commits.

A transition calls `stage` inside its transaction (PostgreSQL's bus NOTIFYs there, so the event leaves
with the commit and never without it) and `committed` right after the commit (the in-process bus hands
the event to subscribers there, never before the data is visible).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from services.events.model import StatusChanged

logger = logging.getLogger(__name__)


class EventBus(Protocol):
    async def stage(self, connection: AsyncConnection, event: StatusChanged) -> None: ...

    def committed(self, event: StatusChanged) -> None: ...

    def listen(self) -> AsyncIterator[StatusChanged]: ...


class InProcessBus:
    """Every subscriber of this process gets every event, through its own bounded queue."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queues: set[asyncio.Queue[StatusChanged]] = set()
        self._queue_size = queue_size

    async def stage(self, connection: AsyncConnection, event: StatusChanged) -> None:
        return None

    def committed(self, event: StatusChanged) -> None:
        for queue in self._queues:
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stalled listener must not stall the publisher; it loses the oldest change instead.
                queue.get_nowait()
                queue.put_nowait(event)
                logger.warning("event listener fell behind; dropped its oldest event")

    @property
    def listeners(self) -> int:
        return len(self._queues)

    async def listen(self) -> AsyncIterator[StatusChanged]:
        queue: asyncio.Queue[StatusChanged] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
