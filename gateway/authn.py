"""Bearer tokens at the edge: a request without a valid one is answered 401 before any GraphQL work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from services.auth.errors import InvalidToken, KeysUnavailable
from services.auth.introspection import Introspector
from services.auth.principal import Principal
from services.auth.tokens import REVOKED, TokenVerifier

CHALLENGE = 'Bearer error="invalid_token"'
REVOKED_CHALLENGE = f'{CHALLENGE}, error_description="{REVOKED}"'


class Unauthenticated(Exception):
    """No usable token; the message says why in one line and names no key or secret."""

    revoked = False

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value: a revoked token says so, so a console knows to sign in again."""
        return REVOKED_CHALLENGE if self.revoked else CHALLENGE


class IssuerUnavailable(Exception):
    """The issuer's keys were never loaded: the token cannot be judged yet. Not the caller's fault, so
    not a 401 (that would make a console sign its users out during an issuer outage)."""


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("a bearer token is required")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def authorization_of(params: Mapping[str, object] | None) -> str | None:
    """The token of a websocket's connection_init payload: `authorization`, in any letter case."""
    for key, value in (params or {}).items():
        if key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


def write_check(
    introspector: Introspector, token: str, principal: Principal
) -> Callable[[], Awaitable[None]]:
    """What a context runs before a mutation when introspection is configured (`schema.active_token`)."""

    async def confirm() -> None:
        await introspector.confirm(token, principal.sub, principal.expires_at)

    return confirm


async def authenticate(verifier: TokenVerifier, authorization: str | None) -> Principal:
    token = bearer_token(authorization)
    try:
        return await verifier.verify(token)
    except KeysUnavailable:
        raise IssuerUnavailable("the token issuer's keys are not available yet; try again shortly") from None
    except InvalidToken as error:
        refused = Unauthenticated(f"invalid token: {error}")
        refused.revoked = error.reason == REVOKED
        raise refused from None
