"""KeySetCache against a real issuer: caching, rotation, outages, floods of unknown kids, discovery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwk

from services.auth.errors import InvalidToken
from services.auth.jwks import KeySetCache, parse_key_set, parse_max_age
from services.auth.tokens import TokenVerifier
from tests.auth.conftest import Clock, sign
from tests.peers.jwks_server import DISCOVERED_JWKS_PATH, DISCOVERY_PATH, JWKS_PATH, JwksServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

Claims = Callable[..., dict[str, Any]]


async def test_first_get_loads_once(server: JwksServer, keys: KeySetCache, rsa_key: jwk.RSAKey) -> None:
    assert not keys.loaded
    assert await keys.get("rsa-1") is not None
    assert await keys.get("rsa-1") is not None
    assert keys.loaded
    assert server.fetches == 1


async def test_rotation(
    server: JwksServer,
    keys: KeySetCache,
    verifier: TokenVerifier,
    clock: Clock,
    rsa_key: jwk.RSAKey,
    rsa_key_2: jwk.RSAKey,
    claims: Claims,
) -> None:
    old_token = sign(rsa_key, claims(exp=int(clock()) + 3600))
    assert await verifier.verify(old_token)
    assert server.fetches == 1

    # A new key appears: the first token naming it triggers exactly one fetch.
    server.publish(rsa_key, rsa_key_2)
    clock.advance(31)
    new_token = sign(rsa_key_2, claims(sub="user-2"))
    assert (await verifier.verify(new_token)).sub == "user-2"
    assert (await verifier.verify(sign(rsa_key_2, claims(sub="user-3")))).sub == "user-3"
    assert server.fetches == 2

    # The old key is withdrawn: tokens signed with it die once the cached set is refreshed,
    # even those in the verified-token cache.
    server.publish(rsa_key_2)
    assert await verifier.verify(old_token)
    clock.advance(300)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        await verifier.verify(old_token)
    assert server.fetches == 3
    assert keys.kids == {"rsa-2"}
    assert await verifier.verify(new_token)


async def test_unknown_kid_refetch_is_rate_limited(
    server: JwksServer, keys: KeySetCache, clock: Clock
) -> None:
    await keys.refresh()
    assert await keys.get("nope") is None  # fetched just now: no refetch
    assert server.fetches == 1
    clock.advance(29.9)
    assert await keys.get("nope") is None
    assert server.fetches == 1
    clock.advance(0.1)
    assert await keys.get("nope") is None
    assert server.fetches == 2


async def test_flood_of_random_kids(
    server: JwksServer,
    keys: KeySetCache,
    verifier: TokenVerifier,
    clock: Clock,
    attacker_key: jwk.RSAKey,
    claims: Claims,
) -> None:
    await keys.refresh()
    assert server.fetches == 1
    for round_ in range(1, 4):
        clock.advance(30)
        tokens = [sign(attacker_key, claims(), kid=secrets.token_hex(8)) for _ in range(200)]
        results = await asyncio.gather(*(verifier.verify(t) for t in tokens), return_exceptions=True)
        assert all(isinstance(r, InvalidToken) and r.reason == "unknown signing key" for r in results)
        assert server.fetches == 1 + round_


async def test_single_flight_while_fetch_in_flight(server: JwksServer, keys: KeySetCache) -> None:
    server.gate = asyncio.Event()
    waiters = [asyncio.create_task(keys.get(f"kid-{n}")) for n in range(50)]
    waiters.append(asyncio.create_task(keys.get("rsa-1")))
    await server.request_seen.wait()
    await asyncio.sleep(0)  # let every waiter reach the shared fetch
    server.gate.set()
    found = await asyncio.gather(*waiters)
    assert server.fetches == 1
    assert found[-1] is not None
    assert all(key is None for key in found[:-1])


async def test_cancelled_caller_does_not_cancel_the_shared_fetch(
    server: JwksServer, keys: KeySetCache
) -> None:
    server.gate = asyncio.Event()
    impatient = asyncio.create_task(keys.get("rsa-1"))
    patient = asyncio.create_task(keys.get("rsa-1"))
    await server.request_seen.wait()
    impatient.cancel()
    server.gate.set()
    assert await patient is not None
    assert server.fetches == 1


async def test_endpoint_down_keeps_serving(
    server: JwksServer,
    keys: KeySetCache,
    verifier: TokenVerifier,
    clock: Clock,
    rsa_key: jwk.RSAKey,
    claims: Claims,
) -> None:
    assert await verifier.verify(sign(rsa_key, claims(sub="a")))
    await server.stop()
    clock.advance(301)  # cached set expired; refresh fails, stale keys keep working
    assert await verifier.verify(sign(rsa_key, claims(sub="b")))
    assert keys.loaded
    await server.start()
    server.status = 500
    clock.advance(31)
    assert await verifier.verify(sign(rsa_key, claims(sub="c")))
    assert server.fetches == 2  # the initial load and the one answered with 500
    server.status = 200
    assert await verifier.verify(sign(rsa_key, claims(sub="d")))
    assert server.fetches == 2  # the failed attempt started the rate-limit interval
    clock.advance(30)
    assert await verifier.verify(sign(rsa_key, claims(sub="e")))
    assert server.fetches == 3


@pytest.mark.parametrize(
    ("cache_control", "fresh_for"),
    [
        (None, 300),
        ("public, max-age=120", 120),
        ("max-age=5", 30),  # bounded below by min_max_age
        ("max-age=999999", 3600),  # bounded above by max_max_age
        ("no-store", 30),
        ("max-age=bogus", 300),
    ],
)
async def test_cache_control_max_age(
    server: JwksServer, keys: KeySetCache, clock: Clock, cache_control: str | None, fresh_for: int
) -> None:
    server.cache_control = cache_control
    await keys.refresh()
    clock.advance(fresh_for - 0.5)
    assert await keys.get("rsa-1") is not None
    assert server.fetches == 1
    clock.advance(0.5)
    assert await keys.get("rsa-1") is not None
    assert server.fetches == 2


async def test_discovery(server: JwksServer, clock: Clock, http: httpx.AsyncClient) -> None:
    async with KeySetCache(issuer=server.issuer + "/", http=http, clock=clock) as keys:
        assert await keys.get("rsa-1") is not None
        clock.advance(300)
        assert await keys.get("rsa-1") is not None
    assert server.requests[DISCOVERY_PATH] == 1  # remembered once found
    assert server.requests[DISCOVERED_JWKS_PATH] == 2


async def test_discovery_falls_back_to_zitadel_path(
    server: JwksServer, clock: Clock, http: httpx.AsyncClient
) -> None:
    server.discovery = False
    async with KeySetCache(issuer=server.issuer, http=http, clock=clock) as keys:
        assert await keys.get("rsa-1") is not None
    assert server.requests[JWKS_PATH] == 1


async def test_own_client_works_and_closes(server: JwksServer, clock: Clock) -> None:
    async with KeySetCache(jwks_url=server.jwks_url, clock=clock) as keys:
        assert await keys.refresh()
        assert keys.current("rsa-1") is not None
    assert keys.current("nope") is None


async def test_needs_a_source() -> None:
    with pytest.raises(ValueError, match="jwks_url or issuer"):
        KeySetCache()


@pytest.mark.filterwarnings("ignore:Key size should be")
async def test_parse_key_set_keeps_only_public_signing_keys(rsa_key: jwk.RSAKey) -> None:
    weak = jwk.generate_key("RSA", 1024, parameters={"kid": "weak"})
    document = {
        "keys": [
            rsa_key.as_dict(private=True),
            {**rsa_key.as_dict(private=False), "kid": "rsa-1"},  # duplicate kid: first wins
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**rsa_key.as_dict(private=False), "kid": "enc", "use": "enc"},
            {**rsa_key.as_dict(private=False), "kid": None},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "PQC", "kid": "future"},
            weak.as_dict(private=False),
            "not a key",
        ]
    }
    keys = parse_key_set(document)
    assert set(keys) == {"rsa-1"}
    assert not keys["rsa-1"].is_private


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("", None), ("max-age=60", 60.0), ('MAX-AGE="7", public', 7.0), ("no-cache", 0.0)],
)
async def test_parse_max_age(header: str | None, seconds: float | None) -> None:
    assert parse_max_age(header) == seconds


async def test_load_if_due_retries_a_missing_set_within_the_rate_limit(
    server: JwksServer, keys: KeySetCache, clock: Clock, rsa_key: jwk.RSAKey
) -> None:
    """The readiness loop's retry: every second it asks, but the issuer sees one request per interval."""
    server.status = 503
    assert not await keys.load_if_due()
    for _ in range(29):
        clock.advance(1)
        assert not await keys.load_if_due()
    assert server.fetches == 1
    server.status = 200
    clock.advance(1)
    assert await keys.load_if_due()
    assert server.fetches == 2
    clock.advance(3600)
    assert await keys.load_if_due()  # loaded once is enough: expiry is refreshed by lookups, not here
    assert server.fetches == 2
