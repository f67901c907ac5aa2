"""The GraphQL object types: plain classes filled from service records.

A type resolves its own nested fields (an instance's events, its Terraform object, its Semaphore task)
from the request's context; the root fields are `resolvers/`, attached in `schema.build`. So nothing here
imports a resolver, and `resolvers/` can return these types without a cycle.

A class whose domain counterpart has the same name says what it is (`CatalogType`, `InstanceFilterInput`);
its GraphQL name stays the one the SDL has always had.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from schema.context import EVENTS_PER_INSTANCE, Context
from schema.errors import BadUserInput, Unavailable
from schema.permissions import requires
from services.auth.permissions import INSTANCE_READ_INTERNALS, INSTANCE_READ_NETWORK
from services.catalog import Catalog, Flavor, Image
from services.instances.internals import PeerUnavailable
from services.instances.reading import Page
from services.instances.reasons import public_reason, sentence
from services.instances.records import InstanceEventRecord, InstanceRecord
from services.instances.states import InstanceStatus, InstanceTask, PowerState, reported_power

# The domain's enum, registered as a GraphQL enum (Strawberry marks the class; it stays the domain's).
strawberry.enum(
    InstanceStatus,
    name="InstanceStatus",
    description="Where an instance is in its lifecycle; ACTIVE, FAILED and DELETED are final until acted on.",
)

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
    flavors: list[FlavorType]
    images: list[ImageType]

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

    @strawberry.field
    async def status(self, info: strawberry.Info[Context, None]) -> str:
        try:
            return (await info.context.services.internals.task(self.id)).status
        except PeerUnavailable as error:
            raise Unavailable(str(error)) from None

    @strawberry.field(description="The task's log (its newest 64 KiB).")
    async def output(self, info: strawberry.Info[Context, None]) -> str:
        try:
            return await info.context.services.internals.task_output(self.id)
        except PeerUnavailable as error:
            raise Unavailable(str(error)) from None


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

    @strawberry.field(
        description="The instance's Terraform object as the cluster reports it.",
        directives=requires(INSTANCE_READ_INTERNALS),
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
        description="Status transitions, oldest first: the first N of the history, or (default) the last N."
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

    @strawberry.field(description="Pass as `after` to read the page that follows this edge.")
    def cursor(self) -> str:
        return Page.cursor(self.node.record)


@strawberry.type(description="A page of instances, newest first.")
class InstanceConnection:
    edges: list[InstanceEdge]
    page_info: PageInfo

    @strawberry.field(description="The instances of this page, for clients that need no cursors.")
    def nodes(self) -> list[Instance]:
        return [edge.node for edge in self.edges]

    @classmethod
    def from_page(cls, page: Page) -> InstanceConnection:
        items = page.items
        return cls(
            edges=[InstanceEdge(node=Instance.from_record(item)) for item in items],
            page_info=PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=page.cursor(items[0]) if items else None,
                end_cursor=page.cursor(items[-1]) if items else None,
            ),
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
