"""createInstance to ACTIVE over GraphQL, through the real cluster and Semaphore clients."""

from __future__ import annotations

import jsonschema
import pytest

from services.semaphore.model import START_KEY_VAR
from tests.lifecycle.conftest import TEMPLATE_ID, Gateway, Peers
from tests.peers.kube_api import load_terraform_schema


async def test_create_reaches_active_through_every_phase(gateway: Gateway, peers: Peers) -> None:
    created = await gateway.create_ok("web-1")
    assert created["status"] == "PENDING"
    assert [(e["fromStatus"], e["toStatus"]) for e in created["events"]] == [(None, "PENDING")]
    instance_id = created["id"]

    active = await gateway.wait_for_status(instance_id, "ACTIVE")

    address = peers.controller.outputs_for("web-1")
    assert (active["ipAddress"], active["hostname"]) == (address["ip_address"], address["hostname"])
    assert active["activeAt"] is not None
    history = [(e["fromStatus"], e["toStatus"], e["reason"]) for e in active["events"]]
    assert history == [
        (None, "PENDING", None),
        ("PENDING", "PROVISIONING", "Progressing"),
        ("PROVISIONING", "CONFIGURING", "TerraformOutputsWritten"),
        ("CONFIGURING", "ACTIVE", "ConfigurationSucceeded"),
    ]
    assert active["events"][0]["actor"] == "user-1"
    [task] = peers.semaphore.starts(instance_id=instance_id)
    assert (task.template_id, task.status) == (TEMPLATE_ID, "success")
    env = task.environment_vars()
    assert env["ip_address"] == address["ip_address"]
    assert env["hostname"] == address["hostname"]
    assert env["name"] == "web-1"
    assert env[START_KEY_VAR].startswith(instance_id)
    internals = await gateway.gql(
        "query($id: ID!) { instance(id: $id) { semaphoreTask { id } } }", {"id": instance_id}, role="operator"
    )
    assert internals["instance"]["semaphoreTask"]["id"] == task.id


async def test_json_typed_string_outputs_are_decoded(gateway: Gateway, peers: Peers) -> None:
    """A Secret whose outputs carry `<name>__type` keys holds JSON values; strings decode to strings."""
    peers.controller.behave("typed", json_strings=True)

    created = await gateway.create_ok("typed")
    active = await gateway.wait_for_status(created["id"], "ACTIVE")

    address = peers.controller.outputs_for("typed")
    assert (active["ipAddress"], active["hostname"]) == (address["ip_address"], address["hostname"])
    [task] = peers.semaphore.starts(instance_id=created["id"])
    assert task.environment_vars()["ip_address"] == address["ip_address"]


async def test_outputs_of_the_wrong_type_fail_the_instance(gateway: Gateway, peers: Peers) -> None:
    peers.controller.behave("listy", outputs={"ip_address": ["10.0.0.9"], "hostname": "listy.lab"})

    created = await gateway.create_ok("listy")
    failed = await gateway.wait_for_status(created["id"], "FAILED")

    assert failed["statusReason"] == "TerraformOutputsInvalid"
    assert failed["ipAddress"] is None
    assert peers.semaphore.starts(instance_id=created["id"]) == []


@pytest.mark.parametrize("with_key", [False, True])
async def test_the_terraform_object_follows_the_crd_and_names_its_instance(
    gateway: Gateway, peers: Peers, with_key: bool, ssh_key: str
) -> None:
    peers.controller.behave("shaped", stop_before=0)
    fields = {"sshPublicKey": ssh_key} if with_key else {}

    created = await gateway.create_ok("shaped", flavor="medium", image="rocky-9", **fields)

    obj = peers.terraform(created["id"])
    assert obj is not None
    schema = load_terraform_schema()
    jsonschema.Draft7Validator(schema).validate(obj)  # the emulator checked it on create, too
    assert obj["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "opencsp-gateway",
        "opencsp.io/instance-id": created["id"],
    }
    spec = obj["spec"]
    assert spec["approvePlan"] == "auto"
    assert spec["destroyResourcesOnDeletion"] is True
    assert spec["writeOutputsToSecret"]["name"] == peers.secret_name(created["id"])
    variables = {v["name"]: v["value"] for v in spec["vars"]}
    assert variables["name"] == "shaped"
    assert (variables["cores"], variables["memory"], variables["template"]) == (2, 4096, "rocky-9-cloudinit")
    assert ("ssh_public_key" in variables) is with_key
    instance = await gateway.instance(created["id"])
    # An object without a Ready condition yet counts as provisioning.
    assert instance is not None
    assert instance["status"] in ("PENDING", "PROVISIONING")
