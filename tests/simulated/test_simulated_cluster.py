"""SimulatedCluster driven as the lifecycle drives the real cluster: create, watch, read, retry, delete."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import pytest

from services.instances.ports import Cluster
from services.kubernetes.conditions import TerraformPhase, signal_of
from services.kubernetes.errors import (
    ClusterError,
    ClusterGone,
    ClusterInvalid,
    ClusterNotFound,
    TerraformConflict,
)
from services.kubernetes.outputs import instance_outputs
from services.kubernetes.terraform_object import (
    FINALIZER,
    INSTANCE_ID_LABEL,
    MANAGED_SELECTOR,
    RECONCILE_ANNOTATION,
)
from services.simulated import SimulatedCluster
from tests.simulated.support import NAMESPACE, STEP, Recorder, running_watch, terraform

PROVISIONED = [
    ("Unknown", "Progressing"),
    ("Unknown", "TerraformPlannedWithChanges"),
    ("Unknown", "TerraformAppliedSucceed"),
    ("True", "TerraformOutputsWritten"),
]
FAILED = [
    ("Unknown", "Progressing"),
    ("Unknown", "TerraformPlannedWithChanges"),
    ("False", "TFExecApplyFailed"),
]


@pytest.fixture
async def cluster() -> AsyncIterator[SimulatedCluster]:
    async with SimulatedCluster(step_delay=STEP) as simulated:
        yield simulated


def name_of(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def secret_of(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["writeOutputsToSecret"]["name"])


def ends_with(recorder: Recorder, name: str, status: str) -> bool:
    return any(s.ready is not None and s.ready[0] == status for s in recorder.of(name))


async def test_watch_sees_the_provisioning_sequence_and_the_outputs(cluster: SimulatedCluster) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder):
        await recorder.wait_until(lambda r: len(r.syncs) == 1)
        obj = terraform("web-1")
        created = await cluster.create(obj)
        name = name_of(obj)
        await recorder.wait_until(lambda r: ends_with(r, name, "True"))

    events = recorder.of(name)
    assert events[0].kind == "ADDED"
    assert {s.kind for s in events[1:]} == {"MODIFIED"}
    assert recorder.reasons(name) == PROVISIONED
    assert signal_of(events[0].obj).phase is TerraformPhase.PROVISIONING
    final = events[-1].obj
    assert signal_of(final).phase is TerraformPhase.READY
    assert final["status"]["observedGeneration"] == final["metadata"]["generation"] == 1
    assert final["metadata"]["finalizers"] == [FINALIZER]
    assert final["metadata"]["uid"] == created["metadata"]["uid"]
    versions = [int(s.obj["metadata"]["resourceVersion"]) for s in events]
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)

    outputs = await cluster.read_outputs(NAMESPACE, secret_of(obj))
    assert outputs is not None
    facts = instance_outputs(outputs)
    assert facts is not None
    assert facts.hostname == "web-1.opencsp.internal"
    assert facts.ip_address.startswith("10.42.")
    secret = cluster.secret(NAMESPACE, secret_of(obj))
    assert secret is not None
    assert base64.b64decode(secret["data"]["hostname"]) == b"web-1.opencsp.internal"  # raw string, no JSON
    assert "hostname__type" not in secret["data"]
    assert secret["metadata"]["labels"][INSTANCE_ID_LABEL] == obj["metadata"]["labels"][INSTANCE_ID_LABEL]
    assert secret["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]


async def test_the_address_is_deterministic_per_instance() -> None:
    instance_id = uuid.uuid4()
    addresses = []
    for _ in range(2):
        async with SimulatedCluster(step_delay=0) as cluster:
            obj = terraform("db", instance_id)
            await cluster.create(obj)
            async with asyncio.timeout(5):
                while (outputs := await cluster.read_outputs(NAMESPACE, secret_of(obj))) is None:
                    await asyncio.sleep(0.005)
            addresses.append(outputs["ip_address"])
    assert addresses[0] == addresses[1]


async def test_fail_prefix_fails_the_first_attempt_and_a_retry_succeeds(cluster: SimulatedCluster) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder):
        await recorder.wait_until(lambda r: len(r.syncs) == 1)
        obj = terraform("fail-prov-db")
        await cluster.create(obj)
        name = name_of(obj)
        await recorder.wait_until(lambda r: ends_with(r, name, "False"))
        failed = recorder.of(name)[-1].obj
        signal = signal_of(failed)
        assert signal.phase is TerraformPhase.FAILED
        assert signal.reason == "TFExecApplyFailed"
        assert signal.message is not None
        assert "error running Apply" in signal.message
        assert failed["status"]["reconciliationFailures"] == 1
        assert await cluster.read_outputs(NAMESPACE, secret_of(obj)) is None

        await cluster.request_reconcile(NAMESPACE, name)
        await recorder.wait_until(lambda r: ends_with(r, name, "True"))

    assert recorder.reasons(name) == FAILED + PROVISIONED
    final = recorder.of(name)[-1].obj
    requested = final["metadata"]["annotations"][RECONCILE_ANNOTATION]
    assert final["status"]["lastHandledReconcileAt"] == requested
    assert final["metadata"]["generation"] == 1  # an annotation is not a spec change
    assert await cluster.read_outputs(NAMESPACE, secret_of(obj)) is not None


async def test_without_a_limit_retries_fail_until_healed() -> None:
    async with SimulatedCluster(step_delay=STEP, fail_attempts=None) as cluster:
        recorder = Recorder()
        async with running_watch(cluster, recorder):
            await recorder.wait_until(lambda r: len(r.syncs) == 1)
            obj = terraform("fail-prov-db")
            name = name_of(obj)
            await cluster.create(obj)
            await recorder.wait_until(lambda r: r.reasons(name).count(("False", "TFExecApplyFailed")) == 1)
            await cluster.request_reconcile(NAMESPACE, name)
            await recorder.wait_until(lambda r: r.reasons(name).count(("False", "TFExecApplyFailed")) == 2)
            cluster.heal("fail-prov-db")
            await cluster.request_reconcile(NAMESPACE, name)
            await recorder.wait_until(lambda r: ends_with(r, name, "True"))
    assert recorder.reasons(name) == FAILED + FAILED + PROVISIONED


async def test_delete_goes_through_the_finalizer(cluster: SimulatedCluster) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder):
        await recorder.wait_until(lambda r: len(r.syncs) == 1)
        obj = terraform("web-2")
        name = name_of(obj)
        await cluster.create(obj)
        await recorder.wait_until(lambda r: ends_with(r, name, "True"))
        before = len(recorder.of(name))

        await cluster.delete(NAMESPACE, name)
        await cluster.delete(NAMESPACE, name)  # asking twice changes nothing
        await recorder.wait_until(lambda r: r.of(name)[-1].kind == "DELETED")

    after = recorder.of(name)[before:]
    assert after[0].kind == "MODIFIED"
    assert after[0].deleting
    assert after[0].obj["metadata"]["finalizers"] == [FINALIZER]
    assert signal_of(after[0].obj).deleting
    assert [s.ready for s in after[1:]] == [("Unknown", "Progressing"), ("Unknown", "Progressing")]
    assert after[1].obj["status"]["conditions"][-1]["message"] == "Destroying"
    assert after[-1].kind == "DELETED"
    assert not after[-1].obj["metadata"].get("finalizers")
    assert await cluster.get(NAMESPACE, name) is None
    assert await cluster.read_outputs(NAMESPACE, secret_of(obj)) is None
    assert await cluster.list(namespace=NAMESPACE) == ([], cluster.resource_version)
    await cluster.delete(NAMESPACE, name)  # already gone is fine


async def test_delete_before_the_controller_ran_is_immediate(cluster: SimulatedCluster) -> None:
    obj = terraform("quick")
    await cluster.create(obj)  # the controller adds its finalizer only once it runs
    await cluster.delete(NAMESPACE, name_of(obj))
    assert await cluster.get(NAMESPACE, name_of(obj)) is None
    await asyncio.sleep(STEP * 5)
    assert await cluster.get(NAMESPACE, name_of(obj)) is None


async def test_create_is_idempotent_per_instance_and_conflicts_across(cluster: SimulatedCluster) -> None:
    obj = terraform("web-3")
    first = await cluster.create(obj)
    again = await cluster.create(obj)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    other = terraform("web-3")
    other["metadata"]["name"] = obj["metadata"]["name"]
    with pytest.raises(TerraformConflict) as conflict:
        await cluster.create(other)
    assert conflict.value.status == 409
    assert isinstance(conflict.value, ClusterError)
    assert first["metadata"]["generation"] == 1
    assert first["status"] == {"observedGeneration": -1}


async def test_invalid_objects_are_refused(cluster: SimulatedCluster) -> None:
    bad_name = terraform()
    bad_name["metadata"]["name"] = "Not_A_Name"
    with pytest.raises(ClusterInvalid) as invalid:
        await cluster.create(bad_name)
    assert invalid.value.status == 422
    for name in ("", "inst-1\n", "x" * 254):
        bad_name["metadata"]["name"] = name
        with pytest.raises(ClusterInvalid) as invalid:
            await cluster.create(bad_name)
        assert invalid.value.status == 422, name
    for labels in ({"bad key": "x"}, {"team": "-infra"}, {"team": "x" * 64}, {"/team": "x"}):
        bad_labels = terraform()
        bad_labels["metadata"]["labels"] |= labels
        with pytest.raises(ClusterInvalid) as invalid:
            await cluster.create(bad_labels)
        assert invalid.value.status == 422, labels
        assert "metadata.labels" in str(invalid.value)
    assert (await cluster.list(""))[0] == []
    wrong_kind = terraform() | {"kind": "Kustomization"}
    with pytest.raises(ClusterInvalid) as bad:
        await cluster.create(wrong_kind)
    assert bad.value.status == 400


async def test_list_honours_selectors_and_namespaces(cluster: SimulatedCluster) -> None:
    managed = terraform("a")
    foreign = terraform("b")
    foreign["metadata"]["labels"] = {"team": "infra"}
    elsewhere = terraform("c")
    elsewhere["metadata"]["namespace"] = "other"
    for obj in (managed, foreign, elsewhere):
        await cluster.create(obj)

    items, version = await cluster.list(namespace=NAMESPACE)
    assert [name_of(o) for o in items] == [name_of(managed)]
    assert version == cluster.resource_version
    everywhere, _ = await cluster.list()
    assert {name_of(o) for o in everywhere} == {name_of(managed), name_of(elsewhere)}
    assert [name_of(o) for o in (await cluster.list("team==infra"))[0]] == [name_of(foreign)]
    assert [name_of(o) for o in (await cluster.list("team!=infra", namespace=NAMESPACE))[0]] == [
        name_of(managed)
    ]
    assert [name_of(o) for o in (await cluster.list("!team", namespace=NAMESPACE))[0]] == [name_of(managed)]
    assert len((await cluster.list(""))[0]) == 3
    assert [name_of(o) for o in (await cluster.list("team in (infra, ops)"))[0]] == [name_of(foreign)]
    notin = (await cluster.list("team notin (infra)", namespace=NAMESPACE))[0]
    assert [name_of(o) for o in notin] == [name_of(managed)]
    for malformed in ("team in infra", "team=infra,", "team=in fra", "-team"):
        with pytest.raises(ClusterInvalid) as bad:
            await cluster.list(malformed)
        assert bad.value.status == 400, malformed
    stream = cluster.watch(resource_version="0", label_selector="team in (a b)")
    with pytest.raises(ClusterInvalid) as bad:
        await anext(stream)
    assert bad.value.status == 400


async def test_watch_resumes_after_a_resource_version_and_sends_bookmarks(cluster: SimulatedCluster) -> None:
    first = terraform("one")
    await cluster.create(first)
    _, version = await cluster.list()
    second = terraform("two")
    await cluster.create(second)

    stream = cluster.watch(resource_version=version, timeout_seconds=5)
    async with aclosing(stream):
        event = await anext(stream)
        assert (event["type"], name_of(event["object"])) == ("ADDED", name_of(second))
        bookmarked = cluster.resource_version
        cluster.emit_bookmark()
        while (event := await anext(stream))["type"] != "BOOKMARK":
            assert event["type"] == "MODIFIED"
        assert event["object"]["metadata"]["resourceVersion"] == bookmarked


async def test_watch_of_a_compacted_resource_version_is_410(cluster: SimulatedCluster) -> None:
    await cluster.create(terraform("old"))
    _, version = await cluster.list()
    await cluster.create(terraform("new"))
    cluster.compact()
    stream = cluster.watch(resource_version=version)
    with pytest.raises(ClusterGone) as gone:
        async with aclosing(stream):
            await anext(stream)
    assert gone.value.status == 410
    assert cluster.open_watches == 0


async def test_a_410_mid_stream_makes_watch_terraforms_list_again(cluster: SimulatedCluster) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await recorder.wait_until(lambda r: len(r.syncs) == 1)
        obj = terraform("relisted")
        await cluster.create(obj)
        await recorder.wait_until(lambda r: ends_with(r, name_of(obj), "True"))
        cluster.expire_watches()
        await recorder.wait_until(lambda r: len(r.syncs) == 2)
        assert recorder.syncs[1] == [name_of(obj)]
        assert health.relists == 2


async def test_watch_ends_after_its_timeout(cluster: SimulatedCluster) -> None:
    stream = cluster.watch(resource_version=cluster.resource_version, timeout_seconds=1)
    async with asyncio.timeout(5), aclosing(stream):
        assert [event async for event in stream] == []
    assert cluster.open_watches == 0


async def test_request_reconcile_of_a_missing_object_is_404(cluster: SimulatedCluster) -> None:
    with pytest.raises(ClusterNotFound) as missing:
        await cluster.request_reconcile(NAMESPACE, "inst-missing")
    assert missing.value.status == 404


async def test_patch_labels_merges_removes_and_refuses_as_the_api_server(cluster: SimulatedCluster) -> None:
    obj = terraform("labelled")
    name = obj["metadata"]["name"]
    obj["metadata"]["labels"]["label.opencsp.io/old"] = "x"
    await cluster.create(obj)

    patch: dict[str, str | None] = {"label.opencsp.io/old": None, "label.opencsp.io/env": "prod"}
    await cluster.patch_labels(NAMESPACE, name, patch)

    stored = await cluster.get(NAMESPACE, name)
    assert stored is not None
    labels = stored["metadata"]["labels"]
    assert labels["label.opencsp.io/env"] == "prod"
    assert "label.opencsp.io/old" not in labels
    assert labels[INSTANCE_ID_LABEL] == obj["metadata"]["labels"][INSTANCE_ID_LABEL]  # untouched
    with pytest.raises(ClusterInvalid):
        await cluster.patch_labels(NAMESPACE, name, {"label.opencsp.io/env": "not valid"})
    with pytest.raises(ClusterNotFound):
        await cluster.patch_labels(NAMESPACE, "inst-missing", {"a": "b"})


async def test_close_cancels_every_controller_and_ends_watches() -> None:
    before = len(asyncio.all_tasks())
    cluster = SimulatedCluster(step_delay=10.0)  # so every controller is mid-run when closed
    for index in range(5):
        await cluster.create(terraform(f"vm-{index}"))
    stream = cluster.watch(resource_version=cluster.resource_version, label_selector=MANAGED_SELECTOR)

    async def drain() -> list[str]:
        async with aclosing(stream):
            return [event["type"] async for event in stream]

    consumer = asyncio.create_task(drain())
    await asyncio.sleep(0)
    assert cluster.running_controllers == 5
    assert len(asyncio.all_tasks()) == before + 6

    await cluster.close()
    async with asyncio.timeout(5):
        assert set(await consumer) == {"MODIFIED"}  # the stream ended
    assert cluster.running_controllers == 0
    assert len(asyncio.all_tasks()) == before
    with pytest.raises(ClusterError):
        await cluster.get(NAMESPACE, "anything")


def test_it_is_a_cluster() -> None:
    cluster: Cluster = SimulatedCluster()
    assert isinstance(cluster, SimulatedCluster)


async def test_a_vars_change_is_a_new_generation_planned_and_applied_and_fail_act_fails_once(
    cluster: SimulatedCluster,
) -> None:
    """Dev mode's day-2 path: `set_vars` (start, stop, resize) → generation+1 → plan → apply → Ready for it;
    a `fail-act…` VM's first change ends Ready=False for that generation, its next one succeeds."""
    for vm, first in (("web-2", "True"), ("fail-act-1", "False")):
        obj = await cluster.create(terraform(vm))
        name = name_of(obj)
        while signal_of(await cluster.get(NAMESPACE, name) or {}).phase is not TerraformPhase.READY:
            await asyncio.sleep(STEP)
        current = await cluster.get(NAMESPACE, name)
        assert current is not None
        with pytest.raises(ClusterError):  # a stale resourceVersion is a 409, never a lost write
            await cluster.set_vars(NAMESPACE, name, [], resource_version="1")
        for outcome in (first, "True"):
            current = await cluster.get(NAMESPACE, name)
            assert current is not None
            generation = current["metadata"]["generation"]
            started = not {v["name"]: v["value"] for v in current["spec"]["vars"]}["started"]
            variables = [
                v if v["name"] != "started" else {"name": "started", "value": started}
                for v in current["spec"]["vars"]
            ]
            patched = await cluster.set_vars(
                NAMESPACE, name, variables, resource_version=current["metadata"]["resourceVersion"]
            )
            assert patched["metadata"]["generation"] == generation + 1

            def settled(o: dict[str, Any] | None, wanted: int = generation + 1) -> bool:
                status = (o or {}).get("status") or {}
                return status.get("observedGeneration") == wanted and signal_of(o or {}).phase in (
                    TerraformPhase.READY,
                    TerraformPhase.FAILED,
                )

            while not settled(found := await cluster.get(NAMESPACE, name)):
                await asyncio.sleep(STEP)
            assert found is not None
            assert [c["status"] for c in found["status"]["conditions"] if c["type"] == "Ready"] == [outcome]
