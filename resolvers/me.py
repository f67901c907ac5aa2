"""The caller, as its token says."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.types import Me, OrgRoles


def resolve_me(info: strawberry.Info[Context, None]) -> Me:
    principal = info.context.principal
    assert principal is not None, "`me` is reached only with a verified token"
    return Me(
        sub=principal.sub,
        name=principal.name,
        email=principal.email,
        org_id=principal.org_id,
        roles=[OrgRoles(org_id=org, roles=sorted(roles)) for org, roles in sorted(principal.roles.items())],
        permissions=sorted(principal.permissions),
        token_expires_at=principal.expires_at,
    )
