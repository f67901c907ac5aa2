"""The event buses: an event leaves with its transaction's commit, never without it, and the PostgreSQL
listener survives losing its connection without losing or repeating a committed change.

Rolled-back transitions are real: a database trigger fails the transaction (on PostgreSQL a deferred
constraint trigger, so it fails at COMMIT, after the NOTIFY was queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.events.bus import EventBus, InProcessBus
from services.events.hub import Hub, Mailbox, StatusUpdate, SubscriptionClosed
from services.events.postgres_bus import APPLICATION_NAME, PostgresBus
from services.instances.records import InstanceRecord, StatusChanged
from services.instances.states import InstanceStatus, Transition
from services.instances.store import InstanceStore
from services.instances.visibility import Visibility
from tests.support.factories import insert_instances, instance_row

FAIL = "fail-this-transaction"
STEPS = [
    InstanceStatus.PENDING,
    InstanceStatus.PROVISIONING,
    InstanceStatus.CONFIGURING,
    InstanceStatus.ACTIVE,
]

SQLITE_TRIGGER = f"""
CREATE TRIGGER fail_marked_events BEFORE INSERT ON instance_events
WHEN NEW.reason = '{FAIL}' BEGIN SELECT RAISE(ABORT, 'marked to fail'); END
"""
POSTGRES_FUNCTION = f"""
CREATE FUNCTION fail_marked_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reason = '{FAIL}' THEN RAISE EXCEPTION 'marked to fail at commit'; END IF;
  RETURN NULL;
END $$
"""
POSTGRES_TRIGGER = """
CREATE CONSTRAINT TRIGGER fail_marked_events AFTER INSERT ON instance_events
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fail_marked_events()
"""


def bus_for(engine: AsyncEngine) -> EventBus:
    """The bus the gateway itself picks for this database."""
    return PostgresBus(engine) if engine.dialect.name == "postgresql" else InProcessBus()


@contextlib.asynccontextmanager
async def listening(bus: EventBus) -> AsyncIterator[asyncio.Queue[StatusChanged]]:
    """Pump the bus into a queue the test reads, from the moment the listener is in place."""
    received: asyncio.Queue[StatusChanged] = asyncio.Queue()

    async def pump() -> None:
        async for event in bus.listen():
            assert event is not None, "no change may be lost in these tests"
            received.put_nowait(event)

    task = asyncio.create_task(pump())
    if isinstance(bus, PostgresBus):
        await asyncio.wait_for(bus.wait_listening(), timeout=10)
    else:
        assert isinstance(bus, InProcessBus)
        while bus.listeners == 0:
            await asyncio.sleep(0)
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_event(received: asyncio.Queue[StatusChanged]) -> StatusChanged:
    return await asyncio.wait_for(received.get(), timeout=10)


async def pending_instance(engine: AsyncEngine, index: int = 0) -> uuid.UUID:
    row = instance_row(index, status=InstanceStatus.PENDING)
    await insert_instances(engine, [row])
    return uuid.UUID(str(row["id"]))


async def step(store: InstanceStore, instance_id: uuid.UUID, to: InstanceStatus, reason: str = "ok") -> None:
    before = STEPS[STEPS.index(to) - 1]
    move = Transition(f"test: {before} to {to}", to, frozenset({before}))
    record = await store.transition(instance_id, move, actor="test", reason=reason)
    assert record is not None
    assert record.status is to


async def fail_marked_transitions(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(POSTGRES_FUNCTION))
            await connection.execute(text(POSTGRES_TRIGGER))
        else:
            await connection.execute(text(SQLITE_TRIGGER))


async def test_an_event_is_published_only_once_its_transition_is_committed(engine: AsyncEngine) -> None:
    bus = bus_for(engine)
    store = InstanceStore(engine, bus)
    instance_id = await pending_instance(engine)
    await fail_marked_transitions(engine)
    async with listening(bus) as received:
        with pytest.raises(DBAPIError, match="marked to fail"):
            await step(store, instance_id, InstanceStatus.PROVISIONING, reason=FAIL)
        assert (await store.get(instance_id)).status is InstanceStatus.PENDING  # type: ignore[union-attr]

        await step(store, instance_id, InstanceStatus.PROVISIONING)
        # Events arrive in commit order, so the rolled-back one would have come first.
        event = await next_event(received)
        assert (event.from_status, event.to_status, event.reason) == (
            InstanceStatus.PENDING,
            InstanceStatus.PROVISIONING,
            "ok",
        )
        # When a listener hears of a change, any other connection already sees it.
        async with engine.connect() as other:
            seen = (
                await other.execute(
                    text("SELECT status, version FROM instances WHERE id = :id"),
                    {"id": instance_id if engine.dialect.name == "postgresql" else instance_id.hex},
                )
            ).one()
        assert (seen.status, seen.version) == ("PROVISIONING", event.version)
        assert received.empty()


@pytest.mark.postgres
async def test_listen_reconnects_by_itself_and_catches_up_exactly_once(engine: AsyncEngine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    # The first retry waits at least one second: long enough for the changes below to land in the gap.
    bus = PostgresBus(engine, min_backoff=2.0)
    store = InstanceStore(engine, bus)
    first, second = await pending_instance(engine, 0), await pending_instance(engine, 1)
    async with listening(bus) as received:
        await step(store, first, InstanceStatus.PROVISIONING)
        before_gap = await next_event(received)

        async with engine.connect() as admin:
            killed = (
                await admin.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :name AND datname = current_database()"
                    ),
                    {"name": APPLICATION_NAME},
                )
            ).scalars()
            assert list(killed) == [True]
        for _ in range(500):
            if not bus.connected:
                break
            await asyncio.sleep(0.01)
        assert not bus.connected

        # Committed while nobody listens: their NOTIFYs reach no one.
        await step(store, first, InstanceStatus.CONFIGURING)
        await step(store, second, InstanceStatus.PROVISIONING)
        await step(store, second, InstanceStatus.CONFIGURING)
        assert not bus.connected, "the listener came back before the gap's changes were committed"

        await asyncio.wait_for(bus.wait_listening(), timeout=10)
        assert bus.reconnects == 1
        # A change after the gap is the marker: everything before it has been delivered by then.
        await step(store, first, InstanceStatus.ACTIVE)
        after: list[StatusChanged] = []
        while not after or after[-1].to_status is not InstanceStatus.ACTIVE:
            after.append(await next_event(received))

    ids = [before_gap.event_id, *(event.event_id for event in after)]
    assert len(ids) == len(set(ids)), f"an event was delivered twice: {ids}"
    changes = [(event.instance_id, event.to_status) for event in after]
    assert sorted(changes[:-1]) == sorted(
        [
            (first, InstanceStatus.CONFIGURING),
            (second, InstanceStatus.PROVISIONING),
            (second, InstanceStatus.CONFIGURING),
        ]
    )
    assert changes[-1] == (first, InstanceStatus.ACTIVE)


async def test_a_listener_that_falls_a_whole_queue_behind_is_told() -> None:
    bus = InProcessBus(queue_size=3)
    listener = bus.listen()
    first = asyncio.ensure_future(anext(listener))
    await asyncio.sleep(0)  # the listener's queue is in place; it does not read yet
    events = [_event(n) for n in range(5)]
    for event in events:
        bus.committed(event)  # never blocks, whatever the listener does
    # Five changes for a queue of three: what was queued is dropped, the loss is marked, the newer follow.
    assert [await first, await anext(listener), await anext(listener)] == [None, events[3], events[4]]
    await listener.aclose()


def _event(n: int) -> StatusChanged:
    return StatusChanged(
        instance_id=uuid.UUID(int=n),
        org_id="org-a",
        owner_sub="user-1",
        from_status=None,
        to_status=InstanceStatus.PENDING,
        reason=None,
        at=datetime.now(UTC),
        version=1,
        event_id=n,
    )


async def test_subscribers_learn_when_their_hub_lost_changes() -> None:
    bus = InProcessBus(queue_size=3)

    async def read(_: int, __: uuid.UUID) -> None:
        return None

    hub = Hub(bus, read)
    running = asyncio.create_task(hub.run())
    await asyncio.sleep(0)
    with hub.subscribe(Visibility.everything()) as mailbox:
        for n in range(5):
            bus.committed(_event(n))
        with pytest.raises(
            SubscriptionClosed, match="the gateway fell behind on status changes; subscribe again"
        ):
            async for _ in mailbox:
                pass
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running


# Who receives a change: decided from the re-read record, never from what the bus carried.


def _record(instance_id: uuid.UUID, org: str, owner: str, status: InstanceStatus) -> InstanceRecord:
    now = datetime.now(UTC)
    return InstanceRecord(
        id=instance_id, name=f"vm-{org}", description="", org_id=org, owner_sub=owner, owner_name=owner,
        flavor="small", image="debian-12", cpu=1, memory_mib=1024, disk_gib=10, ssh_public_key=None,
        status=status, status_reason=None, status_message=None, ip_address=None, hostname=None, node=None,
        terraform_name=None, terraform_namespace=None, semaphore_task_id=None, created_at=now,
        updated_at=now, active_at=None, deleted_at=None, version=2,
    )  # fmt: skip


async def _next(mailbox: Mailbox) -> StatusUpdate:
    return await asyncio.wait_for(anext(aiter(mailbox)), timeout=5)


async def test_recipients_come_from_the_re_read_record_not_the_event() -> None:
    org_a_vm, org_b_vm, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    stored = {
        (1, org_a_vm): _record(org_a_vm, "org-a", "alice", InstanceStatus.PROVISIONING),
        (2, org_b_vm): _record(org_b_vm, "org-b", "bob", InstanceStatus.PENDING),
    }
    reads: list[tuple[int, uuid.UUID]] = []

    async def read(event_id: int, instance_id: uuid.UUID) -> tuple[InstanceRecord, StatusChanged] | None:
        reads.append((event_id, instance_id))
        record = stored.get((event_id, instance_id))
        if record is None:
            return None
        change = StatusChanged(
            instance_id=instance_id, org_id=record.org_id, owner_sub=record.owner_sub,
            from_status=InstanceStatus.PENDING, to_status=record.status, reason="stored",
            at=record.updated_at, version=record.version, event_id=event_id,
        )  # fmt: skip
        return record, change

    def forged(event_id: int, instance_id: uuid.UUID) -> StatusChanged:
        """What a NOTIFY by anyone with a database login can say: org B's, DELETED, version 99."""
        return replace(
            _event(event_id),
            instance_id=instance_id,
            org_id="org-b",
            owner_sub="bob",
            to_status=InstanceStatus.DELETED,
            reason="forged",
            version=99,
        )

    hub = Hub(InProcessBus(), read)
    with (
        hub.subscribe(Visibility(org_ids=frozenset({"org-b"}))) as org_b,
        hub.subscribe(Visibility(owner_sub="bob", owner_org="org-b")) as bob,
        hub.subscribe(Visibility(org_ids=frozenset({"org-a"}))) as org_a,
        hub.subscribe(Visibility.everything(), instance_id=org_b_vm) as only_b_vm,
    ):
        await hub.dispatch(forged(1, org_a_vm))  # names org B, is an org-A instance's change
        await hub.dispatch(forged(7, unknown))  # names no recorded change at all
        await hub.dispatch(forged(2, org_b_vm))  # org B's own change: delivered as stored

        got_a = await _next(org_a)
        assert (got_a.instance.id, got_a.instance.org_id) == (org_a_vm, "org-a")
        # The record is the truth: the stored change, not the forged statuses, version or reason.
        assert (got_a.event.to_status, got_a.event.version, got_a.event.reason) == (
            InstanceStatus.PROVISIONING,
            2,
            "stored",
        )
        for mailbox in (org_b, bob, only_b_vm):
            # The first thing each org-B subscriber receives is org B's change: nothing came before it.
            first = await _next(mailbox)
            assert first.instance.id == org_b_vm
            assert first.event.to_status is InstanceStatus.PENDING
    assert reads == [(1, org_a_vm), (7, unknown), (2, org_b_vm)]
    assert hub.delivered == 4


async def test_a_change_nobody_could_want_is_not_even_read() -> None:
    async def read(_: int, __: uuid.UUID) -> None:
        raise AssertionError("read although every subscriber filters on another instance")

    hub = Hub(InProcessBus(), read)
    with hub.subscribe(Visibility.everything(), instance_id=uuid.uuid4()):
        await hub.dispatch(_event(1))
    assert hub.delivered == 0
