"""What the lifecycle needs from the cluster and from Semaphore.

The real adapters (`kubernetes.cluster.TerraformCluster`, `semaphore.client.SemaphoreClient`)
and dev mode's simulations (`services.simulated`) all satisfy these, so the lifecycle never knows which
it drives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from services.kubernetes.watch import WatchSource
from services.semaphore.model import SemaphoreTask


class Cluster(WatchSource, Protocol):
    """The watch's source (`list`, `watch`) plus what the lifecycle writes and reads."""

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete(self, namespace: str, name: str) -> None: ...

    async def request_reconcile(self, namespace: str, name: str) -> None: ...

    async def read_outputs(self, namespace: str, secret_name: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


class TaskRunner(Protocol):
    async def start_task(
        self, environment: Mapping[str, str], *, start_key: str | None = None
    ) -> SemaphoreTask: ...

    async def find_task(self, start_key: str, *, attempts: int | None = None) -> SemaphoreTask | None: ...

    async def get_task(self, task_id: int) -> SemaphoreTask: ...

    async def get_output(self, task_id: int) -> str: ...

    async def aclose(self) -> None: ...
