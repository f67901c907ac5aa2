"""Opaque page cursors: the order a page was read in, and the position (sort key, id) of its last row.

Pages stay stable under inserts because the next page starts after a position, not at an offset. The
order travels in the cursor because a position means nothing under another order: a cursor made for
NAME ASC and used with CREATED_AT DESC would skip or repeat rows, so it is refused with a message saying
which order it belongs to. Cursors of the first format (`<created_at>|<id>`, given out before orders
existed) still read as CREATED_AT DESC, the only order there was.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime

from services.instances.ordering import NEWEST_FIRST, Order, OrderDirection, OrderField

SortKey = datetime | str


class InvalidCursor(ValueError):
    """The client sent a cursor we did not make, or one made for another order."""


_GARBAGE = "the cursor is not one this API gave out"


def encode_cursor(order: Order, key: SortKey, instance_id: uuid.UUID) -> str:
    text = key.isoformat() if isinstance(key, datetime) else key
    raw = f"{order.field.value}|{order.direction.value}|{instance_id}|{text}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, order: Order = NEWEST_FIRST) -> tuple[SortKey, uuid.UUID]:
    """The position in `cursor`; InvalidCursor when it is garbage or was made for another order."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        parts = raw.split("|", 3)
        if len(parts) == 2:  # the first format: always newest first
            made_for, key_text, ident = NEWEST_FIRST, parts[0], parts[1]
        elif len(parts) == 4:
            made_for = Order(OrderField(parts[0]), OrderDirection(parts[1]))
            ident, key_text = parts[2], parts[3]
        else:
            raise ValueError("not a cursor")
        key = _key(made_for.field, key_text)
        instance_id = uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor(_GARBAGE) from None
    if made_for != order:
        raise InvalidCursor(
            f"the cursor belongs to orderBy {made_for}, not {order}: pass the same orderBy, "
            "or start again without `after`"
        )
    return key, instance_id


def _key(field: OrderField, text: str) -> SortKey:
    if field is OrderField.NAME:
        if not text:
            raise ValueError("empty name")
        return text
    created_at = datetime.fromisoformat(text)
    if created_at.tzinfo is None:
        raise ValueError("naive timestamp")
    return created_at
