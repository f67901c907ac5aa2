"""Every configuration ends: Semaphore that never answers, and a task that never ends, time out."""

from __future__ import annotations

from tests.lifecycle.conftest import GatewayFactory, Peers


async def test_semaphore_never_answering_times_out(start_gateway: GatewayFactory, peers: Peers) -> None:
    gateway = await start_gateway(configuration_timeout_seconds=1.5, semaphore_timeout=0.2)
    peers.semaphore.hang_next(10_000)
    created = await gateway.create_ok("silent")

    failed = await gateway.wait_for_status(created["id"], "FAILED")

    assert failed["statusReason"] == "ConfigurationTimeout"
    assert [e["toStatus"] for e in failed["events"]][-2:] == ["CONFIGURING", "FAILED"]


async def test_a_task_that_never_ends_times_out(start_gateway: GatewayFactory, peers: Peers) -> None:
    gateway = await start_gateway(configuration_timeout_seconds=1.5)
    peers.semaphore.auto(("starting", "running"))
    created = await gateway.create_ok("endless")

    failed = await gateway.wait_for_status(created["id"], "FAILED")

    assert failed["statusReason"] == "ConfigurationTimeout"
    [task] = peers.semaphore.starts(instance_id=created["id"])
    assert str(task.id) in failed["statusDetail"]
