"""Nothing is lost when a gateway stops mid-flight, and replicas never start a task twice."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db.models import InstanceRow
from services.instances.states import InstanceStatus
from tests.lifecycle.conftest import NAMESPACE, USER, GatewayFactory, Peers, eventually
from tests.support.factories import insert_instances, instance_row


async def _task_id_of(engine: AsyncEngine, instance_id: str) -> int | None:
    async with engine.connect() as connection:
        query = select(InstanceRow.semaphore_task_id).where(InstanceRow.id == uuid.UUID(instance_id))
        value: int | None = (await connection.execute(query)).scalar_one()
    return value


async def test_a_restarted_gateway_finds_the_task_by_its_start_key(
    start_gateway: GatewayFactory, peers: Peers, engine: AsyncEngine
) -> None:
    first = await start_gateway(semaphore_timeout=30)
    peers.semaphore.hang_next(1, route="start", after_work=True)  # queued, but the answer never comes
    instance_id = (await first.create_ok("phoenix"))["id"]
    await eventually(lambda: len(peers.semaphore.starts(instance_id=instance_id)) == 1)

    await first.stop()  # while it still waits for Semaphore's answer

    assert await _task_id_of(engine, instance_id) is None
    second = await start_gateway()
    active = await second.wait_for_status(instance_id, "ACTIVE")
    [task] = peers.semaphore.starts(instance_id=instance_id)
    assert await _task_id_of(engine, instance_id) == task.id
    assert [e["toStatus"] for e in active["events"]] == ["PENDING", "PROVISIONING", "CONFIGURING", "ACTIVE"]
    assert len(peers.semaphore.requests_to("start")) == 1


async def test_a_pending_instance_without_an_object_gets_one_at_start_up(
    start_gateway: GatewayFactory, peers: Peers, engine: AsyncEngine
) -> None:
    instance_id = uuid.uuid4()
    row = instance_row(
        0,
        id=instance_id,
        name="left-behind",
        owner_sub=USER,
        status=InstanceStatus.PENDING,
        ip_address=None,
        hostname=None,
        terraform_name=f"inst-{instance_id.hex}",
        terraform_namespace=NAMESPACE,
    )
    await insert_instances(engine, [row])

    gateway = await start_gateway()

    active = await gateway.wait_for_status(str(instance_id), "ACTIVE")
    obj = peers.terraform(str(instance_id))
    assert obj is not None
    assert obj["metadata"]["labels"]["opencsp.io/instance-id"] == str(instance_id)
    assert active["hostname"] == "left-behind.lab.internal"
    assert len(peers.semaphore.starts(instance_id=str(instance_id))) == 1


async def test_two_replicas_start_exactly_one_task_per_instance(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    replicas = [await start_gateway(reconcile_interval_seconds=0.05) for _ in range(2)]

    ids = [(await replicas[i % 2].create_ok(f"rep-{i}"))["id"] for i in range(6)]

    for instance_id in ids:
        await replicas[0].wait_for_status(instance_id, "ACTIVE")
    for instance_id in ids:
        assert len(peers.semaphore.starts(instance_id=instance_id)) == 1, instance_id
    assert len(peers.semaphore.requests_to("start")) == len(ids)
