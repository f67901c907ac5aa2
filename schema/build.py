"""Assemble the schema: root types wired to resolvers, plus the document limits."""

from __future__ import annotations

from typing import Annotated

import strawberry
from graphql import GraphQLError
from strawberry.printer import print_schema
from strawberry.types import ExecutionContext

from resolvers.catalog import resolve_catalog
from resolvers.instances import resolve_instance, resolve_instances
from schema.context import Context
from schema.errors import is_public
from schema.limits import DocumentLimits, extensions
from schema.types import Catalog, Instance, InstanceConnection, InstanceFilter


@strawberry.type
class Query:
    @strawberry.field(description="One instance by id; null when it does not exist or is not yours to see.")
    async def instance(self, info: strawberry.Info[Context, None], id: strawberry.ID) -> Instance | None:
        return await resolve_instance(info, id)

    @strawberry.field(description="Instances you may see, newest first.")
    async def instances(
        self,
        info: strawberry.Info[Context, None],
        filter: InstanceFilter | None = None,
        first: Annotated[
            int | None, strawberry.argument(description="Page size: 20 when omitted, at most 100.")
        ] = None,
        after: Annotated[
            str | None, strawberry.argument(description="endCursor of the previous page.")
        ] = None,
    ) -> InstanceConnection:
        return await resolve_instances(info, filter, first, after)

    @strawberry.field(description="Flavors and images that may be ordered.")
    def catalog(self, info: strawberry.Info[Context, None]) -> Catalog:
        return resolve_catalog(info)


class GatewaySchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only what was masked: client mistakes are answered, not logged as server faults."""
        unexpected = [error for error in errors if not is_public(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(limits: DocumentLimits | None = None) -> strawberry.Schema:
    return GatewaySchema(query=Query, extensions=extensions(limits or DocumentLimits()))


def schema_sdl() -> str:
    return print_schema(build_schema()) + "\n"
