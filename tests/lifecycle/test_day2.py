"""Day-2 actions end to end: start, stop, reboot and resize over GraphQL, through the real cluster client to
the Kubernetes API stand-in (which bumps `metadata.generation` on spec changes) and the real Semaphore
client to its spec-validated stand-in (a second template: actions.yml)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from tests.lifecycle.conftest import ACTIONS_TEMPLATE_ID, Gateway, GatewayFactory, Peers, eventually

CHANGES = """subscription($id: ID!) {
  instanceStatusChanged(id: $id) { from to reason powerState task instance { powerState task } }
}"""


def variables_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    assert obj is not None
    return {v["name"]: v["value"] for v in obj["spec"]["vars"]}


async def active(gateway: Gateway, name: str, **fields: Any) -> str:
    created = await gateway.create_ok(name, **fields)
    await gateway.wait_for_status(created["id"], "ACTIVE")
    return str(created["id"])


async def act(gateway: Gateway, mutation: str, instance_id: str, **arguments: Any) -> dict[str, Any]:
    extra = "".join(f", {name}: ${name}" for name in arguments)
    declared = "".join(f", ${name}: String!" for name in arguments)
    data = await gateway.gql(
        f"""mutation($id: ID!{declared}) {{
              {mutation}(id: $id{extra}) {{
                instance {{ id status powerState task flavor cpu memoryMib diskGib }}
                userErrors {{ field message code }}
              }}
            }}""",
        {"id": instance_id, **arguments},
    )
    payload: dict[str, Any] = data[mutation]
    return payload


async def idle(gateway: Gateway, instance_id: str) -> dict[str, Any]:
    return await gateway.wait_for(
        instance_id,
        "status powerState task statusReason flavor cpu memoryMib diskGib",
        lambda i: i["task"] is None,
    )


async def test_a_subscriber_sees_stop_then_start_in_order(gateway: Gateway, peers: Peers) -> None:
    instance_id = await active(gateway, "power-1")
    generation = peers.terraform(instance_id)["metadata"]["generation"]  # type: ignore[index]
    assert variables_of(peers.terraform(instance_id))["started"] is True
    socket = await websockets.connect(
        gateway.url.replace("http://", "ws://") + "/graphql",
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
    )
    try:
        token = gateway.headers()["Authorization"]
        await socket.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
        assert json.loads(await socket.recv())["type"] == "connection_ack"
        subscribe = {"query": CHANGES, "variables": {"id": instance_id}}
        await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        hub = gateway.runtime.services.hub
        await eventually(lambda: hub.subscribers >= 1, what="the subscription is registered")

        stopping = await act(gateway, "stopInstance", instance_id)
        assert stopping["userErrors"] == []
        # The controller may finish within the mutation (the gateway reads the object once more after
        # recording the generation), so the payload's task is STOPPING or already over; the order is
        # what the subscriber sees below.
        assert stopping["instance"]["status"] == "ACTIVE"
        await idle(gateway, instance_id)
        assert variables_of(peers.terraform(instance_id))["started"] is False
        starting = await act(gateway, "startInstance", instance_id)
        assert starting["userErrors"] == []

        seen: list[tuple[str, str | None]] = []
        while len(seen) < 4:
            message = json.loads(await asyncio.wait_for(socket.recv(), 10))
            if message["type"] != "next":
                continue
            change = message["payload"]["data"]["instanceStatusChanged"]
            assert (change["from"], change["to"]) == ("ACTIVE", "ACTIVE")
            seen.append((change["powerState"], change["task"]))
    finally:
        await socket.close()
    assert seen == [("RUNNING", "STOPPING"), ("STOPPED", None), ("STOPPED", "STARTING"), ("RUNNING", None)]
    final = await idle(gateway, instance_id)
    assert (final["status"], final["powerState"]) == ("ACTIVE", "RUNNING")
    assert peers.terraform(instance_id)["metadata"]["generation"] == generation + 2  # type: ignore[index]
    events = (await gateway.instance(instance_id))["events"]  # type: ignore[index]
    assert [(e["reason"], e["actor"]) for e in events[-4:]] == [
        ("StopRequested", "user-1"),
        ("ActionSucceeded", "system:opencsp-gateway"),
        ("StartRequested", "user-1"),
        ("ActionSucceeded", "system:opencsp-gateway"),
    ]


async def test_reboot_runs_the_actions_template_and_a_failed_one_says_why(
    gateway: Gateway, peers: Peers
) -> None:
    instance_id = await active(gateway, "reboot-1")

    rebooting = await act(gateway, "rebootInstance", instance_id)

    assert rebooting["userErrors"] == []
    assert rebooting["instance"]["task"] == "REBOOTING"
    done = await idle(gateway, instance_id)
    assert (done["status"], done["powerState"], done["statusReason"]) == (
        "ACTIVE",
        "RUNNING",
        "ActionSucceeded",
    )
    [task] = [
        t for t in peers.semaphore.starts(instance_id=instance_id) if t.template_id == ACTIONS_TEMPLATE_ID
    ]
    env = task.environment_vars()
    assert (env["action"], env["ip_address"]) == (
        "reboot",
        peers.controller.outputs_for("reboot-1")["ip_address"],
    )
    assert task.status == "success"

    peers.semaphore.auto(("starting", "running", "error"), delay=0.01)
    await act(gateway, "rebootInstance", instance_id)
    failed = await idle(gateway, instance_id)

    assert (failed["status"], failed["powerState"], failed["statusReason"]) == (
        "ACTIVE",
        "UNKNOWN",
        "ActionFailed",
    )
    admin = await gateway.instance(instance_id)
    assert admin is not None
    assert admin["events"][-1]["message"] == "The requested action failed; the instance stays active."
    assert "ended with status error" in admin["statusDetail"]


async def test_resize_bumps_the_generation_and_ends_when_ready_for_it(gateway: Gateway, peers: Peers) -> None:
    instance_id = await active(gateway, "grow-1")
    before = peers.terraform(instance_id)["metadata"]["generation"]  # type: ignore[index]
    behaviour = peers.controller.behave("grow-1", stop_before=1)  # plans, never applies: stays Progressing

    resizing = await act(gateway, "resizeInstance", instance_id, flavor="large")

    assert resizing["userErrors"] == []
    assert resizing["instance"]["task"] == "RESIZING"
    assert (resizing["instance"]["cpu"], resizing["instance"]["diskGib"]) == (4, 80)
    obj = peers.terraform(instance_id)
    assert obj is not None
    assert obj["metadata"]["generation"] == before + 1
    assert (variables_of(obj)["cores"], variables_of(obj)["memory"], variables_of(obj)["disk"]) == (
        4,
        8192,
        80,
    )
    await eventually(
        lambda: (
            (peers.terraform(instance_id) or {}).get("status", {}).get("observedGeneration") == before + 1
        ),
        what="the controller took up the new generation",
    )
    still = await gateway.instance(instance_id)
    assert still is not None
    assert still["task"] == "RESIZING"
    behaviour.stop_before = None
    done = await idle(gateway, instance_id)
    assert (done["flavor"], done["memoryMib"], done["statusReason"]) == ("large", 8192, "ActionSucceeded")

    # A failed apply of the next generation: the task clears, the status stays, the peer text is internal.
    behaviour.fail_generations = {before + 2}
    behaviour.message = "pve node7: out of memory"
    await act(gateway, "resizeInstance", instance_id, flavor="xlarge")
    failed = await idle(gateway, instance_id)

    assert (failed["status"], failed["statusReason"], failed["powerState"]) == (
        "ACTIVE",
        "ActionFailed",
        "RUNNING",
    )
    admin = await gateway.instance(instance_id)
    assert admin is not None
    assert "pve node7" in admin["statusDetail"]
    user_view = await gateway.gql(
        "query($id: ID!) { instance(id: $id) { statusReason statusMessage events(last: 2) { message } } }",
        {"id": instance_id},
    )
    assert "node7" not in json.dumps(user_view)


async def test_bad_inputs_are_user_errors_that_change_nothing(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway(quota_user_cpu=4)
    instance_id = await active(gateway, "bad-1", flavor="medium")
    generation = peers.terraform(instance_id)["metadata"]["generation"]  # type: ignore[index]

    cases = [
        ("resizeInstance", {"flavor": "huge"}, "UNKNOWN_FLAVOR"),
        ("resizeInstance", {"flavor": "small"}, "DISK_SHRINK"),
        ("resizeInstance", {"flavor": "xlarge"}, "QUOTA_EXCEEDED"),
        ("startInstance", {}, "INVALID_STATE"),  # already running
    ]
    for mutation, arguments, code in cases:
        payload = await act(gateway, mutation, instance_id, **arguments)
        assert [e["code"] for e in payload["userErrors"]] == [code], (mutation, payload)
    assert peers.terraform(instance_id)["metadata"]["generation"] == generation  # type: ignore[index]
    unchanged = await gateway.instance(instance_id)
    assert unchanged is not None
    assert (unchanged["flavor"], unchanged["task"]) == ("medium", None)

    peers.controller.behave("bad-2", outcome="fail")
    failed = await gateway.create_ok("bad-2", flavor="small")
    deleted = await gateway.create_ok("bad-3", flavor="small")
    await gateway.delete(deleted["id"])
    await gateway.wait_for_status(failed["id"], "FAILED")
    await gateway.wait_for_status(deleted["id"], "DELETED")
    for target, mutation in (
        (failed, "startInstance"),
        (failed, "rebootInstance"),
        (deleted, "stopInstance"),
    ):
        payload = await act(gateway, mutation, target["id"])
        assert [e["code"] for e in payload["userErrors"]] == ["INVALID_STATE"]


async def test_concurrent_actions_from_two_replicas_one_wins(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    first = await start_gateway()
    second = await start_gateway()
    instance_id = await active(first, "race-1")
    peers.controller.behave("race-1", stop_before=1)

    payloads = await asyncio.gather(
        act(first, "stopInstance", instance_id), act(second, "rebootInstance", instance_id)
    )

    codes = sorted(tuple(e["code"] for e in p["userErrors"]) for p in payloads)
    assert codes == [(), ("INSTANCE_BUSY",)]
    events = (await first.instance(instance_id))["events"]  # type: ignore[index]
    requested = [e for e in events if e["reason"] in ("StopRequested", "RebootRequested")]
    assert len(requested) == 1
    # Still busy for as long as the winner's task runs, whichever replica is asked.
    for gateway, mutation, arguments in (
        (first, "startInstance", {}),
        (second, "resizeInstance", {"flavor": "large"}),
    ):
        payload = await act(gateway, mutation, instance_id, **arguments)
        assert [e["code"] for e in payload["userErrors"]] == ["INSTANCE_BUSY"]
