"""`POST /auth/backchannel-logout`: the issuer tells us a user signed out (OIDC Back-Channel Logout 1.0).

The body is form-encoded with exactly one `logout_token`. A valid one revokes the subject's tokens issued
at or before its `iat` (services/auth/revocation.py) and is answered 200; anything else is answered 400
`{"error": "invalid_request", "error_description": …}` and revokes nothing. Every answer carries
`Cache-Control: no-store`, as the spec asks. Not behind the GraphQL auth: the token is the credential.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.auth.errors import InvalidToken, KeysUnavailable
from services.auth.logout_token import LogoutTokenVerifier
from services.auth.revocation import Replayed, RevocationRequest, Revocations

logger = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"
NO_STORE = {"Cache-Control": "no-store"}
BACKCHANNEL_SOURCE = "backchannel-logout"


def _invalid(description: str) -> Response:
    body = {"error": "invalid_request", "error_description": description}
    return JSONResponse(body, 400, headers=NO_STORE)


def backchannel_logout(
    logout_tokens: LogoutTokenVerifier, revocations: Revocations, *, max_body_bytes: int
) -> Callable[[Request], Awaitable[Response]]:
    """`max_body_bytes`: the largest token accepted plus the form around it."""

    async def endpoint(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != FORM:
            return _invalid(f"the body must be {FORM}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return _invalid("the body is too large")
        try:
            form = parse_qs(body.decode("ascii"), strict_parsing=True, max_num_fields=8)
        except (UnicodeDecodeError, ValueError):
            return _invalid("the body is not a valid form")
        tokens = form.get("logout_token", [])
        if len(tokens) != 1:
            return _invalid("exactly one logout_token is required")
        try:
            logout = await logout_tokens.verify(tokens[0])
        except KeysUnavailable:
            return JSONResponse(
                {"error": "temporarily_unavailable", "error_description": "signing keys unavailable"},
                503,
                headers={**NO_STORE, "Retry-After": "5"},
            )
        except InvalidToken as error:
            return _invalid(f"invalid logout token: {error.reason}")
        request_ = RevocationRequest(
            sub=logout.sub,
            sid=logout.sid,
            org_id=None,  # the issuer speaks for every org
            revoked_at=logout.issued_at,
            expires_at=revocations.expiry(logout.issued_at, not_before=logout.expires_at),
            source=BACKCHANNEL_SOURCE,
            jti=logout.jti,
        )
        try:
            revocation = await revocations.revoke(request_)
        except Replayed:
            return _invalid("invalid logout token: replayed jti")
        logger.info("back-channel logout recorded (revocation %d)", revocation.id)
        return Response(status_code=200, headers=NO_STORE)

    return endpoint
