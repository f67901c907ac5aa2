"""deleteInstance: DELETING while tofu-controller destroys, DELETED when the object is gone; rows stay."""

from __future__ import annotations

from tests.lifecycle.conftest import NAMESPACE, Gateway, Peers, eventually
from tests.peers.kube_api import SECRETS


async def test_an_active_instance_is_deleted_once_its_finalizer_is_released(
    gateway: Gateway, peers: Peers
) -> None:
    behaviour = peers.controller.behave("doomed", finalizer=True, release=False)
    created = await gateway.create_ok("doomed")
    await gateway.wait_for_status(created["id"], "ACTIVE")

    payload = await gateway.delete(created["id"])

    assert payload["userErrors"] == []
    assert payload["instance"]["status"] == "DELETING"
    obj = peers.terraform(created["id"])
    assert obj is not None
    assert obj["metadata"]["deletionTimestamp"]
    deleting = await gateway.instance(created["id"])
    assert deleting is not None
    assert deleting["status"] == "DELETING"  # the VM is still being destroyed

    behaviour.release = True

    deleted = await gateway.wait_for_status(created["id"], "DELETED")
    assert peers.terraform(created["id"]) is None
    assert peers.kube.object(SECRETS, NAMESPACE, peers.secret_name(created["id"])) is None  # with its owner
    assert deleted["deletedAt"] is not None
    assert deleted["ipAddress"] == peers.controller.outputs_for("doomed")["ip_address"]  # the row stays
    assert [e["toStatus"] for e in deleted["events"]] == [
        "PENDING",
        "PROVISIONING",
        "CONFIGURING",
        "ACTIVE",
        "DELETING",
        "DELETED",
    ]
    assert deleted["events"][-1]["reason"] == "TerraformDestroyed"
    listed = await gateway.gql("{ instances(filter: {status: [DELETED]}) { nodes { id } } }", role="admin")
    assert listed["instances"]["nodes"] == [{"id": created["id"]}]


async def test_pending_and_failed_instances_can_be_deleted(gateway: Gateway, peers: Peers) -> None:
    peers.controller.behave("waiting", stop_before=0)
    peers.controller.behave("broken", outcome="fail")
    waiting = await gateway.create_ok("waiting")
    broken = await gateway.create_ok("broken")
    await gateway.wait_for_status(broken["id"], "FAILED")

    for instance in (waiting, broken):
        payload = await gateway.delete(instance["id"])
        assert payload["userErrors"] == []
        deleted = await gateway.wait_for_status(instance["id"], "DELETED")
        assert [e["toStatus"] for e in deleted["events"]][-2:] == ["DELETING", "DELETED"]
        assert peers.terraform(instance["id"]) is None


async def test_deleting_twice_is_harmless(gateway: Gateway, peers: Peers) -> None:
    behaviour = peers.controller.behave("twice", finalizer=True, release=False)
    created = await gateway.create_ok("twice")
    await gateway.wait_for_status(created["id"], "ACTIVE")

    first = await gateway.delete(created["id"])
    second = await gateway.delete(created["id"])  # while DELETING

    assert first["userErrors"] == second["userErrors"] == []
    assert second["instance"]["status"] == "DELETING"
    behaviour.release = True
    deleted = await gateway.wait_for_status(created["id"], "DELETED")

    third = await gateway.delete(created["id"])

    assert [e["code"] for e in third["userErrors"]] == ["ALREADY_DELETED"]
    assert third["instance"]["status"] == "DELETED"
    after = await gateway.instance(created["id"])
    assert after == deleted
    assert [e["toStatus"] for e in deleted["events"]].count("DELETING") == 1


async def test_a_user_cannot_delete_what_is_not_theirs(gateway: Gateway, peers: Peers) -> None:
    created = await gateway.create_ok("mine")
    response = await gateway.gql(
        "mutation($id: ID!) { deleteInstance(id: $id) { instance { id } userErrors { code } } }",
        {"id": created["id"]},
        sub="user-2",
    )

    assert response["deleteInstance"] == {"instance": None, "userErrors": [{"code": "NOT_FOUND"}]}
    await eventually(lambda: peers.terraform(created["id"]) is not None)
    instance = await gateway.instance(created["id"])
    assert instance is not None
    assert instance["status"] not in ("DELETING", "DELETED")
