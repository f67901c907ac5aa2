"""What operators see of an instance's machinery: its Terraform object and its Semaphore task."""

from __future__ import annotations

from dataclasses import dataclass

from services.instances.configuration import Configuration
from services.instances.provisioning import Provisioning
from services.instances.records import InstanceRecord
from services.kubernetes.conditions import ready_condition
from services.kubernetes.errors import ClusterError
from services.semaphore.errors import SemaphoreError

MAX_OUTPUT = 65_536


class PeerUnavailable(Exception):
    """The cluster or Semaphore did not answer; the message names which, nothing more."""


@dataclass(frozen=True, slots=True)
class TerraformView:
    name: str
    namespace: str
    exists: bool
    ready: str | None  # the Ready condition's status: True, False, Unknown
    reason: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class TaskView:
    id: int
    status: str


class InternalsReader:
    """Reads an instance's Terraform object and Semaphore task from the peers, for operators."""

    def __init__(self, provisioning: Provisioning, configuration: Configuration) -> None:
        self._provisioning = provisioning
        self._configuration = configuration

    async def terraform(self, record: InstanceRecord) -> TerraformView:
        try:
            obj = await self._provisioning.fetch(record)
        except ClusterError:
            raise PeerUnavailable("the cluster did not answer") from None
        condition = ready_condition(obj) if obj else None
        return TerraformView(
            name=record.terraform_name or "",
            namespace=record.terraform_namespace or "",
            exists=obj is not None,
            ready=str(condition.get("status")) if condition else None,
            reason=str(condition.get("reason")) if condition and condition.get("reason") else None,
            message=str(condition.get("message")) if condition and condition.get("message") else None,
        )

    async def task(self, task_id: int) -> TaskView:
        try:
            task = await self._configuration.task(task_id)
        except SemaphoreError:
            raise PeerUnavailable("Semaphore did not answer") from None
        return TaskView(id=task.id, status=task.status)

    async def task_output(self, task_id: int) -> str:
        """The task's log, its newest part when it is longer than a response should carry."""
        try:
            output = await self._configuration.output(task_id)
        except SemaphoreError:
            raise PeerUnavailable("Semaphore did not answer") from None
        return output[-MAX_OUTPUT:]
