"""Only access tokens of our apps are credentials, revoked ones are refused even from the cache, and logout
tokens are judged by the spec's rules (the endpoint's attacks are in tests/test_backchannel_logout.py)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jwk

from services.auth.errors import InvalidToken
from services.auth.jwks import KeySetCache
from services.auth.logout_token import BACKCHANNEL_LOGOUT_EVENT, LogoutTokenVerifier
from services.auth.principal import Principal
from services.auth.revocation import Revocation
from services.auth.tokens import TokenVerifier
from tests.auth.conftest import PROJECT, Clock, sign
from tests.peers.jwks_server import JwksServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

Claims = Callable[..., dict[str, Any]]


async def reason(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    return info.value.reason


@pytest.mark.parametrize("claim", ["nonce", "at_hash", "c_hash"])
async def test_id_token_claims_are_refused(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, claim: str
) -> None:
    assert (
        await reason(verifier, sign(rsa_key, claims(**{claim: "x"}))) == "an ID token is not an access token"
    )


@pytest.mark.parametrize(
    ("client", "accepted"),
    [
        ({"client_id": "console"}, True),
        ({"azp": "console"}, True),
        ({"client_id": "console", "azp": "console"}, True),
        ({"client_id": "other-app"}, False),
        ({"client_id": "console", "azp": "other-app"}, False),
        ({"client_id": ["console"]}, False),
        ({}, False),
    ],
)
async def test_listed_client_ids_only(
    keys: KeySetCache,
    server: JwksServer,
    rsa_key: jwk.RSAKey,
    claims: Claims,
    clock: Clock,
    client: dict[str, Any],
    accepted: bool,
) -> None:
    verifier = TokenVerifier(
        keys=keys,
        issuer=server.issuer,
        audiences=PROJECT,
        project_id=PROJECT,
        clock=clock,
        client_ids=["console"],
    )
    token = sign(rsa_key, claims(**client))
    if accepted:
        assert (await verifier.verify(token)).sub == "user-1"
    else:
        assert await reason(verifier, token) == "token of another client"


async def test_a_logout_token_is_not_an_access_token(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    logout_shaped = claims(events={BACKCHANNEL_LOGOUT_EVENT: {}}, jti="j-1")
    assert await reason(verifier, sign(rsa_key, logout_shaped)) == "a logout token is not an access token"


async def test_without_client_ids_any_app_of_the_project_is_accepted(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    assert (await verifier.verify(sign(rsa_key, claims(client_id="other-app")))).sub == "user-1"


async def test_a_token_living_longer_than_revocations_are_kept_is_refused(
    keys: KeySetCache, server: JwksServer, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    verifier = TokenVerifier(
        keys=keys, issuer=server.issuer, audiences=PROJECT, project_id=PROJECT, clock=clock, max_lifetime=3600
    )
    now = int(clock())
    assert await verifier.verify(sign(rsa_key, claims(exp=now + 3600)))
    assert (
        await reason(verifier, sign(rsa_key, claims(exp=now + 3600 + 61)))
        == "token lives longer than allowed"
    )
    # Without `iat` the lifetime counts from now.
    assert (
        await reason(verifier, sign(rsa_key, claims(iat=None, exp=now + 4000)))
        == "token lives longer than allowed"
    )


class Revoked:
    def __init__(self) -> None:
        self.revocations: list[Revocation] = []

    def covers(self, principal: Principal) -> bool:
        return any(r.covers(principal) for r in self.revocations)


async def test_a_revoked_token_is_refused_even_from_the_cache(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    revoked = Revoked()
    verifier.revocations = revoked
    token = sign(rsa_key, claims())
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first  # cached
    at = datetime.fromtimestamp(clock(), UTC)
    revocation = Revocation(1, "user-1", None, None, at, at + timedelta(hours=1))
    revoked.revocations.append(revocation)
    assert await reason(verifier, token) == "token revoked"
    assert verifier.forget(revocation.covers) == 0  # the refusal dropped the entry already
    clock.advance(1)
    assert (await verifier.verify(sign(rsa_key, claims()))).sub == "user-1"  # issued after: works


async def test_forget_drops_the_covered_cache_entries(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    mine, theirs = sign(rsa_key, claims()), sign(rsa_key, claims(sub="user-2"))
    kept = await verifier.verify(theirs)
    dropped = await verifier.verify(mine)
    at = datetime.fromtimestamp(clock(), UTC)
    assert verifier.forget(Revocation(1, "user-1", None, None, at, at).covers) == 1
    assert await verifier.verify(theirs) is kept
    assert await verifier.verify(mine) is not dropped


# -- logout tokens (spec checks; over HTTP in tests/test_backchannel_logout.py) -----------------------


def logout_claims(clock: Clock, issuer: str, **changes: Any) -> dict[str, Any]:
    now = int(clock())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": "console",
        "iat": now,
        "exp": now + 120,
        "jti": "j-1",
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        "sub": "user-1",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"iss": "https://elsewhere"}, "wrong issuer"),
        ({"aud": PROJECT}, "wrong audience"),
        ({"iat": None}, "missing claim: iat"),
        ({"jti": None}, "missing claim: jti"),
        ({"events": None}, "missing claim: events"),
        ({"events": {BACKCHANNEL_LOGOUT_EVENT: "yes"}}, "not a back-channel logout event"),
        ({"events": [BACKCHANNEL_LOGOUT_EVENT]}, "not a back-channel logout event"),
        ({"nonce": "n"}, "a logout token must not carry a nonce"),
        ({"sub": None}, "a logout token names a sub or a sid"),
        ({"sub": 7}, "invalid claim: sub"),
        ({"sid": "s" * 300}, "invalid claim: sid"),
    ],
)
async def test_logout_token_rules(
    verifier: TokenVerifier,
    server: JwksServer,
    rsa_key: jwk.RSAKey,
    clock: Clock,
    changes: dict[str, Any],
    expected: str,
) -> None:
    logout = LogoutTokenVerifier(verifier, client_ids=["console"])
    with pytest.raises(InvalidToken) as info:
        await logout.verify(sign(rsa_key, logout_claims(clock, server.issuer, **changes)))
    assert info.value.reason == expected


async def test_a_sid_only_logout_token_is_accepted(
    verifier: TokenVerifier, server: JwksServer, rsa_key: jwk.RSAKey, clock: Clock
) -> None:
    logout = LogoutTokenVerifier(verifier, client_ids=["other", "console"])
    claims = await logout.verify(sign(rsa_key, logout_claims(clock, server.issuer, sub=None, sid="s-1")))
    assert (claims.sub, claims.sid, claims.jti) == (None, "s-1", "j-1")
    assert claims.issued_at == datetime.fromtimestamp(int(clock()), UTC)
