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
    event_id: int  # the instance_events row: lets a listener that lost its connection find what it missed


def to_payload(event: StatusChanged) -> dict[str, object]:
    return {
        "e": event.event_id,
        "i": str(event.instance_id),
        "o": event.org_id,
        "s": event.owner_sub,
        "f": event.from_status.value if event.from_status else None,
        "t": event.to_status.value,
        "r": event.reason,
        "a": event.at.isoformat(),
        "v": event.version,
    }


def from_payload(data: dict[str, object]) -> StatusChanged:
    from_status = data.get("f")
    return StatusChanged(
        instance_id=uuid.UUID(str(data["i"])),
        org_id=str(data["o"]),
        owner_sub=str(data["s"]),
        from_status=InstanceStatus(str(from_status)) if from_status else None,
        to_status=InstanceStatus(str(data["t"])),
        reason=str(data["r"]) if data.get("r") is not None else None,
        at=datetime.fromisoformat(str(data["a"])),
        version=int(str(data["v"])),
        event_id=int(str(data["e"])),
    )
