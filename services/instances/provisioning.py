"""Phase 1: the instance's Terraform object, and what the cluster says about it.

Each event or listed object is mapped by `services.kubernetes.conditions` to provisioning, ready or
failed, and applied as a compare-and-set transition. Applying the same object twice changes nothing,
so duplicate watch events and re-lists are harmless.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.auth.principal import SYSTEM
from services.catalog import Catalog
from services.instances import reasons
from services.instances.actions import settle_terraform_task
from services.instances.configuration import Configuration
from services.instances.labels import OBJECT_LABEL_PREFIX, object_labels
from services.instances.ports import Cluster
from services.instances.records import InstanceRecord
from services.instances.states import (
    FAIL_OBJECT_LOST,
    FAIL_PROVISIONING,
    FINISH_DELETING,
    PROVISIONING_PHASE,
    START_CONFIGURING,
    START_PROVISIONING,
    InstanceStatus,
)
from services.instances.store import InstanceStore
from services.kubernetes.conditions import TerraformPhase, ready_condition, signal_of
from services.kubernetes.errors import ClusterConflict, ClusterError, ClusterForbidden, ClusterInvalid
from services.kubernetes.outputs import InvalidOutputs, Network, OutputsError, instance_outputs
from services.kubernetes.terraform_object import (
    RECONCILE_ANNOTATION,
    SourceKind,
    TerraformSpec,
    build_terraform_object,
    instance_id_of,
    outputs_secret_name,
    terraform_object_name,
)

logger = logging.getLogger(__name__)

# What the API refuses for good: retrying the same object cannot help, so the instance fails.
REFUSED = (ClusterInvalid, ClusterForbidden, ClusterConflict)


@dataclass(frozen=True, slots=True)
class TerraformSettings:
    namespace: str = "opencsp-instances"
    source_kind: SourceKind = "GitRepository"
    source_name: str = "opencsp-modules"
    source_namespace: str = "flux-system"
    vars_secret: str = "proxmox-credentials"  # noqa: S105 (a Secret's name, not a secret)
    interval: str = "10m"
    instance_networks: tuple[Network, ...] = ()  # where outputs' addresses may lie; empty: anywhere


class Provisioning:
    def __init__(
        self,
        store: InstanceStore,
        cluster: Cluster,
        catalog: Catalog,
        settings: TerraformSettings,
        configuration: Configuration,
    ) -> None:
        self._store = store
        self._cluster = cluster
        self._catalog = catalog
        self._settings = settings
        self._configuration = configuration

    @property
    def namespace(self) -> str:
        return self._settings.namespace

    def object_name(self, instance_id: uuid.UUID) -> str:
        """The Terraform object's name, known before the object exists (it derives from the id)."""
        return terraform_object_name(instance_id)

    def object_for(self, record: InstanceRecord, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        image = self._catalog.image(record.image)
        return build_terraform_object(
            TerraformSpec(
                instance_id=record.id,
                vm_name=record.name,
                namespace=record.terraform_namespace or self.namespace,
                module_path=image.module_path if image else "./deploy/modules/proxmox-vm",
                template=(image.template or image.name) if image else record.image,
                cpu=record.cpu,
                memory_mib=record.memory_mib,
                disk_gib=record.disk_gib,
                source_kind=self._settings.source_kind,
                source_name=self._settings.source_name,
                source_namespace=self._settings.source_namespace,
                vars_from_secret=self._settings.vars_secret,
                ssh_public_key=record.ssh_public_key,
                interval=self._settings.interval,
                extra_labels=tuple(sorted(object_labels(labels or {}).items())),
            )
        )

    async def ensure_object(self, record: InstanceRecord) -> dict[str, Any] | None:
        """Create the object (idempotent by name). A cluster outage leaves the instance PENDING for the
        reconciler; an object the API refuses outright fails the instance, since retrying cannot help."""
        try:
            labels = await self._store.labels(record.id)
            return await self._cluster.create(self.object_for(record, labels))
        except REFUSED as error:
            await self._store.transition(
                record.id,
                FAIL_PROVISIONING,
                actor=SYSTEM.sub,
                reason=reasons.TERRAFORM_OBJECT_REJECTED,
                message=f"the cluster refused the Terraform object ({error.status})",
            )
        except ClusterError as error:
            logger.warning("creating the Terraform object of %s: %s; will retry", record.id, error)
        return None

    async def fetch(self, record: InstanceRecord) -> dict[str, Any] | None:
        return await self._cluster.get(self._namespace_of(record), self._name_of(record))

    async def delete_object(self, record: InstanceRecord) -> None:
        """Ask the cluster to delete; DELETED follows when the object is gone (at once if it never was)."""
        namespace, name = self._namespace_of(record), self._name_of(record)
        await self._cluster.delete(namespace, name)
        if await self._cluster.get(namespace, name) is None:
            await self.object_gone(record)

    async def relabel(
        self, record: InstanceRecord, labels: Mapping[str, str], obj: dict[str, Any] | None = None
    ) -> bool:
        """Make the object's copy of the user's labels `labels`, with one merge patch against what the
        object carries now (`obj`, else read now; so an earlier patch that failed, or an edit made behind
        the gateway's back, is repaired too). No object yet: nothing to do, `ensure_object` reads the
        labels when it creates one. Whether it patched."""
        obj = obj if obj is not None else await self.fetch(record)
        if obj is None:
            return False
        patch = label_patch(obj, labels)
        if patch:
            await self._cluster.patch_labels(self._namespace_of(record), self._name_of(record), patch)
        return bool(patch)

    async def request_reconcile(self, record: InstanceRecord) -> None:
        await self._cluster.request_reconcile(self._namespace_of(record), self._name_of(record))

    async def on_watch_event(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "SYNC":
            await self.on_list(obj.get("items") or [])
            return
        record = await self._record_of(obj)
        if record is None:
            return
        if kind == "DELETED":
            await self.object_gone(record)
        else:
            await self.apply(record, obj)

    async def on_list(self, items: Iterable[dict[str, Any]]) -> None:
        """A full list: apply every object, and settle unfinished instances whose object is missing."""
        present: set[str] = set()
        for obj in items:
            instance_id = instance_id_of(obj)
            if instance_id is not None:
                present.add(instance_id)
            record = await self._record_of(obj)
            if record is not None:
                await self.apply(record, obj)
        for record in await self._store.live():
            if str(record.id) in present or record.terraform_namespace not in (None, self.namespace):
                continue
            if record.status is InstanceStatus.PENDING:
                await self.ensure_object(record)
            elif record.status is not InstanceStatus.FAILED:
                # The list is a snapshot from before these rows were read: an object created since
                # is missing from it but alive. Only the cluster's word now says it is gone.
                current = await self.fetch(record)
                if current is None:
                    await self.object_gone(record)
                else:
                    await self.apply(record, current)

    async def apply(self, record: InstanceRecord, obj: Mapping[str, Any]) -> None:
        signal = signal_of(obj)
        if not signal.deleting and record.status is InstanceStatus.ACTIVE and record.task is not None:
            await settle_terraform_task(self._store, record, obj)  # a start, stop or resize may have ended
            return
        if signal.deleting or record.status not in PROVISIONING_PHASE:
            return
        # The condition's reason and message are tofu-controller's words: only a reason of the table is
        # recorded as such; the rest, and the message, are kept as the detail operators read.
        if signal.phase is TerraformPhase.PROVISIONING:
            reason, replaced = reasons.provisioning_reason(signal.reason)
            await self._store.transition(
                record.id,
                START_PROVISIONING,
                actor=SYSTEM.sub,
                reason=reason,
                message=reasons.detail(signal.message, replaced),
            )
        elif signal.phase is TerraformPhase.READY:
            await self._ready(record, obj)
        elif await self._is_news(record, obj):
            reason, replaced = reasons.failure_reason(signal.reason)
            await self._store.transition(
                record.id,
                FAIL_PROVISIONING,
                actor=SYSTEM.sub,
                reason=reason,
                message=reasons.detail(signal.message, replaced),
            )

    async def object_gone(self, record: InstanceRecord) -> None:
        if record.status is InstanceStatus.DELETING:
            await self._store.transition(
                record.id,
                FINISH_DELETING,
                actor=SYSTEM.sub,
                reason=reasons.TERRAFORM_DESTROYED,
                message="the Terraform object and its resources are gone",
            )
            return
        self._configuration.stop(record.id)
        await self._store.transition(
            record.id,
            FAIL_OBJECT_LOST,
            actor=SYSTEM.sub,
            reason=reasons.TERRAFORM_OBJECT_DELETED,
            message="the Terraform object was deleted outside the gateway; its virtual machine is destroyed",
        )

    async def _ready(self, record: InstanceRecord, obj: Mapping[str, Any]) -> None:
        secret = ((obj.get("spec") or {}).get("writeOutputsToSecret") or {}).get("name")
        secret = secret or outputs_secret_name(record.id)
        try:
            found = instance_outputs(
                await self._cluster.read_outputs(self._namespace_of(record), secret) or {},
                self._settings.instance_networks,
            )
        except OutputsError as error:
            # Nothing of a refused Secret is stored: the row keeps no address, so no task can use it.
            refused = isinstance(error, InvalidOutputs)
            reason = reasons.INVALID_OUTPUTS if refused else reasons.TERRAFORM_OUTPUTS_INVALID
            await self._store.transition(
                record.id,
                FAIL_PROVISIONING,
                actor=SYSTEM.sub,
                reason=reason,
                message=str(error),
            )
            return
        if found is None:
            # Ready before the Secret is readable; the Secret's write is followed by another event.
            logger.info("instance %s is ready but its outputs are not written yet", record.id)
            return
        reason, replaced = reasons.ready_reason(signal_of(obj).reason)
        configuring = await self._store.transition(
            record.id,
            START_CONFIGURING,
            actor=SYSTEM.sub,
            reason=reason,
            message=reasons.detail("infrastructure is ready; starting post-provisioning", replaced),
            changes={
                "ip_address": found.ip_address,
                "hostname": found.hostname,
                "semaphore_task_id": None,
            },
        )
        if configuring is not None:
            self._configuration.start(configuring)

    async def _is_news(self, record: InstanceRecord, obj: Mapping[str, Any]) -> bool:
        """A failure older than the instance's current status (e.g. before a retry) says nothing new.

        While the reconcile a retry asked for is unhandled (Flux's `status.lastHandledReconcileAt` is not
        yet the annotation's value) the condition is the old failure, even within the same second as the
        retry, which the condition's one-second `lastTransitionTime` cannot tell apart."""
        requested = ((obj.get("metadata") or {}).get("annotations") or {}).get(RECONCILE_ANNOTATION)
        if requested is not None and (obj.get("status") or {}).get("lastHandledReconcileAt") != requested:
            return False
        condition = ready_condition(obj) or {}
        stamp = condition.get("lastTransitionTime")
        since = await self._store.status_since(record.id)
        if not isinstance(stamp, str) or since is None:
            return True
        try:
            changed = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            return True
        return changed >= since.replace(microsecond=0)

    async def _record_of(self, obj: Mapping[str, Any]) -> InstanceRecord | None:
        value = instance_id_of(dict(obj))
        try:
            instance_id = uuid.UUID(value) if value else None
        except ValueError:
            instance_id = None
        return await self._store.get(instance_id) if instance_id else None

    def _namespace_of(self, record: InstanceRecord) -> str:
        return record.terraform_namespace or self.namespace

    def _name_of(self, record: InstanceRecord) -> str:
        return record.terraform_name or terraform_object_name(record.id)


def label_patch(obj: dict[str, Any], labels: Mapping[str, str]) -> dict[str, str | None]:
    """The merge patch that makes `obj`'s copy of the user's labels `labels` (empty: it already is)."""
    carried = (obj.get("metadata") or {}).get("labels") or {}
    old = {k: v for k, v in carried.items() if isinstance(k, str) and k.startswith(OBJECT_LABEL_PREFIX)}
    new = object_labels(labels)
    patch: dict[str, str | None] = {key: None for key in old.keys() - new.keys()}
    patch |= {key: value for key, value in new.items() if old.get(key) != value}
    return patch
