"""Reading instances."""

from __future__ import annotations

import uuid

import strawberry

from schema.context import EVENTS_PER_INSTANCE, Context
from schema.errors import BadUserInput
from schema.types import (
    Instance,
    InstanceConnection,
    InstanceEvent,
    InstanceFilter,
)
from services.instances.cursor import InvalidCursor
from services.instances.reading import InstanceFilter as ServiceFilter
from services.instances.records import InstanceRecord

DEFAULT_EVENTS = 20


def parse_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def resolve_instance(info: strawberry.Info[Context, None], id: strawberry.ID) -> Instance | None:
    instance_id = parse_id(id)
    if instance_id is None:
        return None
    record = await info.context.loaders.instance.load(instance_id)
    return Instance.from_record(record) if record else None


async def resolve_instances(
    info: strawberry.Info[Context, None],
    filter: InstanceFilter | None,
    first: int | None,
    after: str | None,
) -> InstanceConnection:
    limits = info.context.services.page_limits
    if first is not None and first < 0:
        raise BadUserInput("first must not be negative")
    size = min(limits.default if first is None else first, limits.maximum)
    wanted = filter or InstanceFilter()
    service_filter = ServiceFilter(
        statuses=frozenset(wanted.status or ()),
        name_contains=wanted.name_contains or None,
        include_deleted=wanted.include_deleted,
    )
    try:
        page = await info.context.services.instances.page(
            info.context.visibility, service_filter, first=size, after=after
        )
    except InvalidCursor as exc:
        raise BadUserInput(str(exc)) from None
    return InstanceConnection.from_page(page)


async def resolve_events(
    info: strawberry.Info[Context, None], instance: InstanceRecord, *, first: int | None, last: int | None
) -> list[InstanceEvent]:
    if first is not None and last is not None:
        raise BadUserInput("give first or last, not both")
    count = first if first is not None else (last if last is not None else DEFAULT_EVENTS)
    if not 0 <= count <= EVENTS_PER_INSTANCE:
        raise BadUserInput(
            f"{'first' if first is not None else 'last'} must be between 0 and {EVENTS_PER_INSTANCE}"
        )
    loaders, instance_id = info.context.loaders, instance.id
    if first is not None:
        events = (await loaders.oldest_events.load(instance_id))[:count]
    else:
        newest = await loaders.newest_events.load(instance_id)
        events = newest[len(newest) - count :] if count else []
    return [InstanceEvent.from_record(event, instance.org_id) for event in events]
