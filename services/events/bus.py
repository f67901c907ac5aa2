"""Publishing status changes exactly when their transaction commits.

A transition calls `stage` inside its transaction (PostgreSQL's bus NOTIFYs there, so the event leaves
with the commit and never without it) and `committed` right after the commit (the in-process bus hands
the event to subscribers there, never before the data is visible).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from services.instances.ports import EventPublisher
from services.instances.records import StatusChanged

logger = logging.getLogger(__name__)


# What a listener takes off the bus: a change, or None where changes were lost because it fell behind.
Delivery = StatusChanged | None
LOST: Delivery = None


class EventBus(EventPublisher, Protocol):
    """The store's publisher (`services.instances.ports.EventPublisher`), plus listening for the hub."""

    def listen(self) -> AsyncIterator[Delivery]: ...


def offer(queue: asyncio.Queue[Delivery], event: StatusChanged) -> None:
    """Never block the publisher: a listener that fell a whole queue behind loses what it had queued
    and is told so (LOST), so its subscribers learn it instead of silently missing changes."""
    try:
        queue.put_nowait(event)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(LOST)
        queue.put_nowait(event)
        logger.warning("an event listener fell %d changes behind; its subscribers are told", queue.maxsize)


class InProcessBus:
    """Every subscriber of this process gets every event, through its own bounded queue."""

    def __init__(self, queue_size: int = 1024) -> None:
        self._queues: set[asyncio.Queue[Delivery]] = set()
        self._queue_size = queue_size

    async def stage(self, connection: AsyncConnection, event: StatusChanged) -> None:
        return None

    def committed(self, event: StatusChanged) -> None:
        for queue in self._queues:
            offer(queue, event)

    @property
    def listeners(self) -> int:
        return len(self._queues)

    async def listen(self) -> AsyncGenerator[Delivery, None]:
        queue: asyncio.Queue[Delivery] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
