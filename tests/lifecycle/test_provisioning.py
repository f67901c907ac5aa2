"""Phase 1 through the cluster: failures, retry by reconcile annotation, and watch faults."""

from __future__ import annotations

from services.kubernetes.terraform_object import RECONCILE_ANNOTATION
from tests.lifecycle.conftest import Gateway, GatewayFactory, Peers, eventually


async def test_a_failed_apply_fails_the_instance_and_retry_reconciles_the_object(
    gateway: Gateway, peers: Peers
) -> None:
    behaviour = peers.controller.behave("flaky", outcome="fail", message="proxmox: no space left on storage")
    created = await gateway.create_ok("flaky")

    failed = await gateway.wait_for_status(created["id"], "FAILED")

    assert failed["statusReason"] == "TFExecApplyFailed"
    assert failed["statusMessage"] == "Provisioning the virtual machine failed."
    assert failed["statusDetail"] == "proxmox: no space left on storage"
    assert peers.semaphore.starts(instance_id=created["id"]) == []
    obj = peers.terraform(created["id"])
    assert obj is not None
    assert RECONCILE_ANNOTATION not in (obj["metadata"].get("annotations") or {})

    behaviour.outcome = "ready"
    retried = await gateway.retry(created["id"])

    assert retried["userErrors"] == []
    retry_event = retried["instance"]["events"][3]
    assert (retry_event["fromStatus"], retry_event["toStatus"]) == ("FAILED", "PENDING")
    assert (retry_event["reason"], retry_event["actor"]) == ("RetryRequested", "user-1")
    obj = peers.terraform(created["id"])
    assert obj is not None
    assert obj["metadata"]["annotations"][RECONCILE_ANNOTATION]
    active = await gateway.wait_for_status(created["id"], "ACTIVE")
    statuses = [e["toStatus"] for e in active["events"]]
    assert statuses[:4] == ["PENDING", "PROVISIONING", "FAILED", "PENDING"]
    # The retried apply reaches PROVISIONING unless the gateway first sees the object already Ready (a
    # busy machine lets the test controller finish before the watch delivers): then it skips straight on.
    assert statuses[4:] in (["PROVISIONING", "CONFIGURING", "ACTIVE"], ["CONFIGURING", "ACTIVE"])
    assert len(peers.semaphore.starts(instance_id=created["id"])) == 1
    # Only a FAILED instance can be retried (the rule's cases: tests/unit/test_lifecycle.py).
    again = await gateway.retry(created["id"])
    assert [e["code"] for e in again["userErrors"]] == ["NOT_FAILED"]
    assert again["instance"]["status"] == "ACTIVE"


async def test_a_watch_cut_mid_provisioning_loses_nothing(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway(reconcile_interval_seconds=600)  # only the watch can bring the news
    behaviour = peers.controller.behave("cut", stop_before=1)
    created = await gateway.create_ok("cut")
    await gateway.wait_for_status(created["id"], "PROVISIONING")
    reconnects = gateway.runtime.watch_health.reconnects

    peers.kube.drop_watches()
    behaviour.stop_before = None  # outputs and Ready True are written while no watch is open

    await gateway.wait_for_status(created["id"], "ACTIVE")
    assert gateway.runtime.watch_health.reconnects > reconnects
    assert len(peers.semaphore.starts(instance_id=created["id"])) == 1


async def test_410_gone_relists_and_loses_no_event(start_gateway: GatewayFactory, peers: Peers) -> None:
    gateway = await start_gateway(reconcile_interval_seconds=600)
    behaviour = peers.controller.behave("gone", stop_before=1)
    created = await gateway.create_ok("gone")
    await gateway.wait_for_status(created["id"], "PROVISIONING")
    relists = gateway.runtime.watch_health.relists

    peers.kube.compact()
    behaviour.stop_before = None
    await eventually(
        lambda: peers.controller.outputs_for("gone") is not None and _ready(peers, created["id"])
    )
    peers.kube.compact()  # the Ready event is older than anything a watch may resume from now
    peers.kube.expire_watches()

    await gateway.wait_for_status(created["id"], "ACTIVE")
    assert gateway.runtime.watch_health.relists > relists
    assert len(peers.semaphore.starts(instance_id=created["id"])) == 1


def _ready(peers: Peers, instance_id: str) -> bool:
    obj = peers.terraform(instance_id) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
