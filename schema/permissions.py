"""Field-level rules: a field declares the permission it needs once, and the SDL shows it.

`@requires(permission: "…")` is printed on the field, so the front end knows what each field needs. A
caller without it gets null at that path with a FORBIDDEN error; the rest of the response stands. The
permission is checked in the org of the object the field belongs to (its `org_id`), else the caller's own.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions.field_extension import FieldExtension
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema_directive import Location

from schema.errors import FORBIDDEN


@strawberry.schema_directive(
    locations=[Location.FIELD_DEFINITION],
    name="requires",
    description="The permission a caller needs to read this field or run this operation.",
)
class Requires:
    permission: str


class HasPermission(BasePermission):
    def __init__(self, permission: str) -> None:
        self.permission = permission
        self.message = f"requires the permission {permission}"
        self.error_extensions = {"code": FORBIDDEN, "permission": permission}

    @property
    def schema_directive(self) -> object:
        return Requires(permission=self.permission)

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        principal = info.context.principal
        return principal is not None and bool(principal.has(self.permission, getattr(source, "org_id", None)))


def requires(permission: str) -> list[FieldExtension]:
    """`extensions=requires("instance:read:network")` on a field."""
    return [PermissionExtension(permissions=[HasPermission(permission)])]
