"""The GraphQL object types: plain classes filled from service records."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import strawberry

from services.catalog import Flavor as FlavorModel
from services.catalog import Image as ImageModel
from services.db.models import InstanceStatus as InstanceStatusValue
from services.instances.records import InstanceEventRecord, InstanceRecord

InstanceStatus = strawberry.enum(
    InstanceStatusValue,
    name="InstanceStatus",
    description="Where an instance is in its lifecycle; ACTIVE, FAILED and DELETED are final until acted on.",
)


@strawberry.type(description="A size users may order.")
class Flavor:
    name: str
    cpu: int
    memory_mib: int
    disk_gib: int

    @classmethod
    def from_model(cls, flavor: FlavorModel) -> Flavor:
        return cls(name=flavor.name, cpu=flavor.cpu, memory_mib=flavor.memory_mib, disk_gib=flavor.disk_gib)


@strawberry.type(description="An operating system image users may order.")
class Image:
    name: str
    description: str

    @classmethod
    def from_model(cls, image: ImageModel) -> Image:
        return cls(name=image.name, description=image.description)


@strawberry.type(description="What may be ordered.")
class Catalog:
    flavors: list[Flavor]
    images: list[Image]


@strawberry.type(description="One status transition in an instance's history.")
class InstanceEvent:
    at: datetime
    from_status: InstanceStatus | None  # type: ignore[valid-type]
    to_status: InstanceStatus  # type: ignore[valid-type]
    reason: str | None
    message: str | None
    actor: str

    @classmethod
    def from_record(cls, record: InstanceEventRecord) -> InstanceEvent:
        return cls(
            at=record.at,
            from_status=record.from_status,
            to_status=record.to_status,
            reason=record.reason,
            message=record.message,
            actor=record.actor,
        )


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
    status: InstanceStatus  # type: ignore[valid-type]
    status_reason: str | None
    status_message: str | None
    ip_address: str | None
    hostname: str | None
    node: str | None
    created_at: datetime
    updated_at: datetime
    active_at: datetime | None
    deleted_at: datetime | None
    version: int

    @strawberry.field(description="The newest status transitions, oldest first.")
    async def events(
        self,
        info: strawberry.Info,
        last: Annotated[int, strawberry.argument(description="How many, at most 50.")] = 20,
    ) -> list[InstanceEvent]:
        from resolvers.instances import resolve_events

        return await resolve_events(info, strawberry.ID(self.id), last)

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
            status_reason=record.status_reason,
            status_message=record.status_message,
            ip_address=record.ip_address,
            hostname=record.hostname,
            node=record.node,
            created_at=record.created_at,
            updated_at=record.updated_at,
            active_at=record.active_at,
            deleted_at=record.deleted_at,
            version=record.version,
        )


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class InstanceEdge:
    cursor: str
    node: Instance


@strawberry.type(description="A page of instances, newest first.")
class InstanceConnection:
    edges: list[InstanceEdge]
    page_info: PageInfo

    @strawberry.field(description="The instances of this page, for clients that need no cursors.")
    def nodes(self) -> list[Instance]:
        return [edge.node for edge in self.edges]


@strawberry.input(description="Narrow a list of instances; all given conditions must hold.")
class InstanceFilter:
    status: list[InstanceStatus] | None = None  # type: ignore[valid-type]
    name_contains: str | None = None
    include_deleted: bool = strawberry.field(
        default=True, description="Whether DELETED instances are listed when no status is given."
    )
