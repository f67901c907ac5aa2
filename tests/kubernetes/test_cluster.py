"""TerraformCluster with the real kubernetes_asyncio client against the emulated API server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from services.kubernetes.cluster import TerraformCluster, connect
from services.kubernetes.errors import ClusterError, ClusterInvalid, ClusterUnavailable, TerraformConflict
from services.kubernetes.terraform_object import GROUP, PLURAL, VERSION, build_terraform_object
from tests.kubernetes.support import NAMESPACE, make_spec
from tests.peers.kube_api import TERRAFORMS, TF_FINALIZER, KubeApiEmulator

MERGE = "application/merge-patch+json"


@pytest.fixture
async def custom(kube_api: KubeApiEmulator) -> AsyncIterator[client.CustomObjectsApi]:
    """The raw client, for what the gateway does not do itself (patches, as tofu-controller would)."""
    async with client.ApiClient(client.Configuration(host=kube_api.url)) as api_client:
        yield client.CustomObjectsApi(api_client)


async def test_create_get_delete(cluster: TerraformCluster) -> None:
    obj = build_terraform_object(make_spec())
    name = obj["metadata"]["name"]
    created = await cluster.create(obj)
    meta = created["metadata"]
    assert meta["uid"]
    assert meta["creationTimestamp"]
    assert meta["generation"] == 1
    assert (await cluster.get(NAMESPACE, name)) == created
    await cluster.delete(NAMESPACE, name)
    assert await cluster.get(NAMESPACE, name) is None
    await cluster.delete(NAMESPACE, name)  # already gone is fine


async def test_create_is_idempotent(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    obj = build_terraform_object(make_spec())
    first = await cluster.create(obj)
    again = await cluster.create(obj)
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert ("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}") in kube_api.requests


async def test_create_refuses_an_object_of_another_instance(cluster: TerraformCluster) -> None:
    obj = build_terraform_object(make_spec())
    await cluster.create(obj)
    obj["metadata"]["labels"]["opencsp.io/instance-id"] = "someone-else"
    with pytest.raises(TerraformConflict):
        await cluster.create(obj)


async def test_already_exists_is_a_409_status(custom: client.CustomObjectsApi) -> None:
    obj = build_terraform_object(make_spec())
    await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, obj)
    with pytest.raises(ApiException) as caught:
        await custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, obj)
    assert caught.value.status == 409
    assert caught.value.body is not None
    status = json.loads(caught.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "AlreadyExists", 409)


async def test_finalizers_hold_deletion_until_removed(
    kube_api: KubeApiEmulator, cluster: TerraformCluster, custom: client.CustomObjectsApi
) -> None:
    obj = build_terraform_object(make_spec())
    name = obj["metadata"]["name"]
    await cluster.create(obj)
    kube_api.add_finalizer(NAMESPACE, name)  # tofu-controller's first reconcile does this
    await cluster.delete(NAMESPACE, name)
    pending = await cluster.get(NAMESPACE, name)
    assert pending is not None
    assert pending["metadata"]["deletionTimestamp"]
    assert pending["metadata"]["finalizers"] == [TF_FINALIZER]
    assert pending["metadata"]["generation"] == 2
    await cluster.delete(NAMESPACE, name)  # a second delete changes nothing
    assert (await cluster.get(NAMESPACE, name)) == pending
    with pytest.raises(ApiException) as caught:  # no new finalizers while deleting
        await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            name,
            {"metadata": {"finalizers": [TF_FINALIZER, "x.io/y"]}},
            _content_type=MERGE,
        )
    assert caught.value.status == 422
    await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"finalizers": None}}, _content_type=MERGE
    )
    assert await cluster.get(NAMESPACE, name) is None


async def test_dict_patch_needs_merge_content_type(
    cluster: TerraformCluster, custom: client.CustomObjectsApi
) -> None:
    """kubernetes_asyncio sends a dict patch as json-patch+json by default; the API refuses it."""
    obj = build_terraform_object(make_spec())
    name = obj["metadata"]["name"]
    await cluster.create(obj)
    with pytest.raises(ApiException) as caught:
        await custom.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, {"spec": {}})
    assert caught.value.status == 400
    patched = await custom.patch_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL, name, [{"op": "replace", "path": "/spec/interval", "value": "5m"}]
    )
    assert patched["spec"]["interval"] == "5m"
    assert patched["metadata"]["generation"] == 2


async def test_status_subresource_and_generation(
    kube_api: KubeApiEmulator, cluster: TerraformCluster, custom: client.CustomObjectsApi
) -> None:
    obj = build_terraform_object(make_spec())
    name = obj["metadata"]["name"]
    created = await cluster.create(obj)
    # The main resource ignores status; the status subresource ignores everything else.
    ignored = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"status": {"observedGeneration": 7}}, _content_type=MERGE
    )
    assert ignored["status"] == created["status"]
    assert ignored["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]  # a no-op
    status = await custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
        GROUP,
        VERSION,
        NAMESPACE,
        PLURAL,
        name,
        {"status": {"observedGeneration": 1}, "spec": {"interval": "1s"}},
        _content_type=MERGE,
    )
    assert status["status"]["observedGeneration"] == 1
    assert status["spec"]["interval"] == obj["spec"]["interval"]
    assert status["metadata"]["generation"] == 1  # status writes never bump generation
    assert int(status["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    labelled = await custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"metadata": {"labels": {"extra": "1"}}}, _content_type=MERGE
    )
    assert labelled["metadata"]["generation"] == 1  # metadata changes do not either
    kube_api.set_ready(NAMESPACE, name, "Unknown", "Progressing", "Reconciliation in progress")
    stored = await cluster.get(NAMESPACE, name)
    assert stored is not None
    assert stored["status"]["conditions"][0]["reason"] == "Progressing"


async def test_replace_with_stale_resource_version_conflicts(
    cluster: TerraformCluster, custom: client.CustomObjectsApi
) -> None:
    obj = build_terraform_object(make_spec())
    name = obj["metadata"]["name"]
    created = await cluster.create(obj)
    created["spec"]["interval"] = "1m"
    await custom.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, created)
    with pytest.raises(ApiException) as caught:
        await custom.replace_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name, created)
    assert caught.value.status == 409


async def test_list_with_label_selectors(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    ours = [build_terraform_object(make_spec()) for _ in range(2)]
    foreign = build_terraform_object(make_spec())
    foreign["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "someone", "tier": "db"}
    for obj in [*ours, foreign]:
        await cluster.create(obj)
    items, resource_version = await cluster.list(namespace=NAMESPACE)
    assert sorted(o["metadata"]["name"] for o in items) == sorted(o["metadata"]["name"] for o in ours)
    assert int(resource_version) == kube_api.resource_version
    first_id = ours[0]["metadata"]["labels"]["opencsp.io/instance-id"]
    cases = {
        f"app.kubernetes.io/managed-by=opencsp-gateway,opencsp.io/instance-id={first_id}": 1,
        "app.kubernetes.io/managed-by in (opencsp-gateway, someone)": 3,
        "app.kubernetes.io/managed-by notin (opencsp-gateway)": 1,
        "tier": 1,
        "!tier": 2,
        "tier!=db": 2,
    }
    for selector, count in cases.items():
        assert len((await cluster.list(selector, namespace=NAMESPACE))[0]) == count, selector
    assert len((await cluster.list())[0]) == 2  # cluster-wide
    with pytest.raises(ClusterInvalid) as caught:
        await cluster.list("a in b", namespace=NAMESPACE)
    assert caught.value.status == 400


async def test_resource_versions_only_grow(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    seen = []
    for _ in range(3):
        obj = build_terraform_object(make_spec())
        seen.append(int((await cluster.create(obj))["metadata"]["resourceVersion"]))
        kube_api.set_ready(NAMESPACE, obj["metadata"]["name"], "Unknown", "Progressing")
        seen.append(kube_api.resource_version)
    assert seen == sorted(set(seen))


async def test_errors_become_cluster_errors(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    path = kube_api.collection_path(TERRAFORMS, NAMESPACE)
    kube_api.fail_next(1, path=path, method="GET")
    with pytest.raises(ClusterUnavailable) as caught:
        await cluster.list(namespace=NAMESPACE)
    assert caught.value.status == 500
    assert (await cluster.list(namespace=NAMESPACE))[0] == []


async def test_connect_reads_a_kubeconfig(kube_api: KubeApiEmulator, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""
apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{kube_api.url}"}}}}]
users: [{{name: gw, user: {{token: test-token}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: gw, namespace: {NAMESPACE}}}}}]
current-context: emu
"""
    )
    async with await connect(kubeconfig) as terraform_cluster:
        assert await terraform_cluster.list(namespace=NAMESPACE) == ([], str(kube_api.resource_version))
    with pytest.raises(ClusterError, match="cannot load Kubernetes configuration"):
        await connect(tmp_path / "missing")
