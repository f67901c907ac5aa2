"""The one event the gateway publishes: an instance changed status."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from services.db.models import InstanceStatus


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """Small on purpose (ids and statuses): it must fit a PostgreSQL NOTIFY payload many times over."""

    instance_id: uuid.UUID
    org_id: str
    owner_sub: str
    from_status: InstanceStatus | None
    to_status: InstanceStatus
    reason: str | None
    at: datetime
    version: int
