"""Rows for tests, written straight to the database as the lifecycle would have left them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db.models import InstanceEventRow, InstanceLabelRow, InstanceRow
from services.instances.states import InstanceStatus

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def instance_row(index: int, **overrides: object) -> dict[str, object]:
    created = BASE_TIME + timedelta(minutes=index)
    row: dict[str, object] = {
        "id": uuid.uuid4(),
        "name": f"vm-{index:04d}",
        "description": "",
        "org_id": "org-a",
        "owner_sub": "user-1",
        "owner_name": "User One",
        "flavor": "small",
        "image": "debian-12",
        "cpu": 1,
        "memory_mib": 2048,
        "disk_gib": 20,
        "status": InstanceStatus.ACTIVE,
        "ip_address": f"10.0.{index // 250}.{index % 250 + 1}",
        "hostname": f"vm-{index:04d}.example.internal",
        "created_at": created,
        "updated_at": created,
        "version": 1,
    }
    row.update(overrides)
    return row


async def insert_instances(engine: AsyncEngine, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    async with engine.begin() as connection:
        await connection.execute(insert(InstanceRow), rows)
        await connection.execute(
            insert(InstanceEventRow),
            [
                {
                    "instance_id": row["id"],
                    "at": row["created_at"],
                    "from_status": None,
                    "to_status": InstanceStatus.PENDING,
                    "actor": str(row["owner_sub"]),
                    "version": 1,
                }
                for row in rows
            ],
        )
    return rows


async def insert_labels(engine: AsyncEngine, labels: dict[object, dict[str, str]]) -> None:
    """Labels of instances (id -> key -> value), as createInstance or setInstanceLabels stores them."""
    rows = [{"instance_id": i, "key": k, "value": v} for i, pairs in labels.items() for k, v in pairs.items()]
    if rows:
        async with engine.begin() as connection:
            await connection.execute(insert(InstanceLabelRow), rows)
