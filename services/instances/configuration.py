"""Phase 2: run the post-provisioning task in Semaphore and turn its end into ACTIVE or FAILED.

One supervised run per CONFIGURING instance in this process. A run starts the task at most once per
CONFIGURING episode: the start key is the instance id and the version that entered CONFIGURING, so a
restarted gateway finds the task it already started instead of starting another. Semaphore's API is the
truth; a webhook only wakes the poller. Every path ends: success, failure, or `ConfigurationTimeout`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.auth.principal import SYSTEM
from services.db.models import utcnow
from services.instances.ports import TaskRunner
from services.instances.reasons import (
    CONFIGURATION_FAILED,
    CONFIGURATION_REJECTED,
    CONFIGURATION_SUCCEEDED,
    CONFIGURATION_TIMEOUT,
    INVALID_OUTPUTS,
)
from services.instances.records import InstanceRecord
from services.instances.states import FAIL_CONFIGURING, FINISH_CONFIGURING, InstanceStatus
from services.instances.store import InstanceStore
from services.kubernetes.outputs import InvalidOutputs, Network, checked_outputs
from services.semaphore.errors import SemaphoreError, SemaphoreRejected
from services.semaphore.model import SemaphoreTask
from services.semaphore.poller import PollTimedOut, TaskPoller

logger = logging.getLogger(__name__)


def task_environment(instance_id: uuid.UUID, name: str, ip_address: str, hostname: str) -> dict[str, str]:
    """The Semaphore task's `environment`, the extra vars deploy/modules/ansible/instance.yml checks
    (tests/deploy_live runs the playbook with exactly these)."""
    return {"instance_id": str(instance_id), "name": name, "ip_address": ip_address, "hostname": hostname}


@dataclass(frozen=True, slots=True)
class ConfigurationSettings:
    timeout: float = 1800.0
    min_poll: float = 1.0
    max_poll: float = 30.0
    start_retry: float = 2.0
    adopt_after: float | None = None  # None: min(60 s, half the timeout)
    instance_networks: tuple[Network, ...] = ()  # where SSH targets may lie; empty: any routable address

    @property
    def adoption_grace(self) -> float:
        return self.adopt_after if self.adopt_after is not None else min(60.0, self.timeout / 2)


@dataclass(slots=True)
class _Run:
    task: asyncio.Task[None]
    poller: TaskPoller | None = None
    task_id: int | None = None


class Configuration:
    def __init__(self, store: InstanceStore, runner: TaskRunner, settings: ConfigurationSettings) -> None:
        self._store = store
        self._runner = runner
        self._settings = settings
        self._runs: dict[uuid.UUID, _Run] = {}

    @property
    def running(self) -> int:
        return len(self._runs)

    def start(self, record: InstanceRecord) -> None:
        """Supervise the instance's configuration here unless this process already does."""
        if record.id in self._runs or record.status is not InstanceStatus.CONFIGURING:
            return
        task = asyncio.create_task(self._supervise(record), name=f"configure {record.id}")
        run = _Run(task=task, task_id=record.semaphore_task_id)
        self._runs[record.id] = run

        def forget(_: object) -> None:
            if self._runs.get(record.id) is run:  # not a newer run of the same instance
                del self._runs[record.id]

        task.add_done_callback(forget)

    def adopt(self, record: InstanceRecord, *, at_once: bool = False) -> None:
        """Supervise a CONFIGURING instance a reconcile found, rather than one this process moved there.

        The transition's winner, maybe another replica, may be starting its task right now; a second
        start would find nothing under the start key yet and queue a second task. So an instance whose
        task is not recorded is adopted only once it has waited `adoption_grace` (its owner is presumed
        gone), or `at_once` at start-up, when what this process owned before is certainly gone."""
        if record.semaphore_task_id is None and not at_once:
            waited = (utcnow() - record.updated_at).total_seconds()
            if waited < self._settings.adoption_grace:
                return
        self.start(record)

    async def hint(self, task_id: int) -> bool:
        """A webhook said task `task_id` moved: read it now. False when no instance knows that task."""
        for run in self._runs.values():
            if run.task_id == task_id:
                if run.poller is not None:
                    run.poller.wake()
                return True
        record = await self._store.by_task_id(task_id)
        if record is None:
            return False
        self.start(record)
        return True

    def stop(self, instance_id: uuid.UUID) -> None:
        run = self._runs.pop(instance_id, None)
        if run is not None:
            run.task.cancel()

    async def close(self) -> None:
        runs = list(self._runs.values())
        self._runs.clear()
        for run in runs:
            run.task.cancel()
        await asyncio.gather(*(run.task for run in runs), return_exceptions=True)

    async def output(self, task_id: int) -> str:
        return await self._runner.get_output(task_id)

    async def task(self, task_id: int) -> SemaphoreTask:
        return await self._runner.get_task(task_id)

    async def _supervise(self, record: InstanceRecord) -> None:
        try:
            await self._configure(record)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The periodic reconcile starts a new run; the deadline still holds across runs.
            logger.exception("configuring instance %s failed unexpectedly", record.id)

    async def _configure(self, record: InstanceRecord) -> None:
        deadline = await self._deadline(record)
        task_id = record.semaphore_task_id
        if task_id is None:
            started = await self._start_task(record, deadline)
            if started is None:
                return
            task_id = started
        run = self._runs.get(record.id)
        remaining = (deadline - utcnow()).total_seconds()
        # Past the deadline (the gateway was down), the task is still read once before it counts as late.
        poller = TaskPoller(
            self._runner,
            task_id,
            within=max(remaining, self._settings.min_poll),
            min_interval=self._settings.min_poll,
            max_interval=self._settings.max_poll,
        )
        if run is not None:
            run.poller, run.task_id = poller, task_id

        # This run decides only the episode of its own task: after a retry another task is the truth.
        def owns(current: InstanceRecord) -> bool:
            return current.semaphore_task_id == task_id

        try:
            outcome = await poller.wait()
        except SemaphoreRejected as error:
            await self._fail(
                record.id, CONFIGURATION_REJECTED, f"Semaphore refused to read task {task_id}: {error}", owns
            )
            return
        if isinstance(outcome, PollTimedOut):
            await self._fail(
                record.id,
                CONFIGURATION_TIMEOUT,
                f"Semaphore task {task_id} did not finish within {self._settings.timeout:.0f} s",
                owns,
            )
        elif outcome.outcome == "success":
            await self._store.transition(
                record.id,
                FINISH_CONFIGURING,
                actor=SYSTEM.sub,
                reason=CONFIGURATION_SUCCEEDED,
                message=f"Semaphore task {task_id} succeeded",
                when=owns,
            )
        else:
            await self._fail(
                record.id,
                CONFIGURATION_FAILED,
                f"Semaphore task {task_id} ended with status {outcome.status}",
                owns,
            )

    async def _start_task(self, record: InstanceRecord, deadline: datetime) -> int | None:
        """Start the episode's task at most once across processes: a run first looks for the task of a
        run that died after claiming (its key is the version it claimed, which the row still carries),
        then claims the start by bumping the version; only the claimer starts, under the claimed key."""
        try:
            earlier = await self._runner.find_task(f"{record.id}:{record.version}", attempts=1)
        except SemaphoreError:
            earlier = None
        if earlier is not None:
            return await self._record_task(record, earlier.id)
        claimed = await self._store.update_fields(record.id, expected_version=record.version, changes={})
        if claimed is None:
            return await self._taken_over(record)
        key = f"{claimed.id}:{claimed.version}"

        def still_ours(current: InstanceRecord) -> bool:
            return current.version == claimed.version

        try:  # only checked values become extra vars, whatever wrote the row
            target = checked_outputs(
                record.ip_address or "", record.hostname or "", self._settings.instance_networks
            )
        except InvalidOutputs as error:
            await self._fail(record.id, INVALID_OUTPUTS, str(error), still_ours)
            return None
        environment = task_environment(record.id, record.name, target.ip_address, target.hostname)
        delay = self._settings.start_retry
        while True:
            try:
                task = await self._runner.find_task(key, attempts=1) or await self._runner.start_task(
                    environment, start_key=key
                )
                break
            except SemaphoreRejected as error:
                await self._fail(
                    record.id, CONFIGURATION_REJECTED, f"Semaphore refused the task: {error}", still_ours
                )
                return None
            except SemaphoreError as error:
                if utcnow() + timedelta(seconds=delay) >= deadline:
                    await self._fail(
                        record.id,
                        CONFIGURATION_TIMEOUT,
                        f"Semaphore could not start the task in time: {error}",
                        still_ours,
                    )
                    return None
                logger.warning(
                    "starting the task of instance %s: %s; retrying in %.1fs", record.id, error, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._settings.max_poll)
                current = await self._store.get(record.id)
                if current is None or not still_ours(current):
                    return await self._taken_over(record)  # deleted, retried, or adopted meanwhile
        return await self._record_task(claimed, task.id)

    async def _record_task(self, record: InstanceRecord, task_id: int) -> int | None:
        updated = await self._store.update_fields(
            record.id, expected_version=record.version, changes={"semaphore_task_id": task_id}
        )
        if updated is None:
            return await self._taken_over(record)
        return task_id

    async def _taken_over(self, record: InstanceRecord) -> int | None:
        """Someone else moved the row on: poll its task if it has one, else leave it to its owner."""
        current = await self._store.get(record.id)
        if current is None or current.status is not InstanceStatus.CONFIGURING:
            return None
        return current.semaphore_task_id

    async def _deadline(self, record: InstanceRecord) -> datetime:
        since = await self._store.status_since(record.id) or record.updated_at
        return since + timedelta(seconds=self._settings.timeout)

    async def _fail(
        self, instance_id: uuid.UUID, reason: str, message: str, when: Callable[[InstanceRecord], bool]
    ) -> None:
        await self._store.transition(
            instance_id,
            FAIL_CONFIGURING,
            actor=SYSTEM.sub,
            reason=reason,
            message=message,
            when=when,
        )
