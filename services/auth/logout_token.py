"""OpenID Connect Back-Channel Logout 1.0, section 2.6: is this logout token one we must honour?

The token is checked with the access tokens' key set, header and algorithm rules (`TokenVerifier`),
then with the spec's own: `iss` is our issuer; `aud` names one of the logout client ids (the console
app ZITADEL sends the logout for); `iat`, `exp` and `jti` are present; `events` holds the back-channel
logout event as a JSON object; `sub` and/or `sid` is present; `nonce` is absent (so an ID token can never
pass for a logout token). `jti` is accepted once: the revocation store keeps it (`Replayed`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime

from services.auth.errors import InvalidToken
from services.auth.revocation import MAX_SUBJECT_CHARS
from services.auth.tokens import TokenVerifier

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass(frozen=True, slots=True)
class LogoutClaims:
    sub: str | None
    sid: str | None
    issued_at: datetime
    expires_at: datetime
    jti: str


class LogoutTokenVerifier:
    def __init__(self, verifier: TokenVerifier, *, client_ids: Collection[str]) -> None:
        if not client_ids or not all(client_ids):
            raise ValueError("a logout token verifier needs the client ids logout tokens are sent for")
        self._verifier = verifier
        self._client_ids = list(client_ids)

    async def verify(self, token: str) -> LogoutClaims:
        """The logout's claims; `InvalidToken` (a one-line reason) for anything the spec refuses."""
        registry = self._verifier.claims_registry(
            iss={"essential": True, "value": self._verifier.issuer},
            aud={"essential": True, "values": self._client_ids},
            iat={"essential": True},
            exp={"essential": True},
            jti={"essential": True},
            events={"essential": True},
        )
        claims = await self._verifier.signed_claims(token, registry)
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
            raise InvalidToken("not a back-channel logout event")
        if "nonce" in claims:
            raise InvalidToken("a logout token must not carry a nonce")
        sub, sid = _subject(claims.get("sub"), "sub"), _subject(claims.get("sid"), "sid")
        if sub is None and sid is None:
            raise InvalidToken("a logout token names a sub or a sid")
        jti = _subject(claims.get("jti"), "jti")
        assert jti is not None  # essential, and a string by joserfc's check
        return LogoutClaims(
            sub=sub,
            sid=sid,
            issued_at=_instant(claims["iat"], "iat"),
            expires_at=_instant(claims["exp"], "exp"),
            jti=jti,
        )


def _subject(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_SUBJECT_CHARS:
        raise InvalidToken(f"invalid claim: {name}")
    return value


def _instant(value: object, name: str) -> datetime:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken(f"invalid claim: {name}")
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken(f"invalid claim: {name}") from None
