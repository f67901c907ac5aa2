"""Fan-out of status changes to the subscribers of this process.

One listener per process takes every event off the bus and treats it as a hint only: it re-reads the
change it names (the stored event row of that instance, and the instance as it is now) and decides who
receives it from that record, never from the org, owner or statuses the event carries. On PostgreSQL
the event came from a NOTIFY, which anyone who can connect to the database may send, so a forged one
reaches nobody who may not see the instance, and one naming no recorded change reaches nobody at all.

A mailbox is bounded and, when full, coalesces to the newest update per instance, so a slow consumer
costs memory bounded by its limit, never by the event rate, and never slows the bus or other
subscribers. One that falls further behind than its limit is closed with a reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from services.events.bus import EventBus
from services.instances.records import InstanceRecord, StatusChanged
from services.instances.visibility import Visibility

logger = logging.getLogger(__name__)

# The stored change `event_id` of an instance and the instance now (`InstanceStore.recorded_change`).
Reader = Callable[[int, uuid.UUID], Awaitable[tuple[InstanceRecord, StatusChanged] | None]]


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What a subscriber receives: both halves read from the database, none taken from the bus."""

    event: StatusChanged
    instance: InstanceRecord


def fell_behind(limit: int) -> str:
    return f"the subscriber fell more than {limit} changes behind; subscribe again"


class SubscriptionClosed(Exception):
    """The hub ended this subscription (the consumer fell behind, or the process is stopping)."""


class Mailbox:
    """One subscriber's pending updates, in order. While the subscriber keeps up it sees every change;
    once `limit` updates wait, older updates of the same instance are dropped for the newest, and a
    subscriber still over the limit after that is closed."""

    __slots__ = ("_pending", "_ready", "closed", "instance_id", "limit", "visibility")

    def __init__(self, visibility: Visibility, instance_id: uuid.UUID | None, limit: int) -> None:
        self.visibility = visibility
        self.instance_id = instance_id
        self.limit = limit
        self.closed: str | None = None
        self._pending: deque[StatusUpdate] = deque()
        self._ready = asyncio.Event()

    def may_want(self, instance_id: uuid.UUID) -> bool:
        """Before the read: only the instance filter, which needs nothing the event could lie about."""
        return self.instance_id is None or self.instance_id == instance_id

    def wants(self, instance: InstanceRecord) -> bool:
        """After the read: the row-level rule applied to the record, as every query applies it."""
        if not self.may_want(instance.id):
            return False
        return self.visibility.allows(org_id=instance.org_id, owner_sub=instance.owner_sub)

    def offer(self, update: StatusUpdate) -> None:
        if self.closed is not None:
            return
        if len(self._pending) >= self.limit:
            key = update.event.instance_id
            self._pending = deque(p for p in self._pending if p.event.instance_id != key)
        self._pending.append(update)
        if len(self._pending) > self.limit:
            self.close(fell_behind(self.limit))
        self._ready.set()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            self._pending.clear()
            self._ready.set()

    async def __aiter__(self) -> AsyncIterator[StatusUpdate]:
        while True:
            await self._ready.wait()
            if self.closed is not None:
                raise SubscriptionClosed(self.closed)
            if not self._pending:
                self._ready.clear()
                continue
            update = self._pending.popleft()
            if not self._pending:
                self._ready.clear()
            yield update


class Hub:
    def __init__(self, bus: EventBus, read: Reader, *, mailbox_limit: int = 256) -> None:
        self._bus = bus
        self._read = read
        self._mailbox_limit = mailbox_limit
        self._mailboxes: set[Mailbox] = set()
        self.delivered = 0
        self.overflows = 0  # subscriptions closed for falling behind

    @property
    def subscribers(self) -> int:
        return len(self._mailboxes)

    @contextlib.contextmanager
    def subscribe(self, visibility: Visibility, instance_id: uuid.UUID | None = None) -> Iterator[Mailbox]:
        mailbox = Mailbox(visibility, instance_id, self._mailbox_limit)
        self._mailboxes.add(mailbox)
        try:
            yield mailbox
        finally:
            self._mailboxes.discard(mailbox)

    async def run(self) -> None:
        """Take events off the bus until cancelled; a failing read skips one event, never the loop."""
        try:
            async for event in self._bus.listen():
                if event is None:
                    for mailbox in list(self._mailboxes):
                        mailbox.close("the gateway fell behind on status changes; subscribe again")
                    continue
                try:
                    await self.dispatch(event)
                except Exception:
                    logger.exception("dispatching the status change of %s failed", event.instance_id)
        finally:
            for mailbox in list(self._mailboxes):
                mailbox.close("the gateway is shutting down")

    async def dispatch(self, event: StatusChanged) -> None:
        """Deliver the change `event` names to whoever may see its instance, as the database has it."""
        if not any(mailbox.may_want(event.instance_id) for mailbox in self._mailboxes):
            return
        found = await self._read(event.event_id, event.instance_id)
        if found is None:
            logger.warning(
                "dropped a status notification naming no recorded change (event %s)", event.event_id
            )
            return
        instance, change = found
        interested = [mailbox for mailbox in self._mailboxes if mailbox.wants(instance)]
        update = StatusUpdate(change, instance)
        for mailbox in interested:
            was_open = mailbox.closed is None
            mailbox.offer(update)
            if was_open and mailbox.closed is not None:
                self.overflows += 1
        self.delivered += len(interested)
