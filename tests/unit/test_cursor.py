"""Page cursors: what the API gives out reads back exactly; anything else is refused with one message."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.instances.cursor import InvalidCursor, decode_cursor, encode_cursor
from services.instances.ordering import NEWEST_FIRST, Order, OrderDirection, OrderField
from services.instances.reading import InstanceFilter
from services.instances.visibility import Visibility
from tests.support.factories import insert_instances, instance_row
from tests.unit.conftest import Domain


@pytest.mark.parametrize(
    "created_at",
    [
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2026, 6, 30, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1999, 12, 31, 12, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_a_cursor_reads_back_as_the_position_it_was_made_from(created_at: datetime) -> None:
    instance_id = uuid.uuid4()

    cursor = encode_cursor(NEWEST_FIRST, created_at, instance_id)

    assert decode_cursor(cursor, NEWEST_FIRST) == (created_at, instance_id)
    assert "=" not in cursor
    assert "/" not in cursor
    assert "+" not in cursor


NAME_ASC = Order(OrderField.NAME, OrderDirection.ASC)


@pytest.mark.parametrize("name", ["web-1", "a|b|c", "ünïcode"])
def test_a_name_cursor_reads_back_under_its_own_order(name: str) -> None:
    instance_id = uuid.uuid4()
    assert decode_cursor(encode_cursor(NAME_ASC, name, instance_id), NAME_ASC) == (name, instance_id)


@pytest.mark.parametrize(
    ("made_for", "used_with"),
    [
        (NAME_ASC, NEWEST_FIRST),
        (NAME_ASC, Order(OrderField.NAME, OrderDirection.DESC)),
        (NEWEST_FIRST, Order(OrderField.CREATED_AT, OrderDirection.ASC)),
    ],
)
def test_a_cursor_used_with_another_order_is_refused_naming_its_order(
    made_for: Order, used_with: Order
) -> None:
    key = "web-1" if made_for.field is OrderField.NAME else datetime(2026, 1, 1, tzinfo=UTC)
    cursor = encode_cursor(made_for, key, SOME_ID)
    with pytest.raises(InvalidCursor, match=f"belongs to orderBy {made_for}, not {used_with}"):
        decode_cursor(cursor, used_with)


def test_a_cursor_of_the_first_format_still_reads_as_newest_first() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    legacy = base64.urlsafe_b64encode(f"{at.isoformat()}|{SOME_ID}".encode()).decode().rstrip("=")
    assert decode_cursor(legacy, NEWEST_FIRST) == (at, SOME_ID)
    with pytest.raises(InvalidCursor, match="belongs to orderBy CREATED_AT DESC"):
        decode_cursor(legacy, NAME_ASC)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A fixed id: parameters are test ids, which every pytest-xdist worker must collect alike.
SOME_ID = uuid.UUID("6f1c1b2e-3f7a-4a8e-9a51-0c7d2b1e4f60")


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not-a-cursor",
        "bm90LWEtY3Vyc29y",  # "not-a-cursor"
        "!!!",
        b64(b"\xff\xfe|x"),  # not UTF-8
        b64(f"2026-01-01T00:00:00|{SOME_ID}".encode()),  # a naive timestamp is not one we made
        b64(f"2026-13-01T00:00:00+00:00|{SOME_ID}".encode()),
        b64(b"2026-01-01T00:00:00+00:00|not-a-uuid"),
        b64(b"2026-01-01T00:00:00+00:00"),  # no id
        b64(f"|{SOME_ID}".encode()),
        encode_cursor(NEWEST_FIRST, datetime(2026, 1, 1, tzinfo=UTC), SOME_ID)[:-3],  # truncated
        b64(f"NAME|ASC|{SOME_ID}|".encode()),  # no name
        b64(f"NAME|UP|{SOME_ID}|web-1".encode()),  # no such direction
        b64(f"COLOUR|ASC|{SOME_ID}|red".encode()),  # no such field
        b64(f"CREATED_AT|ASC|{SOME_ID}|web-1".encode()),  # a name where a time belongs
    ],
)
def test_garbage_and_tampered_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidCursor, match="the cursor is not one this API gave out"):
        decode_cursor(cursor)


async def test_pages_walk_every_visible_row_once_newest_first_even_with_equal_times(
    domain_without_watch: Domain,
) -> None:
    same_time = instance_row(0)["created_at"]
    rows = [instance_row(i, created_at=same_time) for i in range(7)]
    rows += [instance_row(i) for i in range(7, 12)]
    rows += [instance_row(i, org_id="org-b") for i in range(12, 15)]  # not visible
    await insert_instances(domain_without_watch.runtime.engine, rows)
    reader = domain_without_watch.runtime.services.instances
    visibility = Visibility(org_ids=frozenset({"org-a"}))

    seen: list[uuid.UUID] = []
    after: str | None = None
    while True:
        page = await reader.page(visibility, InstanceFilter(), first=5, after=after)
        seen += [item.id for item in page.items]
        assert page.has_previous_page is (after is not None)
        if not page.has_next_page:
            break
        after = page.cursor(page.items[-1])

    visible = [r for r in rows if r["org_id"] == "org-a"]
    newest_first = sorted(visible, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    assert seen == [r["id"] for r in newest_first]
    assert len(seen) == 12


async def test_a_garbage_cursor_reaches_the_reader_as_invalid(domain_without_watch: Domain) -> None:
    reader = domain_without_watch.runtime.services.instances
    with pytest.raises(InvalidCursor):
        await reader.page(Visibility.everything(), InstanceFilter(), first=5, after="bm90LWEtY3Vyc29y")
