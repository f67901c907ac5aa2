"""Assemble the schema: root types wired to resolvers, plus the document limits.

The one module of schema/ above resolvers/: each root field is a resolver attached here with
`strawberry.field(resolver=…)` (docs/ARCHITECTURE.md, "Layers").
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import orjson
import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.printer import print_schema
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from resolvers.catalog import resolve_catalog
from resolvers.instances import resolve_instance, resolve_instances
from resolvers.me import resolve_me
from resolvers.mutations import (
    create_instance,
    delete_instance,
    reboot_instance,
    resize_instance,
    retry_instance,
    set_instance_labels,
    start_instance,
    stop_instance,
    sync_instances,
)
from resolvers.quota import resolve_org_quota, resolve_quota
from resolvers.sessions import revoke_sessions
from resolvers.subscriptions import instance_status_changed, instance_status_changes
from schema.active_token import ActiveTokenForWrites
from schema.context import Context
from schema.cost import Charger, DemandControl, list_size, wants_report
from schema.discovery import DiscoveryAwareExecution, SchemaDiscovery
from schema.errors import is_public
from schema.limits import DocumentLimits, extensions
from schema.multiplex import Membership, Multiplexer, Sink, is_subscription
from schema.permissions import DeniedMutations, enforce_requirements, mutation_permissions, requires
from schema.sessions import RevokeSessionsPayload
from schema.subscription_cost import SubscriptionCost, requested_extensions
from schema.types import (
    CatalogType,
    Instance,
    InstanceConnection,
    InstancePayload,
    Me,
    QuotaType,
    SyncReport,
)
from services.auth.permissions import (
    ADMIN_REVOKE,
    ADMIN_SYNC,
    INSTANCE_CREATE,
    INSTANCE_DELETE,
    INSTANCE_LABEL,
    INSTANCE_POWER,
    INSTANCE_RESIZE,
    INSTANCE_RETRY,
    QUOTA_READ_ORG,
)


@strawberry.type
class Query:
    instance: Instance | None = strawberry.field(
        resolver=resolve_instance,
        description="One instance by id; null when it does not exist or is not yours to see.",
    )
    instances: InstanceConnection = strawberry.field(
        resolver=resolve_instances,
        description="Instances you may see, newest first.",
        directives=[
            list_size(
                assumed_size=20,  # the default page size
                slicing_arguments=["first"],
                sized_fields=["edges", "nodes"],
                require_one_slicing_argument=False,
            )
        ],
    )
    catalog: CatalogType = strawberry.field(
        resolver=resolve_catalog, description="Flavors and images that may be ordered."
    )
    me: Me = strawberry.field(resolver=resolve_me, description="Who you are and what you may do.")
    quota: QuotaType = strawberry.field(
        resolver=resolve_quota,
        description="Your own instances in your org against the per-user quota, as a create counts them.",
    )
    org_quota: QuotaType | None = strawberry.field(
        resolver=resolve_org_quota,
        description="Every instance of your org against the per-org quota, as a create counts them "
        "(null with a FORBIDDEN error without quota:read:org).",
        directives=requires(QUOTA_READ_ORG),
    )


@strawberry.type
class Mutation:
    create_instance: InstancePayload = strawberry.mutation(
        resolver=create_instance,
        description="Order a virtual machine; it starts PENDING.",
        directives=requires(INSTANCE_CREATE),
    )
    delete_instance: InstancePayload = strawberry.mutation(
        resolver=delete_instance,
        description="Delete an instance (yours; any of your org's with instance:delete:org).",
        directives=requires(INSTANCE_DELETE),
    )
    retry_instance: InstancePayload = strawberry.mutation(
        resolver=retry_instance,
        description="Try a FAILED instance again from the phase that failed.",
        directives=requires(INSTANCE_RETRY),
    )
    set_instance_labels: InstancePayload = strawberry.mutation(
        resolver=set_instance_labels,
        description="Replace an instance's labels (yours; any of your org's with instance:label:org); they "
        "are copied onto its Terraform object as label.opencsp.io/<key>.",
        directives=requires(INSTANCE_LABEL),
    )
    start_instance: InstancePayload = strawberry.mutation(
        resolver=start_instance,
        description="Start a STOPPED ACTIVE instance (task STARTING until the VM runs).",
        directives=requires(INSTANCE_POWER),
    )
    stop_instance: InstancePayload = strawberry.mutation(
        resolver=stop_instance,
        description="Stop an ACTIVE instance's VM (task STOPPING until it is off).",
        directives=requires(INSTANCE_POWER),
    )
    reboot_instance: InstancePayload = strawberry.mutation(
        resolver=reboot_instance,
        description="Reboot an ACTIVE instance's VM (task REBOOTING until it is back).",
        directives=requires(INSTANCE_POWER),
    )
    resize_instance: InstancePayload = strawberry.mutation(
        resolver=resize_instance,
        description="Resize an ACTIVE instance; the disk never shrinks; quotas count the new size.",
        directives=requires(INSTANCE_RESIZE),
    )
    sync_instances: SyncReport = strawberry.mutation(
        resolver=sync_instances,
        description="Reconcile the database with the cluster and report what differed.",
        directives=requires(ADMIN_SYNC),
    )
    revoke_sessions: RevokeSessionsPayload = strawberry.mutation(
        resolver=revoke_sessions,
        description="Sign a user out at once: refuse every token of `sub` issued until now and close its "
        "sockets (in your org; every org with admin:all-orgs).",
        directives=requires(ADMIN_REVOKE),
    )


@strawberry.type
class Subscription:
    instance_status_changed = strawberry.subscription(
        resolver=instance_status_changed, description="Every status change of one instance."
    )
    instance_status_changes = strawberry.subscription(
        resolver=instance_status_changes, description="Status changes of every instance you may see."
    )


class GatewaySchema(strawberry.Schema):
    """Strawberry's schema, plus shared execution of identical subscriptions (`schema.multiplex`)."""

    multiplexer: Multiplexer | None = None
    subscription_cost: SubscriptionCost | None = None  # charges each member of a shared subscription

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> Any:
        if operation_extensions is None:  # a websocket subscribe payload's (schema.subscription_cost)
            operation_extensions = requested_extensions()
        run = functools.partial(
            super().stream,
            query,
            variable_values,
            root_value=root_value,
            operation_name=operation_name,
            operation_extensions=operation_extensions,
            allowed_operation_types=allowed_operation_types,
        )
        key = self._share_key(query, variable_values, context_value, operation_name)
        if key is None:
            return await run(context_value=context_value)
        assert isinstance(context_value, Context)
        # The group runs with a context of its own: the first member's socket may close long before.
        shared = Context.create(
            context_value.services, context_value.principal, schema_public=context_value.schema_public
        )
        assert self.multiplexer is not None  # a share key is only made when there is one
        join = functools.partial(
            self.multiplexer.join, key, lambda: run(context_value=shared), shared.take_instance
        )
        if self.subscription_cost is None or query is None:
            return await join()
        return await self.subscription_cost.join(
            key,
            query,
            variable_values,
            operation_name,
            operation_extensions,
            context_value,
            shared,
            join,
            lambda: run(context_value=context_value),
        )

    async def attach(
        self,
        sink: Sink,
        query: str | None,
        variable_values: dict[str, Any] | None,
        context_value: Any,
        operation_name: str | None,
    ) -> Membership | None:
        """Make `sink` a member of the shared group of this subscription, if it may share one (leave with
        `detach(sink)` on the answer). None: the operation is not shared (run it with `stream`)."""
        key = self._share_key(query, variable_values, context_value, operation_name)
        if key is None:
            return None
        assert isinstance(context_value, Context)
        assert self.multiplexer is not None
        shared = Context.create(
            context_value.services, context_value.principal, schema_public=context_value.schema_public
        )
        cost = self.subscription_cost
        if cost is not None and query is not None:
            # A member that asks for the estimate, or is refused, runs through `stream`: its first result
            # carries its own report, or its refusal in the protocol's shape (judged again there; a
            # refusal charged nothing).
            if wants_report(requested_extensions()):
                return None
            if await cost.admit(key, query, variable_values, operation_name, context_value, shared):
                return None
        start = functools.partial(
            super().stream, query, variable_values, context_value=shared, operation_name=operation_name
        )
        return await self.multiplexer.attach(key, start, sink, shared.take_instance)

    def _share_key(
        self, query: str | None, variables: dict[str, Any] | None, context: Any, operation_name: str | None
    ) -> Hashable | None:
        principal = getattr(context, "principal", None)
        multiplexer = self.multiplexer
        if query is None or principal is None or multiplexer is None:
            return None
        limits = (multiplexer.max_query_bytes, multiplexer.max_tokens)
        if not is_subscription(query, operation_name, max_bytes=limits[0], max_tokens=limits[1]):
            return None
        return (
            query,
            orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS),
            operation_name,
            principal.org_id,  # the org a guarded field without an org of its own is checked in
            frozenset(principal.grants.items()),
            principal.global_permissions,
            context.visibility,
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only what was masked: client mistakes are answered, not logged as server faults."""
        unexpected = [error for error in errors if not is_public(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(
    limits: DocumentLimits | None = None,
    observers: Sequence[Callable[[], SchemaExtension]] = (),
    *,
    share_subscriptions: int | None = None,
    max_operation_cost: int | None = None,
    budget: Charger | None = None,
) -> strawberry.Schema:
    """`observers` (metrics, tracing) run before the limits, so they see refused operations too.
    `share_subscriptions`: run identical subscriptions once, each member holding at most that many
    results unread; None runs every subscription on its own. `max_operation_cost`: demand control
    (`schema.cost`), charging `budget` when given; None estimates nothing."""
    guarded: dict[str, str] = {}
    schema = GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # SchemaDiscovery after the limits: it must see what their validation cache answered.
        extensions=[
            *observers,
            *extensions(limits or DocumentLimits()),
            SchemaDiscovery,
            *([] if max_operation_cost is None else [lambda: DemandControl(max_operation_cost, budget)]),
            lambda: DeniedMutations(guarded),
            ActiveTokenForWrites,
        ],
        execution_context_class=DiscoveryAwareExecution,
    )
    guarded.update(mutation_permissions(schema))
    if share_subscriptions is not None:
        document = limits or DocumentLimits()
        schema.multiplexer = Multiplexer(
            limit=share_subscriptions,
            max_query_bytes=document.max_query_bytes,
            max_tokens=document.max_tokens,
        )
        if max_operation_cost is not None:
            schema.subscription_cost = SubscriptionCost(
                schema._schema, max_operation_cost, budget, limits=document
            )
    enforce_requirements(schema)
    return schema


def schema_sdl() -> str:
    return print_schema(build_schema()) + "\n"
