"""Reading instances."""

from __future__ import annotations

import uuid
from typing import Annotated

import strawberry

from schema.compiled import planned_reads
from schema.context import Context
from schema.errors import BadUserInput
from schema.types import (
    Instance,
    InstanceConnection,
    InstanceFilterInput,
    InstanceOrderInput,
    narrow_view,
)
from services.instances.cursor import InvalidCursor
from services.instances.labels import LabelFilterError, parse_label_filter
from services.instances.ordering import NEWEST_FIRST, Order
from services.instances.reading import InstanceFilter


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
    filter: InstanceFilterInput | None = None,
    first: Annotated[
        int | None, strawberry.argument(description="Page size: 20 when omitted, at most 100.")
    ] = None,
    after: Annotated[str | None, strawberry.argument(description="endCursor of the previous page.")] = None,
    order_by: Annotated[
        InstanceOrderInput | None,
        strawberry.argument(description="Newest first when omitted; a cursor only works with its own order."),
    ] = None,
) -> InstanceConnection:
    limits = info.context.services.page_limits
    if first is not None and first < 0:
        raise BadUserInput("first must not be negative")
    size = min(limits.default if first is None else first, limits.maximum)
    wanted = filter or InstanceFilterInput()
    try:
        labels = parse_label_filter(wanted.labels or ())
    except LabelFilterError as exc:
        raise BadUserInput(str(exc)) from None
    service_filter = InstanceFilter(
        statuses=frozenset(wanted.status or ()),
        name_contains=wanted.name_contains or None,
        include_deleted=wanted.include_deleted,
        labels=labels,
    )
    order = Order(order_by.field, order_by.direction) if order_by else NEWEST_FIRST
    reader, visibility = info.context.services.instances, info.context.visibility
    # A compiled plan that reads only columns of the page gets rows of those columns (same rows, same
    # values); graphql-core, and any other selection, gets full Instances.
    columns = InstanceConnection.narrow_columns(planned_reads(info))
    try:
        if columns is not None:
            narrow = await reader.narrow_page(
                visibility, service_filter, columns, first=size, after=after, order=order, row=narrow_view
            )
            return InstanceConnection.from_narrow_page(narrow)
        page = await reader.page(visibility, service_filter, first=size, after=after, order=order)
    except InvalidCursor as exc:
        raise BadUserInput(str(exc)) from None
    return InstanceConnection.from_page(page)
