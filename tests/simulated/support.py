"""Helpers for the simulation tests: a Terraform spec factory, a recording watch consumer, a running watch."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from services.kubernetes.conditions import ready_condition
from services.kubernetes.terraform_object import TerraformSpec, build_terraform_object
from services.kubernetes.watch import Backoff, WatchHealth, WatchSource, watch_terraforms

NAMESPACE = "opencsp"
STEP = 0.01  # seconds between the simulations' steps


def terraform(vm_name: str = "web-1", instance_id: uuid.UUID | None = None) -> dict[str, Any]:
    spec = TerraformSpec(
        instance_id=instance_id or uuid.uuid4(),
        vm_name=vm_name,
        namespace=NAMESPACE,
        module_path="./deploy/modules/proxmox-vm",
        template="debian-12-cloudinit",
        cpu=2,
        memory_mib=4096,
        disk_gib=40,
        source_name="opencsp-modules",
        source_namespace="flux-system",
        vars_from_secret="proxmox-credentials",
    )
    return build_terraform_object(spec)


@dataclass(frozen=True)
class Seen:
    kind: str
    name: str
    ready: tuple[str, str] | None  # (status, reason) of the Ready condition
    deleting: bool
    obj: dict[str, Any]


class Recorder:
    """The watch's consumer: keeps every event, with the Ready condition it carried."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.syncs: list[list[str]] = []
        self._changed = asyncio.Condition()

    async def __call__(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "SYNC":
            self.syncs.append([o["metadata"]["name"] for o in obj["items"]])
        else:
            ready = ready_condition(obj)
            condition = (str(ready["status"]), str(ready["reason"])) if ready else None
            deleting = "deletionTimestamp" in obj["metadata"]
            self.seen.append(Seen(kind, obj["metadata"]["name"], condition, deleting, obj))
        async with self._changed:
            self._changed.notify_all()

    def of(self, name: str) -> list[Seen]:
        return [s for s in self.seen if s.name == name]

    def reasons(self, name: str) -> list[tuple[str, str]]:
        """The Ready conditions `name` went through, repeats collapsed."""
        out: list[tuple[str, str]] = []
        for s in self.of(name):
            if s.ready is not None and (not out or out[-1] != s.ready):
                out.append(s.ready)
        return out

    async def wait_until(self, predicate: Callable[[Recorder], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: predicate(self))


@contextlib.asynccontextmanager
async def running_watch(source: WatchSource, consumer: Recorder) -> AsyncIterator[WatchHealth]:
    health = WatchHealth()
    task = asyncio.create_task(
        watch_terraforms(
            source,
            on_event=consumer,
            namespace=NAMESPACE,
            health=health,
            backoff=Backoff(base=0.01, cap=0.05),
        )
    )
    try:
        yield health
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
