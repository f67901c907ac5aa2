"""Shared peers for auth tests: a real JWKS server, keys, a controllable clock, token builders.

Test modules that use the server run in one event loop per module:
`pytestmark = pytest.mark.asyncio(loop_scope="module")`.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
import pytest_asyncio
from joserfc import jwk, jwt

from services.auth.jwks import KeySetCache
from services.auth.principal import ORG_CLAIM, ROLES_CLAIM
from services.auth.tokens import TokenVerifier
from tests.peers.jwks_server import JwksServer

PROJECT = "project-1"
ORG = "org-a"
START = 1_700_000_000.0


class Clock:
    """Seconds that move only when a test says so; serves as both wall and monotonic clock."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"sig") -> str:
    """A token assembled by hand, for shapes a JOSE library refuses to produce."""
    return ".".join((b64(orjson.dumps(header)), b64(orjson.dumps(claims)), b64(signature)))


def make_claims(clock: Clock, issuer: str, **overrides: Any) -> dict[str, Any]:
    """Valid ZITADEL-shaped claims; an override of None removes the claim."""
    now = int(clock())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": [PROJECT, "client-1"],
        "sub": "user-1",
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "name": "Ada",
        "email": "ada@example.com",
        ORG_CLAIM: ORG,
        ROLES_CLAIM: {"user": {ORG: "a.example.com"}},
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def sign(key: jwk.Key, claims: dict[str, Any], *, alg: str = "RS256", **header: Any) -> str:
    """Sign with joserfc; header overrides of None remove the field (e.g. kid=None)."""
    full = {"alg": alg, "kid": key.kid, **header}
    full = {name: value for name, value in full.items() if value is not None}
    return jwt.encode(full, claims, key, algorithms=[alg])


@pytest.fixture(scope="session")
def rsa_key() -> jwk.RSAKey:
    return jwk.generate_key("RSA", 2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="session")
def rsa_key_2() -> jwk.RSAKey:
    return jwk.generate_key("RSA", 2048, parameters={"kid": "rsa-2", "use": "sig", "alg": "RS256"})


@pytest.fixture(scope="session")
def attacker_key() -> jwk.RSAKey:
    return jwk.generate_key("RSA", 2048, parameters={"kid": "evil-1"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_server() -> AsyncIterator[JwksServer]:
    """One issuer per test module (starting uvicorn costs more than most tests)."""
    async with JwksServer() as peer:
        yield peer


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="module")
async def server(shared_server: JwksServer, rsa_key: jwk.RSAKey) -> JwksServer:
    """The module's issuer, reset to healthy and publishing `rsa_key`."""
    await shared_server.start()
    shared_server.reset(rsa_key)
    return shared_server


@pytest_asyncio.fixture(loop_scope="module")
async def keys(server: JwksServer, clock: Clock, http: httpx.AsyncClient) -> AsyncIterator[KeySetCache]:
    async with KeySetCache(jwks_url=server.jwks_url, http=http, clock=clock) as cache:
        yield cache


@pytest.fixture
def verifier(keys: KeySetCache, server: JwksServer, clock: Clock) -> TokenVerifier:
    return TokenVerifier(keys=keys, issuer=server.issuer, audiences=PROJECT, project_id=PROJECT, clock=clock)


@pytest.fixture
def claims(clock: Clock, server: JwksServer) -> Callable[..., dict[str, Any]]:
    def build(**overrides: Any) -> dict[str, Any]:
        return make_claims(clock, server.issuer, **overrides)

    return build
