"""The bus across replicas: NOTIFY inside the transition's transaction, LISTEN on one connection per process.

PostgreSQL delivers a NOTIFY only when its transaction commits, so an event is published exactly when
its change becomes visible, to every listening replica, this one included. The listening connection
reconnects by itself; after a gap it re-reads the events committed meanwhile (with a margin, deduplicated)
so no subscriber misses a committed change. Payloads are ids and statuses, far below NOTIFY's 8000-byte
limit.

Any role that can connect to the database can NOTIFY on our channel, so nothing here trusts a payload:
malformed ones are logged and dropped, and the rest are hints the hub checks against the stored change
before anyone receives them. Deduplication keys on the event id, instance and commit time together, so a
forged notification that guesses the next event id cannot make the real change look like a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import asyncpg
import orjson
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.db.models import InstanceEventRow, InstanceRow, utcnow
from services.events.bus import Delivery, offer
from services.events.model import from_payload, to_payload
from services.instances.records import StatusChanged

logger = logging.getLogger(__name__)

CHANNEL = "opencsp_status_changed"
# Names the LISTEN connection in pg_stat_activity, so an operator (or a test) can tell it apart.
APPLICATION_NAME = "opencsp-gateway events"
CATCH_UP_MARGIN = timedelta(seconds=5)
PROBE_SECONDS = 15.0
RECENT_IDS = 10_000


class PostgresBus:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        queue_size: int = 1024,
        min_backoff: float = 0.2,
        max_backoff: float = 10.0,
    ) -> None:
        self._engine = engine
        self._dsn = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._queue_size = queue_size
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._queues: set[asyncio.Queue[Delivery]] = set()
        self._recent: OrderedDict[tuple[int, uuid.UUID, datetime], None] = OrderedDict()
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.connected = False
        self.reconnects = 0

    async def stage(self, connection: AsyncConnection, event: StatusChanged) -> None:
        payload = orjson.dumps(to_payload(event)).decode()
        await connection.execute(
            text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
        )

    def committed(self, event: StatusChanged) -> None:
        """Nothing to do: LISTEN brings the event back to this process too, once committed."""

    async def listen(self) -> AsyncIterator[Delivery]:
        queue: asyncio.Queue[Delivery] = asyncio.Queue(self._queue_size)
        self._queues.add(queue)
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(self._listen_forever(), name="postgres LISTEN")
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.discard(queue)
            if not self._queues and self._listener is not None:
                self._listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._listener
                self._listener = None

    async def wait_listening(self) -> None:
        """For tests and start-up: returns once LISTEN is in place."""
        await self._listening.wait()

    async def _listen_forever(self) -> None:
        # The last instant LISTEN was known to work: after a gap, catch up from there (with a margin),
        # not from when the loss was noticed, which can be a probe interval later.
        alive_at: datetime | None = None
        caught_up = True
        delay = self._min_backoff
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": APPLICATION_NAME}, timeout=10
                )
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, self._on_notify)
                if not caught_up and alive_at is not None:
                    await self._catch_up(alive_at - CATCH_UP_MARGIN)
                caught_up = True
                alive_at = utcnow()
                self.connected, delay = True, self._min_backoff
                self._listening.set()
                while not lost.is_set():
                    # A quiet connection can die without a termination callback: probe it now and then.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=PROBE_SECONDS)
                    if not lost.is_set():
                        await asyncio.wait_for(connection.execute("SELECT 1"), timeout=PROBE_SECONDS)
                        alive_at = utcnow()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # whatever broke (driver, pool, catch-up query), LISTEN comes back
                logger.warning("event LISTEN connection: %s; reconnecting in %.1fs", error, delay)
            finally:
                if self.connected:
                    caught_up = False
                self.connected = False
                self._listening.clear()
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)

    def _on_notify(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = from_payload(orjson.loads(payload))
        except (ValueError, KeyError, TypeError):  # orjson's decode error is a ValueError
            logger.warning("dropped a malformed status notification (%d bytes)", len(payload))
            return
        self._deliver(event)

    async def _catch_up(self, since: datetime) -> None:
        query = (
            select(
                InstanceEventRow.id,
                InstanceEventRow.instance_id,
                InstanceRow.org_id,
                InstanceRow.owner_sub,
                InstanceEventRow.from_status,
                InstanceEventRow.to_status,
                InstanceEventRow.reason,
                InstanceEventRow.at,
                InstanceEventRow.version,
            )
            .join(InstanceRow, InstanceRow.id == InstanceEventRow.instance_id)
            .where(InstanceEventRow.at >= since)
            .order_by(InstanceEventRow.id)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        for row in rows:
            self._deliver(
                StatusChanged(
                    instance_id=row.instance_id,
                    org_id=row.org_id,
                    owner_sub=row.owner_sub,
                    from_status=row.from_status,
                    to_status=row.to_status,
                    reason=row.reason,
                    at=row.at,
                    version=row.version,
                    event_id=row.id,
                )
            )

    def _deliver(self, event: StatusChanged) -> None:
        key = (event.event_id, event.instance_id, event.at)
        if key in self._recent:
            return
        self._recent[key] = None
        if len(self._recent) > RECENT_IDS:
            self._recent.popitem(last=False)
        for queue in self._queues:
            offer(queue, event)
