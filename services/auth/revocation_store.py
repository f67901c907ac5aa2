"""Revocations in the database, announced to the other replicas.

On PostgreSQL the insert NOTIFYs on a channel of its own inside its transaction, so the announcement
leaves with the commit and never without it; each replica LISTENs on one connection of its own and,
whenever that connection (re)starts, re-reads every live row, so nothing committed during a gap is
missed. Any role that can connect may NOTIFY too, so a payload is only a hint naming where to look: the
listener re-reads that subject's (or session's) rows and applies what the table holds. On SQLite there
is one process, which applied the revocation itself when it recorded it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from datetime import datetime

import asyncpg
import orjson
from sqlalchemy import ColumnElement, delete, insert, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.revocation import MAX_SUBJECT_CHARS, Replayed, Revocation, RevocationRequest
from services.db.models import SessionRevocation, utcnow

logger = logging.getLogger(__name__)

CHANNEL = "opencsp_sessions_revoked"
APPLICATION_NAME = "opencsp-gateway revocations"
PROBE_SECONDS = 15.0
MAX_PAYLOAD_BYTES = 2048


class SqlRevocationStore:
    def __init__(self, engine: AsyncEngine, *, min_backoff: float = 0.2, max_backoff: float = 10.0) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self.connected = False
        self.reconnects = 0

    async def insert(self, request: RevocationRequest) -> Revocation:
        values = {
            "sub": request.sub,
            "sid": request.sid,
            "org_id": request.org_id,
            "revoked_at": request.revoked_at,
            "expires_at": request.expires_at,
            "jti": request.jti,
            "source": request.source[:300],
            "created_at": utcnow(),
        }
        try:
            async with self._engine.begin() as connection:
                if request.jti is not None:
                    seen = select(SessionRevocation.id).where(SessionRevocation.jti == request.jti)
                    if (await connection.execute(seen)).first() is not None:
                        raise Replayed(request.jti)
                inserted = await connection.execute(
                    insert(SessionRevocation).values(values).returning(SessionRevocation.id)
                )
                revocation_id = int(inserted.scalar_one())
                if self._postgres:
                    payload = orjson.dumps({"sub": request.sub, "sid": request.sid}).decode()
                    await connection.execute(
                        text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": payload}
                    )
        except IntegrityError:
            # Two replicas raced on the same logout token: the unique jti let exactly one win.
            raise Replayed(request.jti or "") from None
        return Revocation(
            id=revocation_id,
            sub=request.sub,
            sid=request.sid,
            org_id=request.org_id,
            revoked_at=request.revoked_at,
            expires_at=request.expires_at,
        )

    async def live(self, now: datetime) -> list[Revocation]:
        return await self._select(SessionRevocation.expires_at > now)

    async def matching(self, sub: str | None, sid: str | None) -> list[Revocation]:
        conditions = []
        if sub is not None:
            conditions.append(SessionRevocation.sub == sub)
        if sid is not None:
            conditions.append(SessionRevocation.sid == sid)
        if not conditions:
            return []
        return await self._select(or_(*conditions))

    async def prune(self, now: datetime) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(SessionRevocation).where(SessionRevocation.expires_at <= now)
            )
        return int(result.rowcount or 0)

    async def _select(self, condition: ColumnElement[bool]) -> list[Revocation]:
        query = select(
            SessionRevocation.id,
            SessionRevocation.sub,
            SessionRevocation.sid,
            SessionRevocation.org_id,
            SessionRevocation.revoked_at,
            SessionRevocation.expires_at,
        ).where(condition)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            Revocation(
                id=row.id,
                sub=row.sub,
                sid=row.sid,
                org_id=row.org_id,
                revoked_at=row.revoked_at,
                expires_at=row.expires_at,
            )
            for row in rows
        ]

    async def watch(self, hint: Callable[[str | None, str | None], None], resync: Callable[[], None]) -> None:
        if not self._postgres:
            return
        dsn = self._engine.url.set(drivername="postgresql").render_as_string(hide_password=False)

        def on_notify(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            try:
                if len(payload) > MAX_PAYLOAD_BYTES:
                    raise ValueError("too large")
                data = orjson.loads(payload)
                sub, sid = named = (data.get("sub"), data.get("sid"))
                if not all(v is None or (isinstance(v, str) and len(v) <= MAX_SUBJECT_CHARS) for v in named):
                    raise ValueError("not a subject")
            except (ValueError, AttributeError):
                logger.warning("dropped a malformed revocation notification (%d bytes)", len(payload))
                return
            hint(sub, sid)

        delay = self._min_backoff
        while True:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    dsn, server_settings={"application_name": APPLICATION_NAME}, timeout=10
                )
                lost = asyncio.Event()
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                await connection.add_listener(CHANNEL, on_notify)
                # Listening first, then re-reading: whatever committed before is in the table, whatever
                # commits after is announced.
                resync()
                self.connected, delay = True, self._min_backoff
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=PROBE_SECONDS)
                    if not lost.is_set():
                        await asyncio.wait_for(connection.execute("SELECT 1"), timeout=PROBE_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("revocation LISTEN connection: %s; reconnecting in %.1fs", error, delay)
            finally:
                self.connected = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=2)
            self.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)
