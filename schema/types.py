"""The GraphQL object types: plain classes filled from service records.

A type resolves its own nested fields (an instance's events, its Terraform object, its Semaphore task)
from the request's context; the root fields are `resolvers/`, attached in `schema.build`. So nothing here
imports a resolver, and `resolvers/` can return these types without a cycle.

A class whose domain counterpart has the same name says what it is (`CatalogType`, `InstanceFilterInput`);
its GraphQL name stays the one the SDL has always had.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Annotated, Any

import strawberry

from schema.compiled import Reads
from schema.context import EVENTS_PER_INSTANCE, Context
from schema.cost import PEER_CALL, list_size
from schema.errors import BadUserInput, Unavailable
from schema.permissions import requires
from services.auth.permissions import INSTANCE_READ_INTERNALS, INSTANCE_READ_NETWORK
from services.catalog import Catalog, Flavor, Image
from services.instances.internals import PeerUnavailable
from services.instances.ordering import OrderDirection, OrderField
from services.instances.quota_usage import Measure, QuotaUsage
from services.instances.reading import Page, narrow_row
from services.instances.reasons import public_reason, sentence
from services.instances.records import InstanceEventRecord, InstanceRecord
from services.instances.states import InstanceStatus, InstanceTask, PowerState, reported_power

# The domain's enum, registered as a GraphQL enum (Strawberry marks the class; it stays the domain's).
strawberry.enum(
    InstanceStatus,
    name="InstanceStatus",
    description="Where an instance is in its lifecycle; ACTIVE, FAILED and DELETED are final until acted on.",
)

strawberry.enum(OrderField, name="InstanceOrderField", description="What a list of instances is sorted by.")
strawberry.enum(OrderDirection, name="OrderDirection", description="Ascending or descending.")

strawberry.enum(
    PowerState,
    name="PowerState",
    description="Whether the VM runs; UNKNOWN when not ACTIVE or after a failed start, stop or reboot.",
)
strawberry.enum(
    InstanceTask,
    name="InstanceTask",
    description="The day-2 action running on an ACTIVE instance; at most one at a time.",
)

DEFAULT_EVENTS = 20


@strawberry.type(name="Flavor", description="A size users may order.")
class FlavorType:
    name: str
    cpu: int
    memory_mib: int
    disk_gib: int

    @classmethod
    def from_model(cls, flavor: Flavor) -> FlavorType:
        return cls(name=flavor.name, cpu=flavor.cpu, memory_mib=flavor.memory_mib, disk_gib=flavor.disk_gib)


@strawberry.type(name="Image", description="An operating system image users may order.")
class ImageType:
    name: str
    description: str

    @classmethod
    def from_model(cls, image: Image) -> ImageType:
        return cls(name=image.name, description=image.description)


@strawberry.type(name="Catalog", description="What may be ordered.")
class CatalogType:
    flavors: list[FlavorType] = strawberry.field(directives=[list_size(assumed_size=20)])
    images: list[ImageType] = strawberry.field(directives=[list_size(assumed_size=20)])

    @classmethod
    def from_model(cls, catalog: Catalog) -> CatalogType:
        return cls(
            flavors=[FlavorType.from_model(flavor) for flavor in catalog.flavors],
            images=[ImageType.from_model(image) for image in catalog.images],
        )


REASON = "Why: one of the gateway's fixed reasons (`Unrecognized` for one it does not know)."
MESSAGE = "A fixed sentence for the reason, the same for every instance."
DETAIL = (
    "What tofu-controller, Semaphore or the gateway reported, verbatim. Peer text: it may name "
    "nodes, storage, accounts, template ids and module sources."
)


@strawberry.type(description="One status transition in an instance's history.")
class InstanceEvent:
    at: datetime
    from_status: InstanceStatus | None
    to_status: InstanceStatus
    reason: str | None = strawberry.field(description=REASON)
    message: str | None = strawberry.field(description=MESSAGE)
    detail: str | None = strawberry.field(description=DETAIL, directives=requires(INSTANCE_READ_INTERNALS))
    actor: str
    power_state: PowerState | None = strawberry.field(
        description="The power state after this change (null on events recorded before power control)."
    )
    task: InstanceTask | None = strawberry.field(description="The task running after this change.")
    org_id: strawberry.Private[str]  # the instance's: `@requires` is checked in that org

    @classmethod
    def from_record(cls, record: InstanceEventRecord, org_id: str) -> InstanceEvent:
        return cls(
            at=record.at,
            from_status=record.from_status,
            to_status=record.to_status,
            reason=public_reason(record.reason),
            message=sentence(record.reason),
            detail=record.message,
            actor=record.actor,
            power_state=reported_power(record.to_status, record.power_state) if record.power_state else None,
            task=record.task,
            org_id=org_id,
        )


@strawberry.type(description="A Terraform object of tofu-controller and its Ready condition.")
class TerraformStatus:
    name: str
    namespace: str
    exists: bool
    ready: str | None = strawberry.field(description="The Ready condition's status: True, False or Unknown.")
    reason: str | None
    message: str | None


@strawberry.type(description="An Ansible Semaphore task; status and output are read from Semaphore.")
class SemaphoreTask:
    id: int

    @strawberry.field(directives=[PEER_CALL])
    async def status(self, info: strawberry.Info[Context, None]) -> str:
        try:
            return (await info.context.services.internals.task(self.id)).status
        except PeerUnavailable as error:
            raise Unavailable(str(error)) from None

    @strawberry.field(description="The task's log (its newest 64 KiB).", directives=[PEER_CALL])
    async def output(self, info: strawberry.Info[Context, None]) -> str:
        try:
            return await info.context.services.internals.task_output(self.id)
        except PeerUnavailable as error:
            raise Unavailable(str(error)) from None


@strawberry.type(
    name="InstanceSecurity",
    description=(
        "The Lynis audit the post-provisioning playbook ran on the VM, as its signed hint reported it. "
        "The raw report is in the task's log: `semaphoreTask { output }` (internals)."
    ),
)
class InstanceSecurityType:
    hardening_index: int = strawberry.field(description="Lynis's hardening index, 0 to 100.")
    warnings: int = strawberry.field(description="How many warnings the audit reported.")
    scanned_at: datetime = strawberry.field(description="When the audit ran, by the VM's clock.")
    task_id: int | None = strawberry.field(
        description="The Semaphore task that reported it.", directives=requires(INSTANCE_READ_INTERNALS)
    )
    org_id: strawberry.Private[str]  # the instance's: `@requires` is checked in that org


@strawberry.type(description="A virtual machine on the platform.")
class Instance:
    id: strawberry.ID
    name: str
    description: str
    org_id: str
    owner_sub: str
    owner_name: str
    flavor: str
    image: str
    cpu: int
    memory_mib: int
    disk_gib: int
    status: InstanceStatus
    power_state: PowerState = strawberry.field(description="Whether the VM runs (status says where it is).")
    task: InstanceTask | None = strawberry.field(description="The action running now; null when idle.")
    status_reason: str | None = strawberry.field(description=REASON)
    status_message: str | None = strawberry.field(description=MESSAGE)
    status_detail: str | None = strawberry.field(
        description=DETAIL, directives=requires(INSTANCE_READ_INTERNALS)
    )
    ip_address: str | None = strawberry.field(directives=requires(INSTANCE_READ_NETWORK))
    hostname: str | None = strawberry.field(directives=requires(INSTANCE_READ_NETWORK))
    node: str | None = strawberry.field(
        directives=requires(INSTANCE_READ_INTERNALS), description="The Proxmox node the VM runs on."
    )
    created_at: datetime
    updated_at: datetime
    active_at: datetime | None
    deleted_at: datetime | None
    version: int
    record: strawberry.Private[InstanceRecord]

    @strawberry.field(description="The instance's labels, sorted by key.")
    async def labels(self, info: strawberry.Info[Context, None]) -> list[Label]:
        found = await info.context.loaders.labels.load(self.record.id)
        return [Label(key=key, value=value) for key, value in sorted(found.items())]

    @strawberry.field(
        description="The instance's Terraform object as the cluster reports it.",
        directives=[*requires(INSTANCE_READ_INTERNALS), PEER_CALL],
    )
    async def terraform(self, info: strawberry.Info[Context, None]) -> TerraformStatus | None:
        if self.record.terraform_name is None:
            return None
        try:
            view = await info.context.services.internals.terraform(self.record)
        except PeerUnavailable as error:
            raise Unavailable(str(error)) from None
        return TerraformStatus(
            name=view.name,
            namespace=view.namespace,
            exists=view.exists,
            ready=view.ready,
            reason=view.reason,
            message=view.message,
        )

    @strawberry.field(
        description="The post-provisioning task in Semaphore, once started.",
        directives=requires(INSTANCE_READ_INTERNALS),
    )
    async def semaphore_task(self) -> SemaphoreTask | None:
        if self.record.semaphore_task_id is None:
            return None
        return SemaphoreTask(id=self.record.semaphore_task_id)

    @strawberry.field(
        description=(
            "The newest security audit a post-provisioning run reported (while its task was the instance's "
            "current one); null until one did. "
            "The raw Lynis report is behind internals, in `semaphoreTask { output }`."
        )
    )
    async def security(self, info: strawberry.Info[Context, None]) -> InstanceSecurityType | None:
        found = await info.context.loaders.security.load(self.record.id)
        if found is None:
            return None
        return InstanceSecurityType(
            hardening_index=found.hardening_index,
            warnings=found.warnings,
            scanned_at=found.scanned_at,
            task_id=found.task_id,
            org_id=self.org_id,
        )

    @strawberry.field(
        description="Status transitions, oldest first: the first N of the history, or (default) the last N.",
        directives=[
            list_size(
                assumed_size=EVENTS_PER_INSTANCE,
                slicing_arguments=["first", "last"],
                require_one_slicing_argument=False,
            )
        ],
    )
    async def events(
        self,
        info: strawberry.Info[Context, None],
        first: Annotated[int | None, strawberry.argument(description="The oldest N, at most 50.")] = None,
        last: Annotated[int | None, strawberry.argument(description="The newest N, at most 50.")] = None,
    ) -> list[InstanceEvent]:
        if first is not None and last is not None:
            raise BadUserInput("give first or last, not both")
        count = first if first is not None else (last if last is not None else DEFAULT_EVENTS)
        if not 0 <= count <= EVENTS_PER_INSTANCE:
            raise BadUserInput(
                f"{'first' if first is not None else 'last'} must be between 0 and {EVENTS_PER_INSTANCE}"
            )
        loaders, instance_id = info.context.loaders, self.record.id
        if first is not None:
            events = (await loaders.oldest_events.load(instance_id))[:count]
        else:
            newest = await loaders.newest_events.load(instance_id)
            events = newest[len(newest) - count :] if count else []
        return [InstanceEvent.from_record(event, self.org_id) for event in events]

    @classmethod
    def from_record(cls, record: InstanceRecord) -> Instance:
        return cls(
            id=strawberry.ID(str(record.id)),
            name=record.name,
            description=record.description,
            org_id=record.org_id,
            owner_sub=record.owner_sub,
            owner_name=record.owner_name,
            flavor=record.flavor,
            image=record.image,
            cpu=record.cpu,
            memory_mib=record.memory_mib,
            disk_gib=record.disk_gib,
            status=record.status,
            power_state=reported_power(record.status, record.power_state),
            task=record.task,
            status_reason=public_reason(record.status_reason),
            status_message=sentence(record.status_reason),
            status_detail=record.status_message,
            ip_address=record.ip_address,
            hostname=record.hostname,
            node=record.node,
            created_at=record.created_at,
            updated_at=record.updated_at,
            active_at=record.active_at,
            deleted_at=record.deleted_at,
            version=record.version,
            record=record,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class InstanceEdge:
    node: Instance

    page: strawberry.Private[Page[InstanceRecord]]

    @strawberry.field(description="Pass as `after` (with the same orderBy) to read the page that follows.")
    def cursor(self) -> str:
        return self.page.cursor(self.node.record)


# The Instance fields that are the record's attribute of the same name, as `from_record` copies them, and
# `id`: the record's UUID, which the ID scalar serializes exactly as `from_record`'s `str` does. A narrow
# page's row (`services.instances.reading.narrow_row`) answers these as an Instance would, and those of
# COMPUTED_FROM_RECORD through `narrow_view`.
COPIED_FROM_RECORD = frozenset(
    {
        "id",
        "name",
        "description",
        "org_id",
        "owner_sub",
        "owner_name",
        "flavor",
        "image",
        "cpu",
        "memory_mib",
        "disk_gib",
        "status",
        "task",
        "ip_address",
        "hostname",
        "node",
        "created_at",
        "updated_at",
        "active_at",
        "deleted_at",
        "version",
    }
)


def _detail(message: str | None) -> str | None:
    return message


# The Instance fields `from_record` computes: (the columns it reads, in order, and how).
COMPUTED_FROM_RECORD: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
    "power_state": (("status", "power_state"), reported_power),
    "status_reason": (("status_reason",), public_reason),
    "status_message": (("status_reason",), sentence),
    "status_detail": (("status_message",), _detail),
}


@lru_cache(maxsize=256)
def narrow_view(columns: tuple[str, ...]) -> type[tuple[Any, ...]]:
    """The class of a narrow page's rows of `columns` that answers COMPUTED_FROM_RECORD's fields as
    `from_record` computes them, where it holds their columns. A column whose name is such a field's
    (`status_reason`, `status_message`, `power_state`) never answers for the field: without the field's
    own columns, reading it raises (a plan then falls back to graphql-core)."""
    at = {name: index for index, name in enumerate(columns)}
    attributes: dict[str, Any] = {"__slots__": ()}
    for name, (needs, compute) in COMPUTED_FROM_RECORD.items():
        if all(column in at for column in needs):
            getters = [itemgetter(at[column]) for column in needs]
            attributes[name] = property(_computed(compute, getters))
        elif name in at:
            attributes[name] = property(_missing(name))
    return type("InstanceView", (narrow_row(columns),), attributes)


def _computed(compute: Callable[..., Any], getters: list[itemgetter[Any]]) -> Callable[[Any], Any]:
    if len(getters) == 1:
        (only,) = getters
        return lambda row: compute(only(row))
    return lambda row: compute(*(getter(row) for getter in getters))


def _missing(name: str) -> Callable[[Any], Any]:
    def missing(_: Any) -> Any:
        raise AttributeError(f"{name}: this narrow page did not read its columns")

    return missing


@strawberry.type(description="A page of instances, newest first unless orderBy says otherwise.")
class InstanceConnection:
    edges: list[InstanceEdge]
    page_info: PageInfo
    # A narrow page's rows (`narrow_columns`), in place of `Instance`s; `edges` is then empty.
    rows: strawberry.Private[Sequence[Any] | None] = None

    @strawberry.field(description="The instances of this page, for clients that need no cursors.")
    def nodes(self) -> list[Instance]:
        if self.rows is not None:
            return self.rows  # type: ignore[return-value]  # they answer every field read (narrow_columns)
        return [edge.node for edge in self.edges]

    @staticmethod
    def narrow_columns(reads: Reads | None) -> tuple[str, ...] | None:
        """The columns of a narrow page that answers `reads` (a compiled plan's, `schema.compiled`), or
        None when the plan needs full Instances: it reads edges, or an Instance field that is neither a
        column copied as is nor computed from columns (a resolver such as `labels`). Read its rows
        through `narrow_view`."""
        if reads is None or not reads.keys() <= {"InstanceConnection", "Instance", "PageInfo"}:
            return None
        if not reads.get("InstanceConnection", frozenset()) <= {"nodes", "page_info"}:
            return None
        instance = reads.get("Instance", frozenset())
        if not instance <= COPIED_FROM_RECORD | COMPUTED_FROM_RECORD.keys():
            return None
        columns = set(instance & COPIED_FROM_RECORD)
        for name in instance & COMPUTED_FROM_RECORD.keys():
            columns.update(COMPUTED_FROM_RECORD[name][0])
        return tuple(sorted(columns))

    @classmethod
    def from_page(cls, page: Page[InstanceRecord]) -> InstanceConnection:
        items = page.items
        return cls(
            edges=[InstanceEdge(node=Instance.from_record(item), page=page) for item in items],
            page_info=_page_info(page),
        )

    @classmethod
    def from_narrow_page(cls, page: Page[Any]) -> InstanceConnection:
        """A narrow page's rows as the connection's nodes, for the plan that asked for those columns."""
        return cls(edges=[], page_info=_page_info(page), rows=page.items)


def _page_info(page: Page[Any]) -> PageInfo:
    items = page.items
    return PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=page.has_previous_page,
        start_cursor=page.cursor(items[0]) if items else None,
        end_cursor=page.cursor(items[-1]) if items else None,
    )


@strawberry.type(description="A label: a Kubernetes label name without a prefix, and its value.")
class Label:
    key: str
    value: str


@strawberry.input(name="LabelInput", description="A label to set: key and value by Kubernetes label syntax.")
class LabelInput:
    key: str = strawberry.field(
        description="At most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or "
        "digit; no prefix (the gateway prefixes it on the cluster)."
    )
    value: str = strawberry.field(
        description="Empty, or at most 63 letters, digits, '-', '_' or '.', starting and ending with one."
    )


@strawberry.input(name="InstanceOrder", description="How to sort a list of instances; the id breaks ties.")
class InstanceOrderInput:
    field: OrderField
    direction: OrderDirection = OrderDirection.DESC


@strawberry.type(name="QuotaUsage", description="How much of one quota is used.")
class QuotaUsageType:
    used: int
    limit: int

    @classmethod
    def from_measure(cls, measure: Measure) -> QuotaUsageType:
        return cls(used=measure.used, limit=measure.limit)


@strawberry.type(
    name="Quota",
    description="Usage against a quota, counted as the create's quota check counts it: instances that are "
    "not DELETED.",
)
class QuotaType:
    instances: QuotaUsageType
    cpu: QuotaUsageType
    memory_mib: QuotaUsageType

    @classmethod
    def from_usage(cls, usage: QuotaUsage) -> QuotaType:
        return cls(
            instances=QuotaUsageType.from_measure(usage.instances),
            cpu=QuotaUsageType.from_measure(usage.cpu),
            memory_mib=QuotaUsageType.from_measure(usage.memory_mib),
        )


@strawberry.input(
    name="InstanceFilter", description="Narrow a list of instances; all given conditions must hold."
)
class InstanceFilterInput:
    status: list[InstanceStatus] | None = None
    name_contains: str | None = None
    include_deleted: bool = strawberry.field(
        default=True, description="Whether DELETED instances are listed when no status is given."
    )
    labels: list[str] | None = strawberry.field(
        default=None,
        description="Kubernetes label selector requirements, all of which must hold: `env=prod`, "
        "`env==prod`, `tier!=db`, `team`, `!team`, `env in (a,b)`, `env notin (a)`.",
    )


@strawberry.type(description="A validation, policy or quota failure of a mutation.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault, if one is.")
    message: str
    code: str


@strawberry.type
class InstancePayload:
    instance: Instance | None
    user_errors: list[UserError]


@strawberry.input
class CreateInstanceInput:
    name: str = strawberry.field(description="A DNS label, unique among your org's live instances.")
    flavor: str
    image: str
    ssh_public_key: str | None = None
    description: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None, description="Send the same key again to get the first result, never a second instance."
    )
    labels: list[LabelInput] | None = strawberry.field(default=None, description="At most 64, keys unique.")


@strawberry.type(description="What an admin sync found and fixed.")
class SyncReport:
    objects_without_rows: list[str] | None = strawberry.field(
        description="Terraform objects no instance owns (their names are the cluster's).",
        directives=requires(INSTANCE_READ_INTERNALS),
    )
    rows_without_objects: list[strawberry.ID] = strawberry.field(
        description="Live instances whose Terraform object is missing."
    )
    transitions: int = strawberry.field(description="Instances whose state the sync corrected.")
    labels_repaired: int = strawberry.field(
        description="Terraform objects whose copy of their instance's labels had been edited in the cluster, "
        "given the instance's labels back."
    )


@strawberry.type
class OrgRoles:
    org_id: str
    roles: list[str]


@strawberry.type(description="The caller, as its token says.")
class Me:
    sub: str
    name: str
    email: str
    org_id: str
    roles: list[OrgRoles]
    permissions: list[str] = strawberry.field(description="What you may do in your own org.")
    token_expires_at: datetime


@strawberry.type(
    description="An instance changed: its status, or (with `from` equal to `to`) its power state or task."
)
class InstanceStatusEvent:
    instance: Instance
    from_status: InstanceStatus | None = strawberry.field(name="from")
    to_status: InstanceStatus = strawberry.field(name="to")
    reason: str | None = strawberry.field(description=REASON)
    at: datetime
    version: int
    power_state: PowerState | None = strawberry.field(description="The power state after this change.")
    task: InstanceTask | None = strawberry.field(description="The task running after this change.")


@strawberry.input(description="Which status changes to receive; all given conditions must hold.")
class StatusChangeFilter:
    to: list[InstanceStatus] | None = None
    name_contains: str | None = None
