"""Opaque page cursors: the position (created_at, id) of the last row, so pages stay stable under inserts."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime


class InvalidCursor(ValueError):
    """The client sent a cursor we did not make."""


def encode_cursor(created_at: datetime, instance_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{instance_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, _, ident = raw.partition("|")
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None:
            raise ValueError("naive timestamp")
        return created_at, uuid.UUID(ident)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise InvalidCursor("the cursor is not one this API gave out") from None
