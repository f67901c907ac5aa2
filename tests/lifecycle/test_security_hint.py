"""The hint's security summary over HTTP: stored only for the instance's current task, shown as
`Instance.security` to whoever may read the instance, refused whole when any part is malformed."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from services.db.models import InstanceSecurityRow
from services.semaphore.webhook import signed_headers
from tests.lifecycle.conftest import WEBHOOK_SECRET, Gateway, GraphQLFailed, Peers, eventually
from tests.lifecycle.test_webhook import configuring

SECURITY = "security { hardeningIndex warnings scannedAt }"


def summary(**changes: Any) -> dict[str, Any]:
    return {"hardening_index": 67, "warnings": 3, "scanned_at": int(time.time()) - 60, **changes}


async def post(gateway: Gateway, payload: Any) -> httpx.Response:
    body = json.dumps(payload).encode()
    return await gateway.http.post(
        "/webhooks/semaphore",
        content=body,
        headers={"Content-Type": "application/json", **signed_headers(WEBHOOK_SECRET, body)},
    )


async def stored(gateway: Gateway) -> int:
    async with gateway.runtime.engine.connect() as connection:
        count = await connection.execute(select(func.count()).select_from(InstanceSecurityRow))
        return int(count.scalar_one())


async def read(gateway: Gateway, instance_id: str, fields: str = SECURITY, **caller: str) -> Any:
    data = await gateway.gql(
        f"query($id: ID!) {{ instance(id: $id) {{ {fields} }} }}", {"id": instance_id}, **caller
    )
    return data["instance"]


async def test_the_current_tasks_summary_is_shown_to_the_owner_and_org_readers(
    gateway: Gateway, peers: Peers
) -> None:
    instance_id, task_id = await configuring(gateway, peers, "audited")
    assert await read(gateway, instance_id) == {"security": None}
    scanned = int(time.time()) - 120

    response = await post(gateway, {"task_id": task_id, "security": summary(scanned_at=scanned)})

    assert response.status_code == 202
    expected = {
        "hardeningIndex": 67,
        "warnings": 3,
        "scannedAt": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(scanned)),
    }
    assert await read(gateway, instance_id) == {"security": expected}  # the owner (role user)
    assert await read(gateway, instance_id, role="viewer", sub="someone-else") == {"security": expected}
    operator = await read(gateway, instance_id, "security { taskId }", role="operator", sub="op")
    assert operator == {"security": {"taskId": task_id}}
    # Another user of the org (no instance:read:org) and another org's viewer do not see the instance.
    assert await read(gateway, instance_id, role="user", sub="user-2") is None
    assert await read(gateway, instance_id, role="viewer", sub="v", org="other-org") is None
    # The task id is internals: a viewer asking for it is refused that field.
    with pytest.raises(GraphQLFailed, match="instance:read:internals"):
        await read(gateway, instance_id, "security { taskId }", role="viewer", sub="v2")
    # A replayed older scan does not replace the newer one.
    older = await post(gateway, {"task_id": task_id, "security": summary(warnings=9, scanned_at=scanned - 1)})
    assert older.status_code == 202
    assert (await read(gateway, instance_id))["security"] == expected


MALFORMED: list[Any] = [
    None,
    [],
    {},
    summary(hardening_index=101),
    summary(hardening_index="67"),
    summary(warnings=-1),
    summary(scanned_at=int(time.time()) + 3600),  # in the future beyond the leeway
    summary(scanned_at=int(time.time()) - 30 * 86_400),  # far older than any run
    {**summary(), "report": "raw"},  # unknown field
]


async def test_a_malformed_summary_refuses_the_whole_hint(gateway: Gateway, peers: Peers) -> None:
    instance_id, task_id = await configuring(gateway, peers, "malformed")

    responses = [await post(gateway, {"task_id": task_id, "security": bad}) for bad in MALFORMED]

    assert [r.status_code for r in responses] == [400] * len(MALFORMED)
    assert all("security" in r.json()["error"] for r in responses)
    assert await stored(gateway) == 0
    assert await read(gateway, instance_id) == {"security": None}


async def test_a_hint_of_a_task_that_is_not_the_current_one_stores_nothing(
    gateway: Gateway, peers: Peers
) -> None:
    peers.semaphore.auto(("running", "error"))
    created = await gateway.create_ok("replaced")
    await gateway.wait_for_status(created["id"], "FAILED")
    [old] = peers.semaphore.starts(instance_id=created["id"])
    peers.semaphore.auto(("starting", "running"))
    assert (await gateway.retry(created["id"]))["userErrors"] == []
    await eventually(lambda: len(peers.semaphore.starts(instance_id=created["id"])) == 2)
    new = peers.semaphore.starts(instance_id=created["id"])[1]
    await gateway.wait_for(
        created["id"], "semaphoreTask { id }", lambda i: i["semaphoreTask"] == {"id": new.id}
    )

    replaced = await post(gateway, {"task_id": old.id, "security": summary()})
    unknown = await post(gateway, {"task_id": new.id + 1000, "security": summary()})

    assert (replaced.status_code, unknown.status_code) == (202, 202)  # the same answer as any hint
    assert await stored(gateway) == 0
    assert await read(gateway, created["id"]) == {"security": None}
    current = await post(gateway, {"task_id": new.id, "security": summary(warnings=0)})
    assert current.status_code == 202
    assert (await read(gateway, created["id"]))["security"]["warnings"] == 0
