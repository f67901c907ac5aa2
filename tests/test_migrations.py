"""Alembic is the only way the schema is made: head matches the models, and downgrades work."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from migrations.runner import current_revision, downgrade, head_revision, upgrade
from services.db.models import Base


async def test_head_matches_the_models(engine: AsyncEngine) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(diff) == []
    assert await current_revision(engine) == head_revision()


async def test_downgrade_to_base_and_back(engine: AsyncEngine) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    await downgrade(engine, "base")
    async with engine.connect() as connection:
        assert await connection.run_sync(tables) <= {"alembic_version"}
    assert await current_revision(engine) is None
    await upgrade(engine)
    async with engine.connect() as connection:
        assert {"instances", "instance_events"} <= await connection.run_sync(tables)
