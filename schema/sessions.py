"""The GraphQL shape of an admin's lockout (`revokeSessions`)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from schema.types import UserError


@strawberry.type(description="A lockout: tokens of the subject issued at or before revokedAt are refused.")
class RevokeSessionsPayload:
    sub: str
    org_id: str | None = strawberry.field(
        description="The org whose tokens of this subject are refused; null: every org (a cross-org admin's)."
    )
    revoked_at: datetime | None = strawberry.field(description="Null when the lockout was refused.")
    user_errors: list[UserError]
