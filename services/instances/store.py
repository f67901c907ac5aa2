"""Writing instances: every status change is one compare-and-set with its event, published at commit.

A transition reads the row's version, then `UPDATE … WHERE id = :id AND version = :v`. If another writer
got there first the update touches no row; the transition re-reads and either applies to the new state
or, when the status has moved out of the states it starts from, does nothing. Only the winner of a
transition gets the record back, so only the winner performs side effects (start a task, delete an
object): duplicate watch events, webhooks, retries and replicas are harmless.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.db.engine import serialized_transaction
from services.db.models import InstanceEventRow, InstanceLabelRow, InstanceRow, utcnow
from services.instances.ports import EventPublisher
from services.instances.reading import INSTANCE_COLUMNS, labels_query
from services.instances.records import InstanceRecord, StatusChanged
from services.instances.states import (
    INSTANCE_BUSY,
    INVALID_STATE,
    LIVE_STATUSES,
    UNFINISHED_STATUSES,
    InstanceStatus,
    InstanceTask,
    PowerState,
    Transition,
    action_refusal,
)

CAS_ATTEMPTS = 8
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewInstance:
    """What a create writes; the store adds the status (PENDING), the times and the version."""

    id: uuid.UUID
    name: str
    description: str
    org_id: str
    owner_sub: str
    owner_name: str
    flavor: str
    image: str
    cpu: int
    memory_mib: int
    disk_gib: int
    ssh_public_key: str | None
    idempotency_key: str | None
    terraform_name: str
    terraform_namespace: str


@dataclass(frozen=True, slots=True)
class Quota:
    instances: int
    cpu: int
    memory_mib: int


@dataclass(frozen=True, slots=True)
class Usage:
    instances: int = 0
    cpu: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class QuotaExceeded:
    scope: str  # "user" or "org"
    resource: str  # "instances", "cpu", "memory"
    limit: int
    used: int


@dataclass(frozen=True, slots=True)
class NameTaken:
    name: str


class _Busy(Exception):
    """Lost the race for a task: leave the transaction (rolled back) with the refusal's code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class Inserted:
    record: InstanceRecord
    created: bool  # False: the idempotency key named an instance made earlier


class InstanceStore:
    def __init__(self, engine: AsyncEngine, bus: EventPublisher) -> None:
        self._engine = engine
        self._bus = bus
        self._postgres = engine.dialect.name == "postgresql"
        self._observers: list[Callable[[StatusChanged], None]] = []

    def observe(self, observer: Callable[[StatusChanged], None]) -> None:
        """Call `observer` after each transition this process commits (metrics); it must be quick."""
        self._observers.append(observer)

    def _committed(self, event: StatusChanged) -> None:
        self._bus.committed(event)
        for observer in self._observers:
            try:
                observer(event)
            except Exception:
                logger.exception("a transition observer failed")

    async def get(self, instance_id: uuid.UUID) -> InstanceRecord | None:
        """Unscoped: for the lifecycle's own use, never for a caller's request."""
        async with self._engine.connect() as connection:
            row = (
                (await connection.execute(select(*INSTANCE_COLUMNS).where(InstanceRow.id == instance_id)))
                .mappings()
                .first()
            )
        return InstanceRecord.from_mapping(row) if row else None

    async def recorded_change(
        self, event_id: int, instance_id: uuid.UUID
    ) -> tuple[InstanceRecord, StatusChanged] | None:
        """The stored change `event_id` of `instance_id` and the instance as it is now, in one read.

        What the event hub delivers: a notification only names a change, and whoever can connect to the
        database can send one, so its org, owner and statuses are never taken from it. None when no such
        change of that instance was ever recorded (a forged or garbled notification)."""
        query = (
            select(
                *INSTANCE_COLUMNS,
                InstanceEventRow.from_status.label("event_from"),
                InstanceEventRow.to_status.label("event_to"),
                InstanceEventRow.reason.label("event_reason"),
                InstanceEventRow.at.label("event_at"),
                InstanceEventRow.version.label("event_version"),
                InstanceEventRow.power_state.label("event_power_state"),
                InstanceEventRow.task.label("event_task"),
            )
            .join(InstanceEventRow, InstanceEventRow.instance_id == InstanceRow.id)
            .where(InstanceEventRow.id == event_id, InstanceRow.id == instance_id)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        if row is None:
            return None
        record = InstanceRecord.from_mapping(row)
        change = StatusChanged(
            event_id=event_id,
            instance_id=record.id,
            org_id=record.org_id,
            owner_sub=record.owner_sub,
            from_status=row["event_from"],
            to_status=row["event_to"],
            reason=row["event_reason"],
            at=row["event_at"],
            version=row["event_version"],
            power_state=row["event_power_state"],
            task=row["event_task"],
        )
        return record, change

    async def by_task_id(self, task_id: int) -> InstanceRecord | None:
        query = select(*INSTANCE_COLUMNS).where(InstanceRow.semaphore_task_id == task_id)
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).mappings().first()
        return InstanceRecord.from_mapping(row) if row else None

    async def status_since(self, instance_id: uuid.UUID) -> datetime | None:
        """When the instance entered its current status: the time of its newest event."""
        query = select(func.max(InstanceEventRow.at)).where(InstanceEventRow.instance_id == instance_id)
        async with self._engine.connect() as connection:
            value = (await connection.execute(query)).scalar()
        return _utc(value) if value is not None else None

    async def unfinished(self) -> list[InstanceRecord]:
        """Instances the lifecycle still owes a step: what start-up reconciles."""
        query = (
            select(*INSTANCE_COLUMNS)
            .where(InstanceRow.status.in_(sorted(UNFINISHED_STATUSES)))
            .order_by(InstanceRow.created_at)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [InstanceRecord.from_mapping(row) for row in rows]

    async def live(self) -> list[InstanceRecord]:
        query = select(*INSTANCE_COLUMNS).where(InstanceRow.status.in_(sorted(LIVE_STATUSES)))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [InstanceRecord.from_mapping(row) for row in rows]

    async def by_idempotency_key(self, owner_sub: str, key: str) -> InstanceRecord | None:
        async with self._engine.connect() as connection:
            return await self._by_key(connection, owner_sub, key)

    async def insert(
        self,
        new: NewInstance,
        *,
        actor: str,
        user_quota: Quota,
        org_quota: Quota,
        labels: Mapping[str, str] | None = None,
    ) -> Inserted | QuotaExceeded | NameTaken:
        """Insert a PENDING instance if quotas allow, atomically with every other create of its org."""
        owner_sub, org_id, key = new.owner_sub, new.org_id, new.idempotency_key
        try:
            async with serialized_transaction(self._engine) as connection:
                if self._postgres:
                    # Creates of one org queue here, so counting and inserting cannot interleave.
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(7411, hashtext(:org))"), {"org": org_id}
                    )
                if key is not None:
                    earlier = await self._by_key(connection, owner_sub, key)
                    if earlier is not None:
                        return Inserted(earlier, created=False)
                cpu, memory = new.cpu, new.memory_mib
                for scope, quota, usage in (
                    ("user", user_quota, await self._usage(connection, org_id, owner_sub)),
                    ("org", org_quota, await self._usage(connection, org_id, None)),
                ):
                    exceeded = _exceeds(scope, quota, usage, cpu, memory)
                    if exceeded is not None:
                        return exceeded
                now = utcnow()
                row = {
                    **asdict(new),
                    "status": InstanceStatus.PENDING,
                    "created_at": now,
                    "updated_at": now,
                    "version": 1,
                }
                record = InstanceRecord.from_mapping(
                    (await connection.execute(insert(InstanceRow).values(row).returning(*INSTANCE_COLUMNS)))
                    .mappings()
                    .one()
                )
                if labels:
                    await connection.execute(
                        insert(InstanceLabelRow),
                        [{"instance_id": new.id, "key": k, "value": v} for k, v in labels.items()],
                    )
                event = await self._record_event(connection, record, None, actor, None)
        except IntegrityError as error:
            violated = str(error.orig)
            if "idempotency_key" in violated and key is not None:
                earlier = await self.by_idempotency_key(owner_sub, key)
                if earlier is not None:
                    return Inserted(earlier, created=False)
            # PostgreSQL names the index; SQLite names its columns.
            if "uq_instances_org_id_name_live" in violated or "instances.org_id, instances.name" in violated:
                return NameTaken(new.name)
            raise
        self._committed(event)
        return Inserted(record, created=True)

    async def transition(
        self,
        instance_id: uuid.UUID,
        move: Transition,
        *,
        actor: str,
        reason: str | None = None,
        message: str | None = None,
        changes: Mapping[str, object] | None = None,
        expected_version: int | None = None,
        when: Callable[[InstanceRecord], bool] | None = None,
    ) -> InstanceRecord | None:
        """Make `move` if the instance is in one of the statuses it starts from (and `when` holds of it);
        None when it is not (the race was lost)."""
        for _ in range(CAS_ATTEMPTS):
            current = await self.get(instance_id)
            if current is None or not move.allows(current.status):
                return None
            if expected_version is not None and current.version != expected_version:
                return None
            if when is not None and not when(current):
                return None
            now = utcnow()
            values: dict[str, object] = {
                "status": move.to,
                "status_reason": reason,
                "status_message": message,
                "updated_at": now,
                "version": current.version + 1,
                **(changes or {}),
            }
            if move.to is InstanceStatus.ACTIVE:
                values["active_at"] = now
            if move.to is InstanceStatus.DELETED:
                values["deleted_at"] = now
            record = await self._write_with_event(current, values, actor=actor, message=message)
            if record is not None:
                return record
        return None

    async def _write_with_event(
        self, current: InstanceRecord, values: Mapping[str, object], *, actor: str, message: str | None
    ) -> InstanceRecord | None:
        """One compare-and-set on `current.version` that writes `values` and its event in one transaction,
        published at commit; None when another writer moved the row first (the caller reads again)."""
        async with self._engine.begin() as connection:
            row = (
                (
                    await connection.execute(
                        update(InstanceRow)
                        .where(InstanceRow.id == current.id, InstanceRow.version == current.version)
                        .values(dict(values))
                        .returning(*INSTANCE_COLUMNS)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            record = InstanceRecord.from_mapping(row)
            event = await self._record_event(connection, record, current.status, actor, message)
        self._committed(event)
        return record

    async def update_fields(
        self, instance_id: uuid.UUID, *, expected_version: int, changes: Mapping[str, object]
    ) -> InstanceRecord | None:
        """Change non-status fields (task id, outputs) under the same compare-and-set, without an event."""
        async with self._engine.begin() as connection:
            row = (
                (
                    await connection.execute(
                        update(InstanceRow)
                        .where(InstanceRow.id == instance_id, InstanceRow.version == expected_version)
                        .values({**changes, "version": expected_version + 1, "updated_at": utcnow()})
                        .returning(*INSTANCE_COLUMNS)
                    )
                )
                .mappings()
                .first()
            )
        return InstanceRecord.from_mapping(row) if row else None

    # -- day-2 tasks: the same compare-and-set with its event, on the task instead of the status -------

    async def begin_task(
        self,
        instance_id: uuid.UUID,
        task: InstanceTask,
        *,
        actor: str,
        reason: str,
        changes: Mapping[str, object] | None = None,
        resize_quota: tuple[Quota, Quota] | None = None,
    ) -> InstanceRecord | str | QuotaExceeded | None:
        """Start `task` if the instance is ACTIVE and idle: the record, or the refusal's code
        (`INSTANCE_BUSY`, `INVALID_STATE`), or None when there is no such instance.

        One conditional UPDATE (`task IS NULL AND status = 'ACTIVE'`) decides, so of two replicas asking at
        once exactly one wins. With `resize_quota` (user's, org's) the new size in `changes` is checked in
        the same serialized transaction create uses, counting this instance at its new size."""
        try:
            async with serialized_transaction(self._engine) as connection:
                current = await self._locked_row(connection, instance_id, resize_quota is not None)
                if current is None:
                    return None
                refused = action_refusal(current.status, current.task)
                if refused is not None:
                    return refused
                if resize_quota is not None:
                    exceeded = await self._resize_exceeds(connection, current, changes or {}, resize_quota)
                    if exceeded is not None:
                        return exceeded
                row = (
                    (
                        await connection.execute(
                            update(InstanceRow)
                            .where(
                                InstanceRow.id == instance_id,
                                InstanceRow.task.is_(None),
                                InstanceRow.status == InstanceStatus.ACTIVE,
                            )
                            .values(
                                {
                                    **(changes or {}),
                                    "task": task,
                                    "status_reason": reason,
                                    "status_message": None,
                                    "task_generation": None,
                                    "action_task_id": None,
                                    "updated_at": utcnow(),
                                    "version": InstanceRow.version + 1,
                                }
                            )
                            .returning(*INSTANCE_COLUMNS)
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is None:  # another writer started a task (or moved the status) first
                    return await self._refusal_now(connection, instance_id)
                record = InstanceRecord.from_mapping(row)
                event = await self._record_event(connection, record, current.status, actor, None)
        except _Busy as busy:
            return busy.code
        self._committed(event)
        return record

    async def end_task(
        self,
        instance_id: uuid.UUID,
        task: InstanceTask,
        *,
        actor: str,
        reason: str,
        message: str | None,
        power_state: PowerState,
        when: Callable[[InstanceRecord], bool] | None = None,
    ) -> InstanceRecord | None:
        """End `task` (clear it, set the power state) with its event; None when the instance no longer
        has that task (another replica ended it, or it was deleted) or `when` does not hold."""
        for _ in range(CAS_ATTEMPTS):
            current = await self.get(instance_id)
            if current is None or current.task is not task:
                return None
            if when is not None and not when(current):
                return None
            values = {
                "task": None,
                "power_state": power_state,
                "status_reason": reason,
                "status_message": message,
                "updated_at": utcnow(),
                "version": current.version + 1,
            }
            record = await self._write_with_event(current, values, actor=actor, message=message)
            if record is not None:
                return record
        return None

    async def busy(self) -> list[InstanceRecord]:
        """Instances with a task: what start-up and the periodic reconcile settle besides `unfinished`."""
        query = select(*INSTANCE_COLUMNS).where(InstanceRow.task.is_not(None))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).mappings().all()
        return [InstanceRecord.from_mapping(row) for row in rows]

    async def _locked_row(
        self, connection: AsyncConnection, instance_id: uuid.UUID, org_lock: bool
    ) -> InstanceRecord | None:
        query = select(*INSTANCE_COLUMNS).where(InstanceRow.id == instance_id)
        current_row = (await connection.execute(query)).mappings().first()
        if current_row is None:
            return None
        current = InstanceRecord.from_mapping(current_row)
        if org_lock and self._postgres:
            # The lock of create's quota check: a resize and a create of one org cannot interleave.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(7411, hashtext(:org))"), {"org": current.org_id}
            )
            current = InstanceRecord.from_mapping((await connection.execute(query)).mappings().one())
        return current

    async def _resize_exceeds(
        self,
        connection: AsyncConnection,
        current: InstanceRecord,
        changes: Mapping[str, object],
        quotas: tuple[Quota, Quota],
    ) -> QuotaExceeded | None:
        cpu, memory = changes.get("cpu", current.cpu), changes.get("memory_mib", current.memory_mib)
        assert isinstance(cpu, int)
        assert isinstance(memory, int)
        for scope, quota, owner in (("user", quotas[0], current.owner_sub), ("org", quotas[1], None)):
            usage = await self._usage(connection, current.org_id, owner)
            # Counted as create counts a new instance: everything else, plus this one at its new size.
            others = Usage(
                usage.instances - 1, usage.cpu - current.cpu, usage.memory_mib - current.memory_mib
            )
            exceeded = _exceeds(scope, quota, others, cpu, memory)
            if exceeded is not None:
                in_use = {"instances": usage.instances, "cpu": usage.cpu, "memory": usage.memory_mib}
                return QuotaExceeded(scope, exceeded.resource, exceeded.limit, in_use[exceeded.resource])
        return None

    async def _refusal_now(self, connection: AsyncConnection, instance_id: uuid.UUID) -> str:
        query = select(InstanceRow.status, InstanceRow.task).where(InstanceRow.id == instance_id)
        found = (await connection.execute(query)).first()
        if found is None:
            raise _Busy(INVALID_STATE)
        raise _Busy(action_refusal(found.status, found.task) or INSTANCE_BUSY)

    async def _record_event(
        self,
        connection: AsyncConnection,
        record: InstanceRecord,
        from_status: InstanceStatus | None,
        actor: str,
        message: str | None,
    ) -> StatusChanged:
        at = record.updated_at
        event_id = (
            await connection.execute(
                insert(InstanceEventRow)
                .values(
                    instance_id=record.id,
                    at=at,
                    from_status=from_status,
                    to_status=record.status,
                    reason=record.status_reason,
                    message=message,
                    actor=actor,
                    version=record.version,
                    power_state=record.power_state,
                    task=record.task,
                )
                .returning(InstanceEventRow.id)
            )
        ).scalar_one()
        event = StatusChanged(
            event_id=event_id,
            instance_id=record.id,
            org_id=record.org_id,
            owner_sub=record.owner_sub,
            from_status=from_status,
            to_status=record.status,
            reason=record.status_reason,
            at=at,
            version=record.version,
            power_state=record.power_state,
            task=record.task,
        )
        await self._bus.stage(connection, event)
        return event

    async def labels(self, instance_id: uuid.UUID) -> dict[str, str]:
        """Unscoped, like `get`: the labels the lifecycle copies onto the Terraform object."""
        return (await self.labels_of([instance_id]))[instance_id]

    async def labels_of(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
        """Unscoped, as `labels`, for many instances: one query per 500 ids."""
        found: dict[uuid.UUID, dict[str, str]] = {instance_id: {} for instance_id in instance_ids}
        ids = list(found)
        async with self._engine.connect() as connection:
            for start in range(0, len(ids), 500):
                for instance_id, key, value in await connection.execute(
                    labels_query(ids[start : start + 500])
                ):
                    found[instance_id][key] = value
        return found

    async def replace_labels(
        self, instance_id: uuid.UUID, labels: Mapping[str, str], *, expected_version: int
    ) -> InstanceRecord | None:
        """Make `labels` the instance's whole label set, under the instance's compare-and-set (its version
        moves on, so a concurrent change of the row loses or wins as a whole). None when the race was
        lost or the instance is DELETED."""
        async with self._engine.begin() as connection:
            row = (
                (
                    await connection.execute(
                        update(InstanceRow)
                        .where(
                            InstanceRow.id == instance_id,
                            InstanceRow.version == expected_version,
                            InstanceRow.status != InstanceStatus.DELETED,
                        )
                        .values(version=expected_version + 1, updated_at=utcnow())
                        .returning(*INSTANCE_COLUMNS)
                    )
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            await connection.execute(
                delete(InstanceLabelRow).where(InstanceLabelRow.instance_id == instance_id)
            )
            if labels:
                await connection.execute(
                    insert(InstanceLabelRow),
                    [{"instance_id": instance_id, "key": k, "value": v} for k, v in labels.items()],
                )
        return InstanceRecord.from_mapping(row)

    async def usage(self, org_id: str, owner_sub: str | None = None) -> Usage:
        """What the quota check of `insert` counts, read alone: the `quota`/`orgQuota` queries show the
        very numbers a create is refused by (one owner's when `owner_sub` is given, else the org's)."""
        async with self._engine.connect() as connection:
            return await self._usage(connection, org_id, owner_sub)

    async def _by_key(self, connection: AsyncConnection, owner_sub: str, key: str) -> InstanceRecord | None:
        query = select(*INSTANCE_COLUMNS).where(
            InstanceRow.owner_sub == owner_sub, InstanceRow.idempotency_key == key
        )
        row = (await connection.execute(query)).mappings().first()
        return InstanceRecord.from_mapping(row) if row else None

    async def _usage(self, connection: AsyncConnection, org_id: str, owner_sub: str | None) -> Usage:
        query = select(
            func.count(),
            func.coalesce(func.sum(InstanceRow.cpu), 0),
            func.coalesce(func.sum(InstanceRow.memory_mib), 0),
        ).where(InstanceRow.org_id == org_id, InstanceRow.status.in_(sorted(LIVE_STATUSES)))
        if owner_sub is not None:
            query = query.where(InstanceRow.owner_sub == owner_sub)
        count, cpu, memory = (await connection.execute(query)).one()
        return Usage(instances=int(count), cpu=int(cpu), memory_mib=int(memory))


def _utc(value: datetime) -> datetime:
    # An aggregate skips the column's type on SQLite, which then hands back a naive (UTC) value.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _exceeds(scope: str, quota: Quota, usage: Usage, cpu: int, memory: int) -> QuotaExceeded | None:
    checks: Sequence[tuple[str, int, int, int]] = (
        ("instances", quota.instances, usage.instances, 1),
        ("cpu", quota.cpu, usage.cpu, cpu),
        ("memory", quota.memory_mib, usage.memory_mib, memory),
    )
    for resource, limit, used, wanted in checks:
        if used + wanted > limit:
            return QuotaExceeded(scope=scope, resource=resource, limit=limit, used=used)
    return None
