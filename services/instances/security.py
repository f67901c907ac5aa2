"""The security summary of an instance: written from a verified hint, read as `Instance.security`.

The hint is signed by our playbook, but the summary has no other source to check it against, so it is
bound to the task that reported it: stored only when the task is the instance's current Semaphore task
(a hint of a task a retry replaced, or of no instance at all, stores nothing), in the same statement that
looks the task up, so a retry committed meanwhile cannot slip in between.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db.models import InstanceRow, InstanceSecurityRow, UTCDateTime, utcnow
from services.semaphore.webhook import SecuritySummary


@dataclass(frozen=True, slots=True)
class SecurityRecord:
    hardening_index: int
    warnings: int
    scanned_at: datetime
    task_id: int


class SecurityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def report(self, task_id: int, summary: SecuritySummary) -> bool:
        """Store `summary` for the instance whose current task is `task_id`; False when none is.

        An older scan never replaces a newer one (a replayed hint inside the timestamp window)."""
        source = select(
            InstanceRow.id,
            InstanceRow.semaphore_task_id,
            literal(summary.hardening_index, Integer),
            literal(summary.warnings, Integer),
            literal(summary.scanned_at, UTCDateTime),
            literal(utcnow(), UTCDateTime),
        ).where(InstanceRow.semaphore_task_id == task_id)
        columns = ["instance_id", "task_id", "hardening_index", "warnings", "scanned_at", "reported_at"]
        dialect = postgresql if self._postgres else sqlite
        insert = dialect.insert(InstanceSecurityRow).from_select(columns, source)
        statement = insert.on_conflict_do_update(
            index_elements=[InstanceSecurityRow.instance_id],
            set_={name: insert.excluded[name] for name in columns[1:]},
            where=InstanceSecurityRow.scanned_at <= insert.excluded.scanned_at,
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(statement.returning(InstanceSecurityRow.instance_id))
            return result.first() is not None

    async def of(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SecurityRecord]:
        """The summaries of instances the caller already may see (the DataLoader's batch)."""
        if not instance_ids:
            return {}
        query = select(
            InstanceSecurityRow.instance_id,
            InstanceSecurityRow.hardening_index,
            InstanceSecurityRow.warnings,
            InstanceSecurityRow.scanned_at,
            InstanceSecurityRow.task_id,
        ).where(InstanceSecurityRow.instance_id.in_(set(instance_ids)))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return {row[0]: SecurityRecord(*row[1:]) for row in rows}
