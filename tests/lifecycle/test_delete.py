"""deleteInstance: DELETING while tofu-controller destroys, DELETED when the object is gone; rows stay.

Which statuses a delete starts from, and who may delete what, are unit-tested in tests/unit (test_lifecycle,
test_access); the wire-level refusal of someone else's instance is in tests/test_rbac.py."""

from __future__ import annotations

from tests.lifecycle.conftest import NAMESPACE, Gateway, Peers
from tests.peers.kube_api import SECRETS


async def test_an_active_instance_is_deleted_once_its_finalizer_is_released(
    gateway: Gateway, peers: Peers
) -> None:
    behaviour = peers.controller.behave("doomed", finalizer=True, release=False)
    created = await gateway.create_ok("doomed")
    await gateway.wait_for_status(created["id"], "ACTIVE")

    payload = await gateway.delete(created["id"])
    again = await gateway.delete(created["id"])  # while DELETING: harmless

    assert payload["userErrors"] == again["userErrors"] == []
    assert payload["instance"]["status"] == again["instance"]["status"] == "DELETING"
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
    third = await gateway.delete(created["id"])
    assert [e["code"] for e in third["userErrors"]] == ["ALREADY_DELETED"]
    assert await gateway.instance(created["id"]) == deleted
