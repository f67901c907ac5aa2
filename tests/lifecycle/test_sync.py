"""syncInstances (admin): the cluster compared with the database; drift reported and settled."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from services.instances.states import InstanceStatus
from services.kubernetes.terraform_object import TerraformSpec, build_terraform_object
from tests.lifecycle.conftest import NAMESPACE, USER, GatewayFactory, Peers
from tests.peers.kube_api import TERRAFORMS
from tests.support.factories import insert_instances, instance_row

SYNC = "mutation { syncInstances { objectsWithoutRows rowsWithoutObjects transitions } }"


def orphan_object(instance_id: uuid.UUID) -> dict[str, object]:
    spec = TerraformSpec(
        instance_id=instance_id,
        vm_name="stray",
        namespace=NAMESPACE,
        module_path="./deploy/modules/proxmox-vm",
        template="debian-12-cloudinit",
        cpu=1,
        memory_mib=2048,
        disk_gib=20,
        source_name="opencsp-modules",
        source_namespace="flux-system",
        vars_from_secret="proxmox-credentials",
    )
    return build_terraform_object(spec)


async def test_sync_reports_orphans_and_fails_rows_whose_object_vanished(
    start_gateway: GatewayFactory, peers: Peers, engine: AsyncEngine
) -> None:
    # No watch: otherwise it notices the vanished object first and the sync has nothing left to report.
    gateway = await start_gateway(background=False)
    peers.controller.default.stop_before = 0
    stray = peers.kube.create(TERRAFORMS, NAMESPACE, orphan_object(uuid.uuid4()))
    lost = uuid.uuid4()
    row = instance_row(
        0,
        id=lost,
        name="lost",
        owner_sub=USER,
        status=InstanceStatus.ACTIVE,
        terraform_name=f"inst-{lost.hex}",
        terraform_namespace=NAMESPACE,
    )
    await insert_instances(engine, [row])
    kept = await gateway.create_ok("kept")

    report = (await gateway.gql(SYNC, role="admin"))["syncInstances"]

    assert report["objectsWithoutRows"] == [f"{NAMESPACE}/{stray['metadata']['name']}"]
    assert report["rowsWithoutObjects"] == [str(lost)]
    assert report["transitions"] >= 1
    failed = await gateway.instance(str(lost))
    assert failed is not None
    assert (failed["status"], failed["statusReason"]) == ("FAILED", "TerraformObjectDeleted")
    untouched = await gateway.instance(kept["id"])
    assert untouched is not None
    assert untouched["status"] in ("PENDING", "PROVISIONING")
    again = (await gateway.gql(SYNC, role="admin"))["syncInstances"]
    assert again["objectsWithoutRows"] == report["objectsWithoutRows"]  # reported, never deleted
    assert again["rowsWithoutObjects"] == []  # FAILED now: nothing left to settle
    assert peers.kube.object(TERRAFORMS, NAMESPACE, stray["metadata"]["name"]) is not None


async def test_the_watch_fails_an_instance_whose_object_is_deleted_behind_its_back(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway()
    created = await gateway.create_ok("yanked")
    await gateway.wait_for_status(created["id"], "ACTIVE")
    obj = peers.terraform(created["id"])
    assert obj is not None

    peers.kube.delete(TERRAFORMS, NAMESPACE, obj["metadata"]["name"])

    failed = await gateway.wait_for_status(created["id"], "FAILED")
    assert failed["statusReason"] == "TerraformObjectDeleted"
