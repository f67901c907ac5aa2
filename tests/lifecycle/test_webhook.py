"""POST /webhooks/semaphore: a signed hint makes the gateway read the task now; nothing else does a thing."""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from services.semaphore.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from tests.lifecycle.conftest import WEBHOOK_SECRET, Gateway, Peers, eventually


async def hint(gateway: Gateway, task_id: int, **headers: str) -> httpx.Response:
    body = json.dumps({"task_id": task_id}).encode()
    signed = signed_headers(WEBHOOK_SECRET, body) | headers
    return await gateway.http.post(
        "/webhooks/semaphore", content=body, headers={"Content-Type": "application/json", **signed}
    )


def task_reads(peers: Peers, task_id: int) -> int:
    return sum(1 for r in peers.semaphore.requests_to("get") if r.path.endswith(f"/tasks/{task_id}"))


async def configuring(gateway: Gateway, peers: Peers, name: str) -> tuple[str, int]:
    """An instance CONFIGURING whose task is running (and stays so until the test moves it)."""
    peers.semaphore.auto(("starting", "running"))
    instance_id = (await gateway.create_ok(name))["id"]
    await gateway.wait_for_status(instance_id, "CONFIGURING")
    await eventually(
        lambda: [t.status for t in peers.semaphore.starts(instance_id=instance_id)] == ["running"]
    )
    [task] = peers.semaphore.starts(instance_id=instance_id)
    await gateway.wait_for(instance_id, "semaphoreTask { id }", lambda i: i["semaphoreTask"] is not None)
    return instance_id, task.id


async def test_a_signed_hint_makes_the_gateway_read_the_task_at_once(gateway: Gateway, peers: Peers) -> None:
    instance_id, task_id = await configuring(gateway, peers, "hinted")
    # After four reads of an unchanged status the poller waits at least 6.4 s (8 s less its 20 % jitter)
    # before the next one, so ACTIVE within 5 s comes from the hint's read, even on a busy machine.
    await eventually(lambda: task_reads(peers, task_id) >= 4, timeout=20)
    peers.semaphore.advance(task_id, "success")

    response = await hint(gateway, task_id)

    assert response.status_code == 202
    await gateway.wait_for_status(instance_id, "ACTIVE", timeout=5.0)
    assert len(peers.semaphore.starts(instance_id=instance_id)) == 1


async def test_refused_and_unknown_hints_change_nothing(gateway: Gateway, peers: Peers) -> None:
    instance_id, task_id = await configuring(gateway, peers, "guarded")
    before = await gateway.instance(instance_id)
    body = json.dumps({"task_id": task_id}).encode()
    stale = signed_headers(WEBHOOK_SECRET, body, timestamp=int(time.time()) - 3600)

    forged = await hint(gateway, task_id, **{SIGNATURE_HEADER: "sha256=" + "0" * 64})
    wrong_secret = await hint(gateway, task_id, **signed_headers("not-the-secret", body))
    too_old = await hint(gateway, task_id, **stale)
    unsigned = await gateway.http.post("/webhooks/semaphore", content=body)
    unknown = await hint(gateway, task_id + 1000)

    assert [r.status_code for r in (forged, wrong_secret, too_old, unsigned)] == [401, 401, 401, 401]
    assert unknown.status_code == 202
    assert unknown.json() == {"accepted": True}
    assert TIMESTAMP_HEADER not in forged.headers
    assert await gateway.instance(instance_id) == before
    assert [t.status for t in peers.semaphore.tasks.values()] == ["running"]
    assert len(peers.semaphore.requests_to("start")) == 1


async def test_duplicate_hints_start_no_second_task(gateway: Gateway, peers: Peers) -> None:
    instance_id, task_id = await configuring(gateway, peers, "echoed")
    peers.semaphore.advance(task_id, "success")

    responses = await asyncio.gather(*(hint(gateway, task_id) for _ in range(8)))

    assert {r.status_code for r in responses} == {202}
    await gateway.wait_for_status(instance_id, "ACTIVE")
    late = await asyncio.gather(*(hint(gateway, task_id) for _ in range(3)))  # after the end, too
    assert {r.status_code for r in late} == {202}
    assert len(peers.semaphore.starts(instance_id=instance_id)) == 1
    assert len(peers.semaphore.requests_to("start")) == 1
    instance = await gateway.instance(instance_id)
    assert instance is not None
    assert [e["toStatus"] for e in instance["events"]].count("ACTIVE") == 1
