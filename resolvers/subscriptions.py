"""Live status changes: the hub re-reads each change and applies the subscriber's row-level rules to it."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry

from resolvers.instances import parse_id
from schema.context import Context
from schema.errors import BadUserInput, SubscriptionEnded
from schema.types import Instance, InstanceStatusEvent, StatusChangeFilter
from services.events.hub import StatusUpdate, SubscriptionClosed
from services.instances.reasons import public_reason
from services.instances.states import reported_power


def _event(context: Context, update: StatusUpdate) -> InstanceStatusEvent:
    # The loaders live as long as the subscription: forget what they read for this instance, or
    # nested fields (its events) would answer every change from the first one's read.
    context.loaders.forget(update.instance.id)
    # Which instance this change is of, for a shared group's writer (it coalesces a slow member per instance).
    context.instance = update.instance.id
    return InstanceStatusEvent(
        instance=Instance.from_record(update.instance),
        from_status=update.event.from_status,
        to_status=update.event.to_status,
        reason=public_reason(update.event.reason),
        at=update.event.at,
        version=update.event.version,
        power_state=reported_power(update.event.to_status, update.event.power_state)
        if update.event.power_state is not None
        else None,
        task=update.event.task,
    )


async def instance_status_changed(
    info: strawberry.Info[Context, None], id: strawberry.ID
) -> AsyncGenerator[InstanceStatusEvent, None]:
    instance_id = parse_id(id)
    # Not visible and not existing look the same: both are "no such instance".
    if instance_id is None or await info.context.loaders.instance.load(instance_id) is None:
        raise BadUserInput("no such instance")
    context = info.context
    with context.services.hub.subscribe(context.visibility, instance_id) as mailbox:
        try:
            async for update in mailbox:
                yield _event(context, update)
        except SubscriptionClosed as closed:
            raise SubscriptionEnded(str(closed)) from None


async def instance_status_changes(
    info: strawberry.Info[Context, None], filter: StatusChangeFilter | None = None
) -> AsyncGenerator[InstanceStatusEvent, None]:
    wanted = set(filter.to or ()) if filter else set()
    needle = (filter.name_contains or "").lower() if filter else ""
    context = info.context
    with context.services.hub.subscribe(context.visibility) as mailbox:
        try:
            async for update in mailbox:
                if wanted and update.event.to_status not in wanted:
                    continue
                if needle and needle not in update.instance.name.lower():
                    continue
                yield _event(context, update)
        except SubscriptionClosed as closed:
            raise SubscriptionEnded(str(closed)) from None
