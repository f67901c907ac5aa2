"""Tables of the gateway. Alembic migrations are the only way these reach a database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Uuid,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from services.instances.states import InstanceStatus, InstanceTask, PowerState

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend; SQLite has no timestamp type and would hand back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


status_type = Enum(
    InstanceStatus,
    name="instance_status",
    native_enum=False,
    create_constraint=True,
    length=16,
    validate_strings=True,
)


# Day-2 state (issue 14): plain strings in the database, the domain's enums in Python; no CHECK
# constraint, so a later power state or task needs no table rebuild on SQLite.
power_type = Enum(PowerState, name="power_state", native_enum=False, create_constraint=False, length=16)
task_type = Enum(InstanceTask, name="instance_task", native_enum=False, create_constraint=False, length=16)


class InstanceRow(Base):
    """The `instances` table; the rest of the code reads it as `InstanceRecord`."""

    __tablename__ = "instances"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    org_id: Mapped[str] = mapped_column(String(64))
    owner_sub: Mapped[str] = mapped_column(String(255))
    owner_name: Mapped[str] = mapped_column(String(255), default="", server_default="")
    flavor: Mapped[str] = mapped_column(String(64))
    image: Mapped[str] = mapped_column(String(64))
    cpu: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(Integer)
    disk_gib: Mapped[int] = mapped_column(Integer)
    ssh_public_key: Mapped[str | None] = mapped_column(Text, default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(128), default=None)
    status: Mapped[InstanceStatus] = mapped_column(status_type, default=InstanceStatus.PENDING)
    status_reason: Mapped[str | None] = mapped_column(String(128), default=None)
    status_message: Mapped[str | None] = mapped_column(Text, default=None)
    ip_address: Mapped[str | None] = mapped_column(String(64), default=None)
    hostname: Mapped[str | None] = mapped_column(String(255), default=None)
    node: Mapped[str | None] = mapped_column(String(255), default=None)
    terraform_name: Mapped[str | None] = mapped_column(String(253), default=None)
    terraform_namespace: Mapped[str | None] = mapped_column(String(63), default=None)
    semaphore_task_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    active_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)
    power_state: Mapped[PowerState] = mapped_column(
        power_type, default=PowerState.RUNNING, server_default=PowerState.RUNNING.value
    )
    task: Mapped[InstanceTask | None] = mapped_column(task_type, default=None)
    # The Terraform object's metadata.generation a start, stop or resize waits to see Ready.
    task_generation: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The Semaphore task of a reboot (the actions template); semaphore_task_id stays post-provisioning's.
    action_task_id: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (
        # Newest-first pagination walks this index; the id breaks ties between equal timestamps.
        Index("ix_instances_created_at_id", "created_at", "id"),
        Index("ix_instances_org_id_created_at", "org_id", "created_at"),
        Index("ix_instances_owner_sub_created_at", "owner_sub", "created_at"),
        # A name is unique per org among live instances; deleted ones free their name.
        Index(
            "uq_instances_org_id_name_live",
            "org_id",
            "name",
            unique=True,
            sqlite_where=text("status != 'DELETED'"),
            postgresql_where=text("status != 'DELETED'"),
        ),
        Index("uq_instances_owner_sub_idempotency_key", "owner_sub", "idempotency_key", unique=True),
        # orderBy NAME walks this index as CREATED_AT walks ix_instances_created_at_id.
        Index("ix_instances_name_id", "name", "id"),
    )


class InstanceEventRow(Base):
    """The `instance_events` table: one row per status change, written with the change."""

    __tablename__ = "instance_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    instance_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("instances.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    from_status: Mapped[InstanceStatus | None] = mapped_column(
        Enum(InstanceStatus, name="instance_event_from", native_enum=False, length=16), default=None
    )
    to_status: Mapped[InstanceStatus] = mapped_column(
        Enum(InstanceStatus, name="instance_event_to", native_enum=False, length=16)
    )
    reason: Mapped[str | None] = mapped_column(String(128), default=None)
    message: Mapped[str | None] = mapped_column(Text, default=None)
    actor: Mapped[str] = mapped_column(String(255))
    version: Mapped[int] = mapped_column(Integer)
    # The power state and task after this change (day-2 actions record events with status unchanged).
    power_state: Mapped[PowerState | None] = mapped_column(power_type, default=None)
    task: Mapped[InstanceTask | None] = mapped_column(task_type, default=None)

    __table_args__ = (Index("ix_instance_events_instance_id_at", "instance_id", "at", "id"),)


class InstanceLabelRow(Base):
    """The `instance_labels` table: one row per label of an instance.

    A child table rather than a JSON column, so every selector operator (=, !=, in, notin, exists, !)
    is a plain EXISTS / NOT EXISTS on indexed columns, written once for SQLite and PostgreSQL alike."""

    __tablename__ = "instance_labels"

    instance_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(63))

    # The primary key (instance_id, key) serves a requirement's lookup per instance; this one serves
    # a selective `key=value` over many instances.
    __table_args__ = (Index("ix_instance_labels_key_value", "key", "value"),)


class SessionRevocation(Base):
    """A signed-out subject (or session): tokens it covers are refused (see services/auth/revocation.py)."""

    __tablename__ = "session_revocations"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    sub: Mapped[str | None] = mapped_column(String(255), default=None)
    sid: Mapped[str | None] = mapped_column(String(255), default=None)
    org_id: Mapped[str | None] = mapped_column(String(64), default=None)  # None: every org
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    jti: Mapped[str | None] = mapped_column(String(255), default=None, unique=True)
    source: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_session_revocations_sub", "sub"),
        Index("ix_session_revocations_sid", "sid"),
        Index("ix_session_revocations_expires_at", "expires_at"),
    )


class InstanceSecurityRow(Base):
    """The newest security summary (Lynis) the playbook reported for an instance, from its current task.

    A table of its own: written only by the webhook, read only by `Instance.security`, and never part of
    the instance's compare-and-set (a report must not make a lifecycle write lose its race)."""

    __tablename__ = "instance_security"

    instance_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("instances.id", ondelete="CASCADE"), primary_key=True
    )
    task_id: Mapped[int] = mapped_column(BigInteger)
    hardening_index: Mapped[int] = mapped_column(Integer)
    warnings: Mapped[int] = mapped_column(Integer)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
