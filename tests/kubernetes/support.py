"""Helpers for the Kubernetes tests: a spec factory, a recording consumer, a running watch."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.terraform_object import MANAGED_SELECTOR, TerraformSpec
from services.kubernetes.watch import Backoff, WatchHealth, watch_terraforms
from tests.peers.kube_api import TERRAFORMS, KubeApiEmulator

NAMESPACE = "opencsp"


def make_spec(**overrides: Any) -> TerraformSpec:
    values: dict[str, Any] = {
        "instance_id": uuid.uuid4(),
        "vm_name": "web-1",
        "namespace": NAMESPACE,
        "module_path": "./deploy/modules/proxmox-vm",
        "template": "debian-12-cloudinit",
        "cpu": 2,
        "memory_mib": 4096,
        "disk_gib": 40,
        "source_name": "opencsp-modules",
        "source_namespace": "flux-system",
        "vars_from_secret": "proxmox-credentials",
    }
    return TerraformSpec(**(values | overrides))


class Recorder:
    """A consumer that keeps the state the watch implies: SYNC replaces it, events edit it."""

    def __init__(self, fail_first: int = 0) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self._fail_first = fail_first
        self._changed = asyncio.Condition()

    async def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        if kind != "SYNC" and self._fail_first > 0:
            self._fail_first -= 1
            raise RuntimeError("the consumer is down")
        if kind == "SYNC":
            self.state = {o["metadata"]["name"]: o for o in obj["items"]}
            self.events.append(("SYNC", ",".join(sorted(self.state))))
        else:
            name = obj["metadata"]["name"]
            if kind == "DELETED":
                self.state.pop(name, None)
            else:
                self.state[name] = obj
            self.events.append((kind, name))
        async with self._changed:
            self._changed.notify_all()

    def versions(self) -> dict[str, str]:
        return {name: o["metadata"]["resourceVersion"] for name, o in self.state.items()}

    async def wait_until(self, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))


def versions_in(api: KubeApiEmulator, selector: str = MANAGED_SELECTOR) -> dict[str, str]:
    return {
        o["metadata"]["name"]: o["metadata"]["resourceVersion"]
        for o in api.list(TERRAFORMS, NAMESPACE, selector)["items"]
    }


@contextlib.asynccontextmanager
async def running_watch(
    cluster: TerraformCluster, consumer: Recorder, backoff: Backoff | None = None, **kwargs: Any
) -> AsyncIterator[WatchHealth]:
    health = WatchHealth()
    task = asyncio.create_task(
        watch_terraforms(
            cluster,
            on_event=consumer,
            namespace=NAMESPACE,
            health=health,
            backoff=backoff or Backoff(base=0.01, cap=0.05),
            **kwargs,
        )
    )
    try:
        yield health
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `predicate()` holds; the timeout only guards against a hang."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
