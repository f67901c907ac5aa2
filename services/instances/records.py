"""Plain, immutable views of stored rows: what the layers above services/ get instead of ORM objects.

`StatusChanged` lives here too: the store makes it with every transition, and the event bus and hub
(`services.events`) carry it, so events depend on instances and never the other way round."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.instances.states import InstanceStatus, InstanceTask, PowerState


@dataclass(frozen=True, slots=True)
class InstanceRecord:
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
    status: InstanceStatus
    status_reason: str | None
    status_message: str | None
    ip_address: str | None
    hostname: str | None
    node: str | None
    terraform_name: str | None
    terraform_namespace: str | None
    semaphore_task_id: int | None
    created_at: datetime
    updated_at: datetime
    active_at: datetime | None
    deleted_at: datetime | None
    version: int
    # Day-2 state (states.py); defaults so records built by hand (tests) need not name them.
    power_state: PowerState = PowerState.RUNNING
    task: InstanceTask | None = None
    task_generation: int | None = None
    action_task_id: int | None = None

    @classmethod
    def from_mapping(cls, row: Any) -> InstanceRecord:
        return cls(**{name: row[name] for name in cls.__slots__})

    @classmethod
    def from_row(cls, row: Any) -> InstanceRecord:
        """From a row selected with `reading.INSTANCE_COLUMNS`, whose order is this class's fields'."""
        return cls(*row)


@dataclass(frozen=True, slots=True)
class InstanceEventRecord:
    id: int
    instance_id: uuid.UUID
    at: datetime
    from_status: InstanceStatus | None
    to_status: InstanceStatus
    reason: str | None
    message: str | None
    actor: str
    version: int
    power_state: PowerState | None
    task: InstanceTask | None

    @classmethod
    def from_mapping(cls, row: Any) -> InstanceEventRecord:
        return cls(**{name: row[name] for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """An instance changed status: published at commit (see `services.events`).

    Small on purpose (ids and statuses): it must fit a PostgreSQL NOTIFY payload many times over."""

    instance_id: uuid.UUID
    org_id: str
    owner_sub: str
    from_status: InstanceStatus | None
    to_status: InstanceStatus
    reason: str | None
    at: datetime
    version: int
    event_id: int  # the instance_events row: lets a listener that lost its connection find what it missed
    # After the change; not on the wire (services/events/model.py): the hub re-reads them with the event.
    power_state: PowerState | None = None
    task: InstanceTask | None = None
