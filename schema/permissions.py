"""Field-level rules: a field declares the permission it needs once, and the SDL shows it.

`@requires(permission: "…")` is printed on the field, so the front end knows what each field needs. A
caller without it gets null at that path with a FORBIDDEN error; the rest of the response stands. The
permission is checked in the org of the object the field belongs to (its `org_id`), else the caller's own.

The check wraps the field's resolver in the built schema instead of using a Strawberry field extension:
an extension takes a field off Strawberry's fast path for plain attributes, and `ipAddress` of a page of
100 instances would then cost 100 slow resolutions instead of 100 attribute reads and a set lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import strawberry
from graphql import GraphQLObjectType, GraphQLResolveInfo, default_field_resolver
from strawberry.schema_directive import Location

from schema.errors import FORBIDDEN, PublicError

DEFINITION = "strawberry-definition"  # where Strawberry keeps a field's definition in the core schema


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requires",
    description="The permission a caller needs to read this field or run this operation.",
)
class Requires:
    permission: str


class Forbidden(PublicError):
    code = FORBIDDEN

    def __init__(self, permission: str) -> None:
        super().__init__(f"requires the permission {permission}")
        self.extensions = {"code": FORBIDDEN, "permission": permission}


def requires(permission: str) -> list[object]:
    """`directives=requires("instance:read:network")` on a field."""
    return [Requires(permission=permission)]


def enforce_requirements(schema: strawberry.Schema) -> None:
    """Guard every field that carries `@requires` in the built schema."""
    for type_ in schema._schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for field in type_.fields.values():
            definition = (field.extensions or {}).get(DEFINITION)
            permission = next(
                (d.permission for d in getattr(definition, "directives", ()) if isinstance(d, Requires)), None
            )
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
