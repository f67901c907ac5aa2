"""One async engine per process, tuned per backend, and the write transactions the domain needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_connect)
        return engine
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the one writer; busy_timeout turns writer contention into waiting.
    # The driver keeps its own transaction control: a read opens no transaction (no BEGIN round trip
    # through aiosqlite's thread) and a write begins one just before its first statement.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


@asynccontextmanager
async def serialized_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction whose reads and writes no other writer interleaves with (on SQLite, the whole db).

    Counting then inserting must hold SQLite's write lock from the first read, or two such transactions
    both read the same counts (quota) and one fails on upgrade: BEGIN IMMEDIATE takes it up front.
    PostgreSQL callers serialize with an advisory lock instead."""
    async with engine.connect() as connection, connection.begin():
        if engine.dialect.name == "sqlite":
            await connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield connection


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
