"""`revokeSessions`: one call to the revocations; the org rule lives there, not here."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.sessions import RevokeSessionsPayload
from schema.types import UserError


async def revoke_sessions(info: strawberry.Info[Context, None], sub: str) -> RevokeSessionsPayload:
    principal = info.context.principal
    revocations = info.context.services.revocations
    assert principal is not None, "mutations are reached only with a verified token"
    assert revocations is not None, "the composition root always wires revocations"
    try:
        revocation = await revocations.revoke_subject(principal, sub)
    except ValueError as error:
        failure = UserError(field="sub", message=str(error), code="INVALID_SUB")
        return RevokeSessionsPayload(sub=sub[:255], org_id=None, revoked_at=None, user_errors=[failure])
    return RevokeSessionsPayload(
        sub=sub, org_id=revocation.org_id, revoked_at=revocation.revoked_at, user_errors=[]
    )
