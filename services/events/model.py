"""The wire form of the one event the gateway publishes, `StatusChanged` (services/instances/records.py).

Between replicas it travels as a NOTIFY payload, which anyone who can connect to the database can send.
Receivers therefore treat a decoded event as a hint naming a change (`event_id` of `instance_id`): the
hub re-reads that change and its instance, and delivers what the database holds (see services/events/hub.py).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from services.instances.records import StatusChanged
from services.instances.states import InstanceStatus


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


MAX_EVENT_ID = 2**63 - 1  # instance_events.id is a BIGINT


def from_payload(data: object) -> StatusChanged:
    """Raises ValueError, KeyError or TypeError on anything but a payload `to_payload` could make."""
    if not isinstance(data, dict):
        raise TypeError("a status notification is a JSON object")
    from_status = data.get("f")
    event_id = int(str(data["e"]))
    if not 1 <= event_id <= MAX_EVENT_ID:
        raise ValueError("event id out of range")
    return StatusChanged(
        instance_id=uuid.UUID(str(data["i"])),
        org_id=str(data["o"]),
        owner_sub=str(data["s"]),
        from_status=InstanceStatus(str(from_status)) if from_status else None,
        to_status=InstanceStatus(str(data["t"])),
        reason=str(data["r"]) if data.get("r") is not None else None,
        at=datetime.fromisoformat(str(data["a"])),
        version=int(str(data["v"])),
        event_id=event_id,
    )
