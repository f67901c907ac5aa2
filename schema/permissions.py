"""Field-level rules: a field declares the permission it needs once, and the SDL shows it.

`@requires(permission: "…")` is printed on the field, so the front end knows what each field needs. A
caller without it gets null at that path with a FORBIDDEN error; the rest of the response stands. The
permission is checked in the org of the object the field belongs to (its `org_id`), else the caller's own.

The check wraps the field's resolver in the built schema instead of using a Strawberry field extension:
an extension takes a field off Strawberry's fast path for plain attributes, and `ipAddress` of a page of
100 instances would then cost 100 slow resolutions instead of 100 attribute reads and a set lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import strawberry
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    OperationDefinitionNode,
    default_field_resolver,
    get_operation_ast,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import SchemaExtension
from strawberry.schema_directive import Location
from strawberry.types.graphql import OperationType

from schema.errors import Forbidden, forbidden_at

DEFINITION = "strawberry-definition"  # where Strawberry keeps a field's definition in the core schema


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requires",
    description="The permission a caller needs to read this field or run this operation.",
)
class Requires:
    permission: str


def requires(permission: str) -> list[object]:
    """`directives=requires("instance:read:network")` on a field."""
    return [Requires(permission=permission)]


def permission_of(field: GraphQLField) -> str | None:
    definition = (field.extensions or {}).get(DEFINITION)
    return next(
        (d.permission for d in getattr(definition, "directives", ()) if isinstance(d, Requires)), None
    )


class DeniedMutations(SchemaExtension):
    """A mutation document runs only when every root field it names is allowed. Field by field, an
    allowed create would run and a denied sync beside it would null `data`: a 403 hiding a done create."""

    def __init__(self, permissions: Mapping[str, str]) -> None:
        self.permissions = permissions

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None and context.operation_type is OperationType.MUTATION:
            operation = get_operation_ast(document, context.operation_name)
            principal = getattr(context.context, "principal", None)
            denied = [
                forbidden_at(permission, (field.alias or field.name).value)
                for field in root_fields(operation, document)
                if (permission := self.permissions.get(field.name.value)) is not None
                and (principal is None or not principal.has(permission))
            ]
            if denied:
                context.result = GraphQLExecutionResult(data=None, errors=denied)
        yield


def root_fields(operation: OperationDefinitionNode | None, document: DocumentNode) -> list[FieldNode]:
    """The operation's top-level fields, through fragment spreads and inline fragments."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    pending: list[Any] = list(operation.selection_set.selections) if operation else []
    fields: list[FieldNode] = []
    seen: set[str] = set()
    while pending:
        selection = pending.pop()
        if isinstance(selection, FieldNode):
            fields.append(selection)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                pending.extend(fragments[name].selection_set.selections)
        else:
            pending.extend(selection.selection_set.selections)
    return fields


def mutation_permissions(schema: strawberry.Schema) -> dict[str, str]:
    mutation = schema._schema.mutation_type
    if mutation is None:
        return {}
    return {name: p for name, field in mutation.fields.items() if (p := permission_of(field)) is not None}


def enforce_requirements(schema: strawberry.Schema) -> None:
    """Guard every field that carries `@requires` in the built schema."""
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for field in type_.fields.values():
            permission = permission_of(field)
            if permission is None:
                continue
            field.resolve = _guard(field.resolve or default_field_resolver, permission)
            if field.subscribe is not None:
                field.subscribe = _guard(field.subscribe, permission)


def _guard(resolve: Callable[..., Any], permission: str) -> Callable[..., Any]:
    def guarded(source: Any, info: GraphQLResolveInfo[Any], **kwargs: Any) -> Any:
        principal = info.context.principal
        if principal is None or not principal.has(permission, getattr(source, "org_id", None)):
            raise Forbidden(permission)
        return resolve(source, info, **kwargs)

    return guarded
