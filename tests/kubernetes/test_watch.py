"""The list-then-watch loop against the emulated API: events, bookmarks, 410 Gone, cuts, 500s."""

from __future__ import annotations

import random
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.errors import ClusterGone
from services.kubernetes.terraform_object import MANAGED_BY_LABEL, build_terraform_object
from services.kubernetes.watch import Backoff
from tests.kubernetes.support import NAMESPACE, Recorder, eventually, make_spec, running_watch, versions_in
from tests.peers.kube_api import TERRAFORMS, KubeApiEmulator


def create(api: KubeApiEmulator, *, managed: bool = True) -> str:
    obj = build_terraform_object(make_spec())
    if not managed:
        obj["metadata"]["labels"][MANAGED_BY_LABEL] = "someone-else"
    return str(api.create(TERRAFORMS, NAMESPACE, obj)["metadata"]["name"])


def in_sync(api: KubeApiEmulator) -> Callable[[Recorder], bool]:
    return lambda recorder: recorder.versions() == versions_in(api)


async def test_sync_then_added_modified_deleted(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    existing = create(kube_api)
    create(kube_api, managed=False)
    listed_at = str(kube_api.resource_version)
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        assert recorder.events == [("SYNC", existing)]
        assert health.connected
        name = (await cluster.create(build_terraform_object(make_spec())))["metadata"]["name"]
        kube_api.set_ready(NAMESPACE, name, "Unknown", "Progressing")
        await cluster.delete(NAMESPACE, name)
        create(kube_api, managed=False)  # outside the selector: never delivered
        await recorder.wait_until(lambda r: len(r.events) == 4)
        assert recorder.events[1:] == [("ADDED", name), ("MODIFIED", name), ("DELETED", name)]
        assert health.relists == 1
        assert health.reconnects == 0
    query = next(parse_qs(urlsplit(p).query) for _, p in kube_api.requests if "watch=" in p)
    assert query["watch"] == ["True"]
    assert query["allowWatchBookmarks"] == ["True"]
    assert query["labelSelector"] == ["app.kubernetes.io/managed-by=opencsp-gateway"]
    assert query["resourceVersion"] == [listed_at]  # the watch continues from the list's resourceVersion


async def test_bookmarks_advance_the_resource_version(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        for _ in range(3):
            create(kube_api, managed=False)  # moves the resourceVersion, invisible to this watch
        kube_api.emit_bookmark()
        await eventually(lambda: health.resource_version == str(kube_api.resource_version))
        # Thanks to the bookmark, a reconnect after compaction continues instead of hitting 410.
        kube_api.compact()
        kube_api.drop_watches()
        await eventually(lambda: health.reconnects == 1 and kube_api.open_watches == 1)
        name = create(kube_api)
        await recorder.wait_until(lambda r: name in r.state)
        assert health.relists == 1
        assert recorder.events == [("SYNC", ""), ("ADDED", name)]


@pytest.mark.parametrize("gone_as_http", [False, True], ids=["error-event", "http-410"])
async def test_too_old_resource_version_relists_and_loses_nothing(
    kube_api: KubeApiEmulator, cluster: TerraformCluster, gone_as_http: bool
) -> None:
    kube_api.gone_as_http = gone_as_http
    keep, gone = create(kube_api), create(kube_api)
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        kube_api.drop_watches()
        # While the watch is away: changes, then compaction, so its resourceVersion is too old.
        added = create(kube_api)
        kube_api.set_ready(NAMESPACE, keep, "True", "TerraformOutputsWritten", "Outputs written")
        kube_api.delete(TERRAFORMS, NAMESPACE, gone)
        kube_api.compact()
        await recorder.wait_until(in_sync(kube_api))
        assert sorted(recorder.state) == sorted([keep, added])
        assert health.relists == 2
        assert recorder.events[-1] == ("SYNC", ",".join(sorted([keep, added])))


async def test_expired_watch_relists(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        first = create(kube_api)
        await recorder.wait_until(lambda r: first in r.state)
        kube_api.expire_watches()  # ERROR 410 inside the open stream
        await eventually(lambda: health.relists == 2 and kube_api.open_watches == 1)
        second = create(kube_api)
        await recorder.wait_until(in_sync(kube_api))
        assert recorder.events == [("SYNC", ""), ("ADDED", first), ("SYNC", first), ("ADDED", second)]
        assert health.reconnects == 0


async def test_cut_stream_resumes_from_last_version(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    existing = create(kube_api)
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        kube_api.drop_watches()
        added = create(kube_api)
        kube_api.set_ready(NAMESPACE, existing, "False", "TFExecApplyFailed", "boom")
        kube_api.delete(TERRAFORMS, NAMESPACE, added)
        await recorder.wait_until(in_sync(kube_api))
        # The resumed watch replays exactly what was missed; no second list was needed.
        assert recorder.events[1:] == [("ADDED", added), ("MODIFIED", existing), ("DELETED", added)]
        assert health.relists == 1
        assert health.reconnects == 1
        assert health.connected


async def test_clean_end_of_stream_watches_again(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        kube_api.end_watches()  # what the server-side timeoutSeconds does
        name = create(kube_api)
        await recorder.wait_until(lambda r: name in r.state)
        assert health.relists == 1
        assert health.reconnects == 0
    assert sum("watch=True" in path for _, path in kube_api.requests) == 2


async def test_500s_on_list_back_off_then_recover(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    kube_api.fail_next(3, path=kube_api.collection_path(TERRAFORMS, NAMESPACE), method="GET")
    name = create(kube_api)
    recorder, backoff = Recorder(), Backoff(base=0.01, cap=0.05)
    async with running_watch(cluster, recorder, backoff) as health:
        await recorder.wait_until(lambda r: name in r.state)
        assert health.reconnects == 3
        assert health.last_error is not None
        assert "500" in health.last_error
        assert backoff.attempt == 0  # reset by the successful list
        assert health.connected
        assert recorder.events == [("SYNC", name)]


async def test_500s_on_watch_resume_without_relisting(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    recorder = Recorder()
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        kube_api.fail_next(2, path=kube_api.collection_path(TERRAFORMS, NAMESPACE), method="GET")
        kube_api.drop_watches()
        name = create(kube_api)
        await recorder.wait_until(lambda r: name in r.state)
        assert health.reconnects == 3  # the cut, then two failed watch requests
        assert health.relists == 1


async def test_consumer_failure_relists(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    recorder = Recorder(fail_first=1)
    async with running_watch(cluster, recorder) as health:
        await eventually(lambda: kube_api.open_watches == 1)
        name = create(kube_api)  # the consumer fails on this ADDED ...
        await recorder.wait_until(lambda r: name in r.state)  # ... and gets it again from the list
        assert recorder.events == [("SYNC", ""), ("SYNC", name)]
        assert health.relists == 2


async def test_cancelling_closes_the_stream(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    async with running_watch(cluster, Recorder()):
        await eventually(lambda: kube_api.open_watches == 1)
    await eventually(lambda: kube_api.open_watches == 0)  # the server saw the connection go


async def test_raw_watch_semantics(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    name = create(kube_api)
    _, since = await cluster.list(namespace=NAMESPACE)

    def set_manager(value: str) -> None:
        kube_api.modify(
            TERRAFORMS, NAMESPACE, name, lambda o: o["metadata"]["labels"].update({MANAGED_BY_LABEL: value})
        )

    set_manager("someone-else")  # leaves the selection: DELETED for this watch
    set_manager("opencsp-gateway")  # comes back: ADDED
    seen: list[str] = []
    async with aclosing(cluster.watch(resource_version=since, namespace=NAMESPACE)) as stream:
        async for event in stream:
            seen.append(event["type"])
            if len(seen) == 2:
                kube_api.emit_bookmark()
            if event["type"] == "BOOKMARK":
                assert event["object"]["metadata"]["resourceVersion"] == str(kube_api.resource_version)
                kube_api.end_watches()
    assert seen == ["DELETED", "ADDED", "BOOKMARK"]
    kube_api.compact()
    with pytest.raises(ClusterGone) as caught:
        await drain(cluster.watch(resource_version=since, namespace=NAMESPACE))
    assert caught.value.status == 410


async def drain(stream: AsyncGenerator[dict[str, Any], None]) -> None:
    async with aclosing(stream):
        async for _ in stream:
            pass


def test_backoff_is_jittered_exponential_and_bounded() -> None:
    backoff = Backoff(base=1.0, cap=8.0, rng=random.Random(7))
    for attempt in range(8):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= backoff.next_delay() <= ceiling
    backoff.reset()
    assert 0.5 <= backoff.next_delay() <= 1.0
    many = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(5)}
    assert len(many) == 5  # jittered: replicas do not reconnect in lockstep
