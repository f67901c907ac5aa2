"""What the outputs Secret says is checked before Semaphore is given it as the SSH target."""

from __future__ import annotations

import uuid

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.db.models import InstanceRow
from tests.lifecycle.conftest import Gateway, GatewayFactory, Peers, eventually

NETWORKS = "10.20.0.0/16, fd00:20::/64"

HOSTILE = {
    "proxy-command": {
        "ip_address": "10.20.0.9 -o ProxyCommand=id {{ lookup('pipe', 'id') }}",
        "hostname": "proxy-command.lab.internal",
    },
    "outside": {"ip_address": "192.168.1.5", "hostname": "outside.lab.internal"},
    "outside-v6": {"ip_address": "fd00:99::5", "hostname": "outside-v6.lab.internal"},
    "zoned": {"ip_address": "fd00:20::5%eth0 -o ProxyCommand=id", "hostname": "zoned.lab.internal"},
    "loopback": {"ip_address": "127.0.0.1", "hostname": "loopback.lab.internal"},
    "spaces": {"ip_address": "10.20.0.10", "hostname": "web 1.lab.internal"},
    "newline": {"ip_address": "10.20.0.11", "hostname": "newline.lab.internal\nmalicious: true"},
    "shell": {"ip_address": "10.20.0.12", "hostname": "shell$(id);reboot"},
    "jinja": {"ip_address": "10.20.0.13", "hostname": "{{ lookup('pipe', 'id') }}"},
}


async def test_hostile_outputs_fail_the_instance_and_start_no_task(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway(instance_networks=NETWORKS)
    for name, outputs in HOSTILE.items():
        peers.controller.behave(name, outputs=outputs)
    created = {name: (await gateway.create_ok(name))["id"] for name in HOSTILE}

    for name, instance_id in created.items():
        failed = await gateway.wait_for_status(instance_id, "FAILED")

        assert failed["statusReason"] == "InvalidOutputs", name
        assert (failed["ipAddress"], failed["hostname"]) == (None, None), name
        assert "\n" not in failed["statusMessage"], name
        assert peers.semaphore.starts(instance_id=instance_id) == [], name
    assert peers.semaphore.requests_to("start") == []


async def test_valid_outputs_reach_semaphore_in_their_canonical_form(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway(instance_networks=NETWORKS)
    peers.controller.behave("four", outputs={"ip_address": "10.20.3.4", "hostname": "four.lab.internal"})
    peers.controller.behave("six", outputs={"ip_address": "FD00:20::0006", "hostname": "Six.Lab.Internal."})

    four = (await gateway.create_ok("four"))["id"]
    six = (await gateway.create_ok("six"))["id"]

    for instance_id, address, hostname in (
        (four, "10.20.3.4", "four.lab.internal"),
        (six, "fd00:20::6", "Six.Lab.Internal"),
    ):
        active = await gateway.wait_for_status(instance_id, "ACTIVE")
        assert (active["ipAddress"], active["hostname"]) == (address, hostname)
        [task] = peers.semaphore.starts(instance_id=instance_id)
        env = task.environment_vars()
        assert (env["ip_address"], env["hostname"]) == (address, hostname)


async def test_a_stored_address_is_checked_again_before_the_task_starts(
    start_gateway: GatewayFactory, peers: Peers, engine: AsyncEngine
) -> None:
    """A row that reached CONFIGURING before outputs were checked (an upgrade) starts no task with them."""
    first = await start_gateway(semaphore_timeout=30)
    peers.semaphore.hang_next(1, route="start")  # the start never arrives: no task exists
    instance_id = (await first.create_ok("upgraded"))["id"]
    await eventually(lambda: len(peers.semaphore.requests_to("start")) == 1)
    await first.stop()
    async with engine.begin() as connection:
        await connection.execute(
            update(InstanceRow)
            .where(InstanceRow.id == uuid.UUID(instance_id))
            .values(ip_address="10.20.0.9 -o ProxyCommand=id")
        )

    second: Gateway = await start_gateway()

    failed = await second.wait_for_status(instance_id, "FAILED")
    assert failed["statusReason"] == "InvalidOutputs"
    assert [e["toStatus"] for e in failed["events"]][-2:] == ["CONFIGURING", "FAILED"]
    assert peers.semaphore.starts(instance_id=instance_id) == []
    assert len(peers.semaphore.requests_to("start")) == 1  # only the first gateway's, which never arrived
