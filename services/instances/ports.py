"""What the instance domain needs from outside: the cluster, Semaphore, and where status changes go.

The real adapters (`kubernetes.cluster.TerraformCluster`, `semaphore.client.SemaphoreClient`, the buses
of `services.events`) and dev mode's simulations (`services.simulated`) all satisfy these, so the
lifecycle never knows which it drives. This module names only plain values and the error-free model
modules: importing it loads no client library.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from services.instances.records import StatusChanged
from services.semaphore.model import SemaphoreTask

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection


class Cluster(Protocol):
    """Terraform objects and their outputs. Failures are `services.kubernetes.errors.ClusterError`s.

    `list` and `watch` are what `services.kubernetes.watch.WatchSource` asks for."""

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def delete(self, namespace: str, name: str) -> None: ...

    async def request_reconcile(self, namespace: str, name: str) -> None: ...

    async def patch_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None: ...

    async def set_vars(
        self, namespace: str, name: str, variables: list[dict[str, Any]], *, resource_version: str
    ) -> dict[str, Any]: ...

    async def read_outputs(self, namespace: str, secret_name: str) -> dict[str, Any] | None: ...

    async def list(
        self, label_selector: str = ..., *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self,
        *,
        resource_version: str,
        label_selector: str = ...,
        namespace: str | None = None,
        timeout_seconds: int = ...,
    ) -> AsyncGenerator[dict[str, Any], None]: ...

    async def close(self) -> None: ...


class TaskRunner(Protocol):
    """Semaphore's tasks. Failures are `services.semaphore.errors.SemaphoreError`s."""

    async def start_task(
        self, environment: Mapping[str, str], *, start_key: str | None = None, template_id: int | None = None
    ) -> SemaphoreTask: ...

    async def find_task(
        self, start_key: str, *, attempts: int | None = None, template_id: int | None = None
    ) -> SemaphoreTask | None: ...

    async def get_task(self, task_id: int) -> SemaphoreTask: ...

    async def get_output(self, task_id: int) -> str: ...

    async def aclose(self) -> None: ...


class EventPublisher(Protocol):
    """Where the store hands each status change: `stage` inside the change's transaction (PostgreSQL
    NOTIFYs there, so the event leaves with the commit and never without it), `committed` right after."""

    async def stage(self, connection: AsyncConnection, event: StatusChanged) -> None: ...

    def committed(self, event: StatusChanged) -> None: ...
