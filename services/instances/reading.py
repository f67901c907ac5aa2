"""Reading instances and their history, always through the caller's Visibility."""

from __future__ import annotations

import uuid
from collections import namedtuple
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, exists, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.db.models import InstanceEventRow, InstanceLabelRow, InstanceRow
from services.instances.cursor import SortKey, decode_cursor, encode_cursor
from services.instances.labels import LabelFilterError
from services.instances.ordering import NEWEST_FIRST, Order, OrderDirection, OrderField
from services.instances.records import InstanceEventRecord, InstanceRecord
from services.instances.states import LIVE_STATUSES, InstanceStatus
from services.instances.visibility import Visibility
from services.kubernetes.object_rules import Requirement

INSTANCE_COLUMNS = [getattr(InstanceRow, name) for name in InstanceRecord.__slots__]
EVENT_COLUMNS = [getattr(InstanceEventRow, name) for name in InstanceEventRecord.__slots__]
# What a narrow page always reads besides the columns asked for: the id and the sort key (cursors), and
# the org (`@requires` fields are checked in the instance's org).
NARROW_ALWAYS = ("id", "org_id", "created_at", "name")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InstanceFilter:
    statuses: frozenset[InstanceStatus] = frozenset()
    name_contains: str | None = None
    include_deleted: bool = True
    labels: tuple[Requirement, ...] = ()  # all must hold (`services.instances.labels`)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """`items`: records (`page`), or rows of only the columns asked for (`narrow_page`)."""

    items: Sequence[T]
    has_next_page: bool
    has_previous_page: bool
    order: Order = field(default=NEWEST_FIRST)

    def cursor(self, item: T) -> str:
        """Made only when asked for: most pages are read through `nodes`, without cursors."""
        return encode_cursor(self.order, sort_key(item, self.order), item.id)  # type: ignore[attr-defined]


def sort_key(item: Any, order: Order) -> SortKey:
    """`item`: a record, or a narrow page's row (which always has `name` and `created_at`)."""
    key: SortKey = item.name if order.field is OrderField.NAME else item.created_at
    return key


@lru_cache(maxsize=256)
def narrow_row(columns: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """The row class of a narrow page of these columns: a named tuple, so attributes read as fast as a
    record's and a row is built without a Python `__init__`."""
    row: type[tuple[Any, ...]] = namedtuple("InstanceColumns", columns)  # type: ignore[misc]
    return row


def labels_query(instance_ids: Sequence[uuid.UUID]) -> Select[uuid.UUID, str, str]:
    """(instance id, key, value) of every label of these instances."""
    return select(InstanceLabelRow.instance_id, InstanceLabelRow.key, InstanceLabelRow.value).where(
        InstanceLabelRow.instance_id.in_(set(instance_ids))
    )


def narrow_columns(wanted: Sequence[str]) -> tuple[str, ...]:
    """The columns a narrow page of `wanted` selects, in a stable order; raises KeyError for a name that
    is not a column of `instances`."""
    names = {*wanted, *NARROW_ALWAYS}
    for name in names:
        if name not in InstanceRow.__table__.columns:
            raise KeyError(name)
    return tuple(sorted(names))


class InstanceReader:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._pages = _page_engine(sessions)

    async def by_ids(self, ids: Sequence[uuid.UUID], visibility: Visibility) -> list[InstanceRecord | None]:
        """In the order asked; an instance the caller may not see is None, exactly like a missing one."""
        if not ids:
            return []
        query = select(*INSTANCE_COLUMNS).where(InstanceRow.id.in_(set(ids)), visibility.clause())
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        found = {record.id: record for record in map(InstanceRecord.from_row, rows)}
        return [found.get(instance_id) for instance_id in ids]

    async def page(
        self,
        visibility: Visibility,
        instance_filter: InstanceFilter,
        *,
        first: int,
        after: str | None = None,
        order: Order = NEWEST_FIRST,
    ) -> Page[InstanceRecord]:
        """In `order`, the id breaking ties; fetch one extra row to learn whether another page follows."""
        query = _page_query(INSTANCE_COLUMNS, visibility, instance_filter, after, order)
        rows = await self._page_rows(query.limit(first + 1))
        return Page(
            items=[InstanceRecord.from_row(row) for row in rows[:first]],
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            order=order,
        )

    async def narrow_page(
        self,
        visibility: Visibility,
        instance_filter: InstanceFilter,
        columns: Sequence[str],
        *,
        first: int,
        after: str | None = None,
        order: Order = NEWEST_FIRST,
        row: Callable[[tuple[str, ...]], type[tuple[Any, ...]]] = narrow_row,
    ) -> Page[Any]:
        """`page()`, the same rows, with only `columns` read (and `NARROW_ALWAYS`): named tuples with
        the column names as attributes (`narrow_row`) instead of records. For a reader that knows which
        fields it reads, such as a compiled query plan; the columns' values are the records' own.
        `row`: the class of the rows, given the columns in their order (a subclass of `narrow_row`'s
        may add attributes computed from them)."""
        names = narrow_columns(columns)
        if after is None:
            query = _first_narrow_page_query(names, visibility, instance_filter, order, first + 1)
        else:
            query = _narrow_page_query(names, visibility, instance_filter, after, order, first + 1)
        rows = await self._page_rows(query)
        make, kind = tuple.__new__, row(names)
        return Page(
            items=[make(kind, values) for values in rows[:first]],
            has_next_page=len(rows) > first,
            has_previous_page=after is not None,
            order=order,
        )

    async def _page_rows(self, query: Select[tuple[object, ...]]) -> Sequence[Any]:
        """A page's one SELECT on a pooled connection of its own, without an ORM session (the rows are
        plain columns): on PostgreSQL in autocommit, so no BEGIN and ROLLBACK round trips around it (one
        statement sees one snapshot either way)."""
        if self._pages is None:
            async with self._sessions() as session:
                return (await session.execute(query)).all()
        async with self._pages.connect() as connection:
            return (await connection.execute(query)).all()

    async def labels(self, instance_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, str]]:
        """The labels of many instances in one query (the DataLoader's batch). Callers pass only ids
        they may see (instances already read through their Visibility)."""
        result: dict[uuid.UUID, dict[str, str]] = {i: {} for i in instance_ids}
        if not instance_ids:
            return result
        async with self._sessions() as session:
            for instance_id, key, value in (await session.execute(labels_query(instance_ids))).all():
                result[instance_id][key] = value
        return result

    async def events(
        self, instance_ids: Sequence[uuid.UUID], *, limit: int, newest: bool = True
    ) -> dict[uuid.UUID, list[InstanceEventRecord]]:
        """History of many instances in one query (the DataLoader's batch): the newest (or oldest)
        `limit` events of each, oldest first."""
        order = InstanceEventRow.id.desc() if newest else InstanceEventRow.id.asc()
        ranked = (
            select(
                *EVENT_COLUMNS,
                func.row_number()
                .over(partition_by=InstanceEventRow.instance_id, order_by=order)
                .label("rank"),
            )
            .where(InstanceEventRow.instance_id.in_(set(instance_ids)))
            .subquery()
        )
        query = (
            select(*[ranked.c[name] for name in InstanceEventRecord.__slots__])
            .where(ranked.c.rank <= limit)
            .order_by(ranked.c.instance_id, ranked.c.id)
        )
        result: dict[uuid.UUID, list[InstanceEventRecord]] = {i: [] for i in instance_ids}
        async with self._sessions() as session:
            for row in (await session.execute(query)).mappings():
                result[row["instance_id"]].append(InstanceEventRecord.from_mapping(row))
        return result


def _narrow_page_query(
    names: tuple[str, ...],
    visibility: Visibility,
    instance_filter: InstanceFilter,
    after: str | None,
    order: Order,
    limit: int,
) -> Select[tuple[object, ...]]:
    columns = [getattr(InstanceRow, name) for name in names]
    return _page_query(columns, visibility, instance_filter, after, order).limit(limit)


@lru_cache(maxsize=512)
def _first_narrow_page_query(
    names: tuple[str, ...], visibility: Visibility, instance_filter: InstanceFilter, order: Order, limit: int
) -> Select[tuple[object, ...]]:
    """A first page's statement, made once per caller's visibility, filter, order and size: building a
    SELECT and its cache key costs about as much as processing a page of 20 rows. Statements are
    immutable, so requests share them; a page after a cursor is built each time."""
    return _narrow_page_query(names, visibility, instance_filter, None, order, limit)


def _page_engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The sessions' engine for page reads; None when they are not bound to one engine."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine):
        return None
    if bind.dialect.name == "postgresql":
        return bind.execution_options(isolation_level="AUTOCOMMIT")
    # SQLite's driver opens no transaction for a SELECT (services.db.engine), and setting an isolation
    # level would cost a hop through aiosqlite's thread per read.
    return bind


def _page_query(
    columns: Sequence[Any],
    visibility: Visibility,
    instance_filter: InstanceFilter,
    after: str | None,
    order: Order,
) -> Select[tuple[object, ...]]:
    """A page's SELECT of `columns` (without its LIMIT): visible rows matching the filter, after the
    cursor, in `order` with the id breaking ties."""
    query: Select[tuple[object, ...]] = select(*columns).where(visibility.clause())
    if instance_filter.statuses:
        query = query.where(InstanceRow.status.in_(sorted(instance_filter.statuses)))
    elif not instance_filter.include_deleted:
        query = query.where(InstanceRow.status.in_(sorted(LIVE_STATUSES)))
    if instance_filter.name_contains:
        needle = instance_filter.name_contains.lower().replace("\\", "\\\\")
        needle = needle.replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(InstanceRow.name).like(f"%{needle}%", escape="\\"))
    for requirement in instance_filter.labels:
        query = query.where(label_clause(requirement))
    column = InstanceRow.name if order.field is OrderField.NAME else InstanceRow.created_at
    descending = order.direction is OrderDirection.DESC
    if after is not None:
        key, instance_id = decode_cursor(after, order)
        # The expanded form of (key, id) < (:k, :id) (> ascending), which SQLite's planner serves
        # from the index.
        if descending:
            query = query.where(or_(column < key, and_(column == key, InstanceRow.id < instance_id)))
        else:
            query = query.where(or_(column > key, and_(column == key, InstanceRow.id > instance_id)))
    if descending:
        query = query.order_by(column.desc(), InstanceRow.id.desc())
    else:
        query = query.order_by(column.asc(), InstanceRow.id.asc())
    return query


def label_clause(requirement: Requirement) -> ColumnElement[bool]:
    """The requirement as a condition on `instances` rows, with Kubernetes semantics: `!=` and `notin`
    also hold for an instance without the key."""
    same_instance = InstanceLabelRow.instance_id == InstanceRow.id
    has_key = and_(same_instance, InstanceLabelRow.key == requirement.key)
    if requirement.operator == "exists":
        return exists(select(InstanceLabelRow.key).where(has_key))
    if requirement.operator == "!":
        return not_(exists(select(InstanceLabelRow.key).where(has_key)))
    matching = exists(
        select(InstanceLabelRow.key).where(has_key, InstanceLabelRow.value.in_(sorted(requirement.values)))
    )
    if requirement.operator in ("=", "==", "in"):
        return matching
    if requirement.operator in ("!=", "notin"):
        return not_(matching)
    raise LabelFilterError(f"unsupported label operator {requirement.operator}")
