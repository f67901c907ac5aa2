"""The instance lifecycle as users drive it (create, delete, retry) and as the gateway keeps it honest
(watch, periodic reconcile, admin sync). See docs/ARCHITECTURE.md for the state machine as built."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

from services.auth.principal import Principal
from services.catalog import Catalog
from services.instances.access import may_delete, may_label, may_retry, visibility_of
from services.instances.actions import Actions
from services.instances.configuration import Configuration
from services.instances.policy import CreateRequest, UserError, labels_errors, validate_create
from services.instances.ports import Cluster
from services.instances.provisioning import Provisioning
from services.instances.reasons import CONFIGURATION_REASONS, DELETE_REQUESTED, RETRY_REQUESTED
from services.instances.records import InstanceRecord
from services.instances.states import (
    RETRY_CONFIGURING,
    RETRY_PROVISIONING,
    START_DELETING,
    InstanceStatus,
)
from services.instances.store import (
    CAS_ATTEMPTS,
    Inserted,
    InstanceStore,
    NameTaken,
    NewInstance,
    Quota,
    QuotaExceeded,
)
from services.kubernetes.errors import ClusterError
from services.kubernetes.terraform_object import instance_id_of
from services.kubernetes.watch import WatchHealth, watch_terraforms

logger = logging.getLogger(__name__)

NOT_FOUND = UserError("id", "no such instance", "NOT_FOUND")


@dataclass(frozen=True, slots=True)
class Quotas:
    user: Quota
    org: Quota


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What a mutation returns: the instance as it now is, or why nothing happened."""

    instance: InstanceRecord | None = None
    errors: list[UserError] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SyncReport:
    objects_without_rows: list[str]
    rows_without_objects: list[uuid.UUID]
    transitions: int
    labels_repaired: int = 0  # objects whose copy of the instance's labels had drifted


class Lifecycle:
    def __init__(
        self,
        *,
        store: InstanceStore,
        cluster: Cluster,
        provisioning: Provisioning,
        configuration: Configuration,
        catalog: Catalog,
        quotas: Quotas,
        reconcile_interval: float = 60.0,
        actions: Actions | None = None,
    ) -> None:
        self.store = store
        self.cluster = cluster
        self.provisioning = provisioning
        self.configuration = configuration
        self.catalog = catalog
        self.quotas = quotas
        self.reconcile_interval = reconcile_interval
        self.actions = actions
        self.watch_health = WatchHealth()
        self._reconciled = False  # the first reconcile is start-up's

    # -- what users ask for -------------------------------------------------------------------------

    async def create(self, principal: Principal, request: CreateRequest) -> ActionResult:
        valid = validate_create(request, self.catalog)
        if isinstance(valid, list):
            return ActionResult(errors=valid)
        instance_id = uuid.uuid4()
        new = NewInstance(
            id=instance_id,
            name=request.name,
            description=request.description or "",
            org_id=principal.org_id,
            owner_sub=principal.sub,
            owner_name=principal.name,
            flavor=valid.flavor.name,
            image=valid.image.name,
            cpu=valid.flavor.cpu,
            memory_mib=valid.flavor.memory_mib,
            disk_gib=valid.flavor.disk_gib,
            ssh_public_key=valid.ssh_public_key.openssh() if valid.ssh_public_key else None,
            idempotency_key=request.idempotency_key,
            terraform_name=self.provisioning.object_name(instance_id),
            terraform_namespace=self.provisioning.namespace,
        )
        result = await self.store.insert(
            new,
            actor=principal.sub,
            user_quota=self.quotas.user,
            org_quota=self.quotas.org,
            labels=dict(request.labels),
        )
        if isinstance(result, QuotaExceeded):
            unit = {"instances": "instances", "cpu": "vCPUs", "memory": "MiB of memory"}[result.resource]
            return ActionResult(
                errors=[
                    UserError(
                        None,
                        f"the {result.scope} quota of {result.limit} {unit} would be exceeded "
                        f"({result.used} in use)",
                        "QUOTA_EXCEEDED",
                    )
                ]
            )
        if isinstance(result, NameTaken):
            return ActionResult(
                errors=[
                    UserError("name", "an instance of this name already exists in your org", "NAME_TAKEN")
                ]
            )
        assert isinstance(result, Inserted)
        if result.created:
            await self.provisioning.ensure_object(result.record)
        return ActionResult(instance=await self.store.get(result.record.id))

    async def delete(self, principal: Principal, instance_id: uuid.UUID) -> ActionResult:
        record = await self._visible(principal, instance_id)
        if record is None:
            return ActionResult(errors=[NOT_FOUND])
        if not may_delete(principal, record):
            return ActionResult(errors=[UserError("id", "you may not delete this instance", "FORBIDDEN")])
        if record.status is InstanceStatus.DELETED:
            return ActionResult(
                record, [UserError("id", "the instance is already deleted", "ALREADY_DELETED")]
            )
        if record.status is InstanceStatus.DELETING:
            return ActionResult(record)
        deleting = await self.store.transition(
            instance_id,
            START_DELETING,
            actor=principal.sub,
            reason=DELETE_REQUESTED,
            changes={"task": None, "task_generation": None},  # a running action ends with the VM
        )
        if deleting is not None:
            self.configuration.stop(instance_id)
            try:
                await self.provisioning.delete_object(deleting)
            except ClusterError as error:
                logger.warning("deleting the Terraform object of %s: %s; will retry", instance_id, error)
        return ActionResult(await self.store.get(instance_id))

    async def retry(self, principal: Principal, instance_id: uuid.UUID) -> ActionResult:
        record = await self._visible(principal, instance_id)
        if record is None:
            return ActionResult(errors=[NOT_FOUND])
        if not may_retry(principal, record):
            return ActionResult(errors=[UserError("id", "you may not retry this instance", "FORBIDDEN")])
        if record.status is not InstanceStatus.FAILED:
            return ActionResult(
                record, [UserError("id", "only a FAILED instance can be retried", "NOT_FAILED")]
            )
        # The machine exists when only post-provisioning failed: then run that again, else provision again.
        configure_only = record.status_reason in CONFIGURATION_REASONS and bool(record.ip_address)
        retried = await self.store.transition(
            instance_id,
            RETRY_CONFIGURING if configure_only else RETRY_PROVISIONING,
            actor=principal.sub,
            reason=RETRY_REQUESTED,
            changes={"semaphore_task_id": None},
            expected_version=record.version,
        )
        if retried is not None and configure_only:
            self.configuration.start(retried)
        elif retried is not None:
            await self._reprovision(retried)
        return ActionResult(await self.store.get(instance_id))

    async def set_labels(
        self, principal: Principal, instance_id: uuid.UUID, labels: tuple[tuple[str, str], ...]
    ) -> ActionResult:
        """Replace the instance's labels as a whole, then copy them onto its Terraform object. The
        database is the truth (filters read it); a cluster that cannot be patched now is logged, and the
        next setInstanceLabels patches against what the object then carries."""
        record = await self._visible(principal, instance_id)
        if record is None:
            return ActionResult(errors=[NOT_FOUND])
        if not may_label(principal, record):
            return ActionResult(errors=[UserError("id", "you may not label this instance", "FORBIDDEN")])
        errors = labels_errors(labels)
        if errors:
            return ActionResult(record, errors)
        wanted = dict(labels)
        for _ in range(CAS_ATTEMPTS):
            if record.status is InstanceStatus.DELETED:
                return ActionResult(
                    record, [UserError("id", "a deleted instance cannot be labelled", "ALREADY_DELETED")]
                )
            changed = await self.store.replace_labels(instance_id, wanted, expected_version=record.version)
            if changed is not None:
                try:
                    await self.provisioning.relabel(changed, wanted)
                except ClusterError as error:
                    logger.warning(
                        "copying the labels of %s onto its Terraform object: %s", instance_id, error
                    )
                return ActionResult(changed)
            current = await self.store.get(instance_id)
            if current is None:
                return ActionResult(errors=[NOT_FOUND])
            record = current
        return ActionResult(record, [UserError("id", "the instance kept changing; try again", "CONFLICT")])

    # -- what keeps it honest -----------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Settle every instance that is not final against the cluster and Semaphore (start-up, timer)."""
        at_start_up, self._reconciled = not self._reconciled, True
        for record in await self.store.unfinished():
            try:
                await self._reconcile_one(record, at_start_up=at_start_up)
            except ClusterError as error:
                logger.warning("reconciling %s: %s", record.id, error)
            except Exception:  # one instance's trouble must not stop the others' reconcile
                logger.exception("reconciling %s failed", record.id)
        if self.actions is not None:
            await self.actions.reconcile()

    async def sync(self) -> SyncReport:
        """Admin: compare the cluster with the database, report the differences and fix what drifted."""
        items, _ = await self.cluster.list(namespace=self.provisioning.namespace)
        rows = {str(record.id): record for record in await self.store.live()}
        listed = {instance_id_of(obj) for obj in items}
        orphans = [
            f"{obj['metadata'].get('namespace')}/{obj['metadata'].get('name')}"
            for obj in items
            if instance_id_of(obj) not in rows
        ]
        missing = [
            record.id
            for key, record in rows.items()
            if key not in listed and record.status is not InstanceStatus.FAILED
        ]
        before = {key: record.version for key, record in rows.items()}
        await self.provisioning.on_list(items)
        await self.reconcile()
        after = {str(record.id): record.version for record in await self.store.live()}
        changed = sum(1 for key, version in before.items() if after.get(key, version + 1) != version)
        repaired = await self._repair_labels(items, rows)
        return SyncReport(
            objects_without_rows=orphans,
            rows_without_objects=missing,
            transitions=changed,
            labels_repaired=repaired,
        )

    async def _repair_labels(self, items: list[dict[str, Any]], rows: dict[str, InstanceRecord]) -> int:
        """Objects whose copy of the labels was edited behind the gateway's back (`label.opencsp.io/*`
        added, changed or removed in the cluster) get the database's labels back: the database is the
        truth that filters read."""
        owned = [(obj, rows[key]) for obj in items if (key := instance_id_of(obj) or "") in rows]
        labels = await self.store.labels_of([record.id for _, record in owned])
        repaired = 0
        for obj, record in owned:
            if record.status is InstanceStatus.DELETING:
                continue
            try:  # no I/O when the object's copy is right
                repaired += await self.provisioning.relabel(record, labels[record.id], obj)
            except ClusterError as error:
                logger.warning("repairing the labels of %s: %s", record.id, error)
        return repaired

    async def run(self) -> None:
        """The background work of one process: the cluster watch and the periodic reconcile. Supervised:
        if either ever ends with an error, both start again (and /readyz shows the watch down meanwhile)."""
        while True:
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(
                        watch_terraforms(
                            self.cluster,
                            on_event=self.provisioning.on_watch_event,
                            namespace=self.provisioning.namespace,
                            health=self.watch_health,
                        ),
                        name="terraform watch",
                    )
                    group.create_task(self._reconcile_forever(), name="reconcile")
            except Exception:
                logger.exception("the lifecycle's background work failed; restarting it")
            finally:
                self.watch_health.connected = False
            await asyncio.sleep(min(self.reconcile_interval, 5.0))

    async def close(self) -> None:
        await self.configuration.close()
        if self.actions is not None:
            await self.actions.close()

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                await self.reconcile()
            except Exception:  # the next round tries again; say why this one failed
                logger.exception("periodic reconcile failed")
            await asyncio.sleep(self.reconcile_interval)

    async def _reconcile_one(self, record: InstanceRecord, *, at_start_up: bool = False) -> None:
        match record.status:
            case InstanceStatus.PENDING:
                obj = await self.provisioning.fetch(record) or await self.provisioning.ensure_object(record)
                if obj is not None:
                    await self.provisioning.apply(record, obj)
            case InstanceStatus.PROVISIONING:
                obj = await self.provisioning.fetch(record)
                if obj is None:
                    await self.provisioning.object_gone(record)
                else:
                    await self.provisioning.apply(record, obj)
            case InstanceStatus.CONFIGURING:
                self.configuration.adopt(record, at_once=at_start_up)
            case InstanceStatus.DELETING:
                await self.provisioning.delete_object(record)

    async def _reprovision(self, record: InstanceRecord) -> None:
        try:
            if await self.provisioning.fetch(record) is None:
                await self.provisioning.ensure_object(record)
            else:
                await self.provisioning.request_reconcile(record)
        except ClusterError as error:
            logger.warning("re-provisioning %s: %s; the reconciler will retry", record.id, error)

    async def _visible(self, principal: Principal, instance_id: uuid.UUID) -> InstanceRecord | None:
        record = await self.store.get(instance_id)
        if record is None or not visibility_of(principal).allows(
            org_id=record.org_id, owner_sub=record.owner_sub
        ):
            return None
        return record
