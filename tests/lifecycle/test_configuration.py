"""Phase 2 through Semaphore: failures, an outage, a hang, and retry of the configuration alone."""

from __future__ import annotations

import pytest

from services.semaphore.model import START_KEY_VAR
from tests.lifecycle.conftest import Gateway, Peers, eventually


async def test_a_task_that_does_not_succeed_fails_the_instance(gateway: Gateway, peers: Peers) -> None:
    peers.semaphore.auto(("starting", "running"))
    ends = {"error": await gateway.create_ok("conf-error"), "stopped": await gateway.create_ok("conf-stop")}

    for end, instance in ends.items():
        instance_id = instance["id"]
        await eventually(lambda: _status(peers, instance_id) == "running")  # noqa: B023 (awaited here)
        [task] = peers.semaphore.starts(instance_id=instance["id"])
        peers.semaphore.advance(task.id, end)

    for end, instance in ends.items():
        failed = await gateway.wait_for_status(instance["id"], "FAILED")
        assert failed["statusReason"] == "ConfigurationFailed"
        assert end in failed["statusDetail"]
        assert failed["ipAddress"] == peers.controller.outputs_for(instance["name"])["ip_address"]
        assert len(peers.semaphore.starts(instance_id=instance["id"])) == 1


@pytest.mark.parametrize("after_work", [False, True], ids=["before-queueing", "after-queueing"])
async def test_semaphore_answering_500_then_recovering_starts_one_task(
    gateway: Gateway, peers: Peers, after_work: bool
) -> None:
    peers.semaphore.fail_next(2, status=500, route="start", after_work=after_work)
    peers.semaphore.fail_next(2, status=502, route="get")
    created = await gateway.create_ok("outage")

    await gateway.wait_for_status(created["id"], "ACTIVE")

    assert len(peers.semaphore.starts(instance_id=created["id"])) == 1
    assert [r.status for r in peers.semaphore.requests_to("start")][:1] == [500]


async def test_retry_after_a_configuration_failure_runs_a_new_task(gateway: Gateway, peers: Peers) -> None:
    peers.semaphore.auto(("running", "error"))
    created = await gateway.create_ok("again")
    await gateway.wait_for_status(created["id"], "FAILED")
    peers.semaphore.auto(("running", "success"))

    retried = await gateway.retry(created["id"])

    assert retried["userErrors"] == []
    assert retried["instance"]["status"] == "CONFIGURING"
    active = await gateway.wait_for_status(created["id"], "ACTIVE")
    assert [e["toStatus"] for e in active["events"]] == [
        "PENDING",
        "PROVISIONING",
        "CONFIGURING",
        "FAILED",
        "CONFIGURING",
        "ACTIVE",
    ]
    first, second = peers.semaphore.starts(instance_id=created["id"])
    assert (first.status, second.status) == ("error", "success")
    assert first.environment_vars()[START_KEY_VAR] != second.environment_vars()[START_KEY_VAR]
    assert second.environment_vars()["ip_address"] == active["ipAddress"]


def _status(peers: Peers, instance_id: str) -> str | None:
    tasks = peers.semaphore.starts(instance_id=instance_id)
    return tasks[0].status if tasks else None
