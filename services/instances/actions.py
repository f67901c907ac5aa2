"""Day-2 actions on an ACTIVE instance: start, stop, reboot, resize (docs/ARCHITECTURE.md, "Power and tasks").

Each action is a task (`states.InstanceTask`) that begins as one compare-and-set with its event
(`InstanceStore.begin_task`: of two replicas asking at once exactly one wins, the other is told
INSTANCE_BUSY) and ends with another (`end_task`), success or not, leaving the status ACTIVE.

* start, stop and resize change the module variables of the instance's Terraform object (`started`,
  `cores`/`memory`/`disk`) by a resourceVersion-checked merge patch; the cluster stays the truth, and
  tofu-controller's drift detection keeps the VM as asked. The task ends when the object is Ready (or
  failed) for the generation the patch made: `status.observedGeneration` ≥ that `metadata.generation`.
* reboot runs a task of Semaphore's actions template (`action=reboot` and the checked address); the task
  ends when the Semaphore task does.

The peer's words on a failure are kept only as the event's detail (internals); readers see the fixed
sentence of `reasons.ACTION_FAILED`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from services.auth.principal import SYSTEM, Principal
from services.catalog import Catalog
from services.db.models import utcnow
from services.instances import reasons
from services.instances.access import may_power, may_resize, visibility_of
from services.instances.policy import UserError
from services.instances.ports import Cluster, TaskRunner
from services.instances.records import InstanceRecord
from services.instances.states import (
    INSTANCE_BUSY,
    TASK_OF,
    TERRAFORM_TASKS,
    Action,
    InstanceStatus,
    InstanceTask,
    PowerState,
    action_refusal,
    power_after,
    started_for,
)
from services.instances.store import InstanceStore, Quota, QuotaExceeded
from services.kubernetes.conditions import TerraformPhase, signal_of
from services.kubernetes.errors import ClusterConflict, ClusterError
from services.kubernetes.outputs import InvalidOutputs, Network, checked_outputs
from services.kubernetes.terraform_object import (
    generation_of,
    observed_generation_of,
    terraform_object_name,
    with_vars,
)
from services.semaphore.errors import SemaphoreError, SemaphoreRejected
from services.semaphore.poller import PollTimedOut, TaskPoller

logger = logging.getLogger(__name__)

NOT_FOUND = UserError("id", "no such instance", "NOT_FOUND")
REQUESTED = {
    Action.START: reasons.START_REQUESTED,
    Action.STOP: reasons.STOP_REQUESTED,
    Action.REBOOT: reasons.REBOOT_REQUESTED,
    Action.RESIZE: reasons.RESIZE_REQUESTED,
}
_REFUSALS = {
    INSTANCE_BUSY: "another action on this instance is still running",
    "INVALID_STATE": "only an ACTIVE instance can be started, stopped, rebooted or resized",
}
PATCH_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class ActionSettings:
    actions_template_id: int | None = None  # Semaphore's template of actions.yml; None: no reboot
    timeout: float = 1800.0  # a task not ended by then ends as ActionTimeout
    min_poll: float = 1.0
    max_poll: float = 30.0
    instance_networks: tuple[Network, ...] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a mutation returns: the instance as it now is, or why nothing happened."""

    instance: InstanceRecord | None = None
    errors: tuple[UserError, ...] = ()


async def settle_terraform_task(store: InstanceStore, record: InstanceRecord, obj: Mapping[str, Any]) -> None:
    """End a start, stop or resize once the object says how the generation it waits for went.

    Called with every watched or listed object of an ACTIVE instance; anything older than the task's
    generation (the Ready of before the patch) says nothing about it."""
    task, wanted = record.task, record.task_generation
    if task not in TERRAFORM_TASKS or wanted is None or task is None:
        return
    observed = observed_generation_of(dict(obj))
    signal = signal_of(obj)
    if observed is None or observed < wanted or signal.phase is TerraformPhase.PROVISIONING:
        return

    def same_task(current: InstanceRecord) -> bool:
        return current.task_generation == wanted

    ok = signal.phase is TerraformPhase.READY
    await store.end_task(
        record.id,
        task,
        actor=SYSTEM.sub,
        reason=reasons.ACTION_SUCCEEDED if ok else reasons.ACTION_FAILED,
        message=f"the Terraform object is Ready for generation {observed}"
        if ok
        else reasons.detail(signal.message, str(signal.reason) if signal.reason else None),
        power_state=power_after(task, record.power_state, succeeded=ok),
        when=same_task,
    )


class Actions:
    def __init__(
        self,
        *,
        store: InstanceStore,
        cluster: Cluster,
        runner: TaskRunner,
        catalog: Catalog,
        user_quota: Quota,
        org_quota: Quota,
        settings: ActionSettings,
        namespace: str,
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._runner = runner
        self._catalog = catalog
        self._quotas = (user_quota, org_quota)
        self._settings = settings
        self._namespace = namespace
        self._reboots: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._pollers: dict[int, TaskPoller] = {}  # Semaphore task id → the reboot waiting for it

    # -- what users ask for -------------------------------------------------------------------------

    async def start(self, principal: Principal, instance_id: uuid.UUID) -> Outcome:
        return await self._power(principal, instance_id, Action.START)

    async def stop(self, principal: Principal, instance_id: uuid.UUID) -> Outcome:
        return await self._power(principal, instance_id, Action.STOP)

    async def reboot(self, principal: Principal, instance_id: uuid.UUID) -> Outcome:
        record, refused = await self._checked(principal, instance_id, Action.REBOOT)
        if refused is not None:
            return refused
        assert record is not None
        if self._settings.actions_template_id is None:
            error = UserError(None, "rebooting is not configured on this platform", "NOT_CONFIGURED")
            return Outcome(record, (error,))
        begun = await self._begin(principal, record, Action.REBOOT)
        if isinstance(begun, Outcome):
            return begun
        self._supervise_reboot(begun)
        return Outcome(begun)

    async def resize(self, principal: Principal, instance_id: uuid.UUID, flavor_name: str) -> Outcome:
        record, refused = await self._checked(principal, instance_id, Action.RESIZE)
        if refused is not None:
            return refused
        assert record is not None
        flavor = self._catalog.flavor(flavor_name)
        if flavor is None:
            known = ", ".join(f.name for f in self._catalog.flavors)
            return Outcome(
                record, (UserError("flavor", f"unknown flavor; choose one of {known}", "UNKNOWN_FLAVOR"),)
            )
        if flavor.disk_gib < record.disk_gib:
            message = (
                f"the disk cannot shrink ({record.disk_gib} GiB now, {flavor.disk_gib} GiB in {flavor.name})"
            )
            return Outcome(record, (UserError("flavor", message, "DISK_SHRINK"),))
        if flavor.name == record.flavor:
            return Outcome(
                record, (UserError("flavor", "the instance already has this flavor", "UNCHANGED"),)
            )
        changes = {
            "flavor": flavor.name,
            "cpu": flavor.cpu,
            "memory_mib": flavor.memory_mib,
            "disk_gib": flavor.disk_gib,
        }
        begun = await self._begin(principal, record, Action.RESIZE, changes=changes, quota=True)
        if isinstance(begun, Outcome):
            return begun
        await self._patch(begun, {"cores": flavor.cpu, "memory": flavor.memory_mib, "disk": flavor.disk_gib})
        return Outcome(await self._store.get(instance_id))

    # -- what keeps tasks honest ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle every task: from the object (start, stop, resize), by polling Semaphore (reboot), or
        as timed out. Start-up and the periodic reconcile call it, so a task outlives its replica."""
        for record in await self._store.busy():
            try:
                await self._reconcile_one(record)
            except ClusterError as error:
                logger.warning("settling the task of %s: %s", record.id, error)
            except Exception:  # one instance's trouble must not stop the others'
                logger.exception("settling the task of %s failed", record.id)

    def hint(self, task_id: int) -> bool:
        """A verified webhook said Semaphore task `task_id` moved: read it now if a reboot here waits."""
        poller = self._pollers.get(task_id)
        if poller is not None:
            poller.wake()
        return poller is not None

    async def close(self) -> None:
        tasks = list(self._reboots.values())
        self._reboots.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile_one(self, record: InstanceRecord) -> None:
        assert record.task is not None
        if record.status is not InstanceStatus.ACTIVE:  # deleted or lost meanwhile: nothing to wait for
            await self._fail_task(record, "the instance left ACTIVE before the action ended")
            return
        since = await self._store.status_since(record.id) or record.updated_at
        late = utcnow() - since > timedelta(seconds=self._settings.timeout)
        if record.task in TERRAFORM_TASKS:
            obj = await self._cluster.get(record.terraform_namespace or self._namespace, self._name(record))
            if obj is None:
                await self._fail_task(record, "the Terraform object is gone")
            elif record.task_generation is None and late:
                await self._fail_task(record, "the Terraform object was never changed", timed_out=True)
            else:
                await settle_terraform_task(self._store, record, obj)
                if late:
                    await self._fail_task(
                        record, "the Terraform object did not become Ready in time", timed_out=True
                    )
        elif record.id not in self._reboots:
            if record.action_task_id is not None:
                self._supervise_reboot(record)
            elif late:
                await self._fail_task(record, "the reboot's Semaphore task was never started", timed_out=True)

    # -- the steps ----------------------------------------------------------------------------------

    async def _power(self, principal: Principal, instance_id: uuid.UUID, action: Action) -> Outcome:
        record, refused = await self._checked(principal, instance_id, action)
        if refused is not None:
            return refused
        assert record is not None
        started = started_for(action)
        assert started is not None
        if record.power_state is (PowerState.RUNNING if started else PowerState.STOPPED):
            state = "running" if started else "stopped"
            return Outcome(record, (UserError("id", f"the instance is already {state}", "INVALID_STATE"),))
        begun = await self._begin(principal, record, action)
        if isinstance(begun, Outcome):
            return begun
        await self._patch(begun, {"started": started})
        return Outcome(await self._store.get(instance_id))

    async def _checked(
        self, principal: Principal, instance_id: uuid.UUID, action: Action
    ) -> tuple[InstanceRecord | None, Outcome | None]:
        record = await self._store.get(instance_id)
        if record is None or not visibility_of(principal).allows(
            org_id=record.org_id, owner_sub=record.owner_sub
        ):
            return None, Outcome(errors=(NOT_FOUND,))
        allowed = may_resize(principal, record) if action is Action.RESIZE else may_power(principal, record)
        if not allowed:
            return None, Outcome(
                record, (UserError("id", f"you may not {action.value} this instance", "FORBIDDEN"),)
            )
        code = action_refusal(record.status, record.task)
        if code is not None:
            return None, Outcome(record, (UserError("id", _REFUSALS[code], code),))
        return record, None

    async def _begin(
        self,
        principal: Principal,
        record: InstanceRecord,
        action: Action,
        *,
        changes: Mapping[str, object] | None = None,
        quota: bool = False,
    ) -> InstanceRecord | Outcome:
        begun = await self._store.begin_task(
            record.id,
            TASK_OF[action],
            actor=principal.sub,
            reason=REQUESTED[action],
            changes=changes,
            resize_quota=self._quotas if quota else None,
        )
        if begun is None:
            return Outcome(errors=(NOT_FOUND,))
        if isinstance(begun, str):
            return Outcome(await self._store.get(record.id), (UserError("id", _REFUSALS[begun], begun),))
        if isinstance(begun, QuotaExceeded):
            unit = {"instances": "instances", "cpu": "vCPUs", "memory": "MiB of memory"}[begun.resource]
            message = (
                f"the {begun.scope} quota of {begun.limit} {unit} would be exceeded ({begun.used} in use)"
            )
            return Outcome(record, (UserError("flavor", message, "QUOTA_EXCEEDED"),))
        return begun

    async def _patch(self, record: InstanceRecord, variables: dict[str, Any]) -> None:
        """Write the module variables, re-reading on a conflict; record the generation the task waits for."""
        namespace, name = record.terraform_namespace or self._namespace, self._name(record)
        for _ in range(PATCH_ATTEMPTS):
            try:
                obj = await self._cluster.get(namespace, name)
                if obj is None:
                    await self._fail_task(record, f"the Terraform object {namespace}/{name} is missing")
                    return
                rv = str(obj["metadata"].get("resourceVersion", ""))
                patched = await self._cluster.set_vars(
                    namespace, name, with_vars(obj, variables), resource_version=rv
                )
            except ClusterConflict:
                continue  # someone wrote the object since we read it: read it again
            except ClusterError as error:
                await self._fail_task(record, f"changing the Terraform object failed: {error}")
                return
            generation = generation_of(patched)
            if generation is not None:
                waiting = await self._store.update_fields(
                    record.id, expected_version=record.version, changes={"task_generation": generation}
                )
                # The controller may have finished before the generation was recorded, and the watch
                # events that said so were ignored: read the object once more now.
                current = await self._cluster.get(namespace, name) if waiting is not None else None
                if waiting is not None and current is not None:
                    await settle_terraform_task(self._store, waiting, current)
            return
        await self._fail_task(record, "the Terraform object kept changing; the change was not written")

    def _supervise_reboot(self, record: InstanceRecord) -> None:
        if record.id in self._reboots:
            return
        task = asyncio.create_task(self._reboot(record), name=f"reboot {record.id}")
        self._reboots[record.id] = task

        def forget(_: object) -> None:
            if self._reboots.get(record.id) is task:
                del self._reboots[record.id]

        task.add_done_callback(forget)

    async def _reboot(self, record: InstanceRecord) -> None:
        try:
            task_id = record.action_task_id
            if task_id is None:
                task_id = await self._start_reboot(record)
                if task_id is None:
                    return
            poller = TaskPoller(
                self._runner,
                task_id,
                within=self._settings.timeout,
                min_interval=self._settings.min_poll,
                max_interval=self._settings.max_poll,
            )
            self._pollers[task_id] = poller
            try:
                outcome = await poller.wait()
            except SemaphoreRejected as error:
                await self._fail_task(record, f"Semaphore refused to read task {task_id}: {error}")
                return
            finally:
                self._pollers.pop(task_id, None)
            if isinstance(outcome, PollTimedOut):
                await self._fail_task(
                    record, f"Semaphore task {task_id} did not finish in time", timed_out=True
                )
            elif outcome.outcome == "success":
                await self._store.end_task(
                    record.id,
                    InstanceTask.REBOOTING,
                    actor=SYSTEM.sub,
                    reason=reasons.ACTION_SUCCEEDED,
                    message=f"Semaphore task {task_id} succeeded",
                    power_state=PowerState.RUNNING,
                )
            else:
                await self._fail_task(record, f"Semaphore task {task_id} ended with status {outcome.status}")
        except asyncio.CancelledError:
            raise
        except Exception:  # the periodic reconcile supervises it again
            logger.exception("rebooting instance %s failed unexpectedly", record.id)

    async def _start_reboot(self, record: InstanceRecord) -> int | None:
        template = self._settings.actions_template_id
        assert template is not None
        try:  # only checked values become extra vars, whatever wrote the row
            target = checked_outputs(
                record.ip_address or "", record.hostname or "", self._settings.instance_networks
            )
        except InvalidOutputs as error:
            await self._fail_task(record, str(error))
            return None
        environment = {
            "instance_id": str(record.id),
            "name": record.name,
            "action": "reboot",
            "ip_address": target.ip_address,
            "hostname": target.hostname,
        }
        try:
            started = await self._runner.start_task(
                environment, start_key=f"{record.id}:{record.version}:reboot", template_id=template
            )
        except SemaphoreError as error:
            await self._fail_task(record, f"Semaphore could not start the reboot: {error}")
            return None
        await self._store.update_fields(
            record.id, expected_version=record.version, changes={"action_task_id": started.id}
        )
        return started.id

    async def _fail_task(self, record: InstanceRecord, detail: str, *, timed_out: bool = False) -> None:
        assert record.task is not None
        await self._store.end_task(
            record.id,
            record.task,
            actor=SYSTEM.sub,
            reason=reasons.ACTION_TIMEOUT if timed_out else reasons.ACTION_FAILED,
            message=detail,
            power_state=power_after(record.task, record.power_state, succeeded=False),
        )

    def _name(self, record: InstanceRecord) -> str:
        return record.terraform_name or terraform_object_name(record.id)
