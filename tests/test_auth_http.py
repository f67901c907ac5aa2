"""Authentication at the HTTP edge: every bad token is a one-line 401 before any GraphQL work.

The attack table is table-driven (one test walks every case, naming it in each assertion) so it costs
one database per backend, not one per case. Key rotation and a JWKS outage go through a real uvicorn
gateway and a real JWKS server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwk, jwt

from gateway.bootstrap import Runtime
from services.auth.dev_issuer import load_or_create_key
from tests.auth.conftest import b64, raw_token
from tests.conftest import AppFactory, Issuer
from tests.peers.jwks_server import JwksServer
from tests.support.servers import serve

CHALLENGE = 'Bearer error="invalid_token"'
ME = {"query": "{ me { sub } }"}
INTROSPECTION = "{ __schema { queryType { name } } }"


def payload_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return claims


def private_key(issuer: Issuer) -> jwk.RSAKey:
    """The dev issuer's signing key, read from where it keeps it, to forge tokens it would not issue."""
    return load_or_create_key(issuer.dev.key_path)


def forge(key: jwk.Key, claims: dict[str, Any], **header: Any) -> str:
    """Sign `claims` with `key`; header entries of None are left out (kid=None: no kid)."""
    full = {"typ": "JWT", "alg": "RS256", "kid": key.kid, **header}
    alg = full["alg"]
    return jwt.encode({k: v for k, v in full.items() if v is not None}, claims, key, algorithms=[alg])


def claims(issuer: Issuer, **overrides: Any) -> dict[str, Any]:
    """The claims of a valid user token; an override of None drops the claim."""
    base = payload_of(issuer.token("user"))
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def hs256_with_public_key(issuer: Issuer) -> str:
    """The classic confusion: HMAC keyed with the RSA public key a server might reuse as a secret."""
    public_pem = jwk.RSAKey.import_key(issuer.dev.jwks()["keys"][0]).as_pem(private=False)
    header = b64(orjson.dumps({"alg": "HS256", "typ": "JWT", "kid": issuer.dev.kid}))
    body = b64(orjson.dumps(claims(issuer)))
    signature = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def tamper_payload(token: str, issuer: Issuer) -> str:
    header, _, signature = token.split(".")
    escalated = b64(orjson.dumps(claims(issuer, sub="admin-1", exp=int(time.time()) + 86_400)))
    return f"{header}.{escalated}.{signature}"


def tamper_signature(token: str) -> str:
    header, body, signature = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{header}.{body}.{b64(bytes(raw))}"


@dataclass(frozen=True)
class Attack:
    name: str
    authorization: Callable[[Issuer, jwk.RSAKey, JwksServer], str | None]
    reason: str


def bearer(make: Callable[[Issuer, jwk.RSAKey, JwksServer], str]) -> Callable[..., str]:
    return lambda issuer, evil, rogue: f"Bearer {make(issuer, evil, rogue)}"


NOW = int(time.time())
ATTACKS = [
    Attack("no Authorization header", lambda i, e, r: None, "a bearer token is required"),
    Attack(
        "Basic scheme",
        lambda i, e, r: "Basic " + base64.b64encode(b"admin:admin").decode(),
        "the Authorization header must be 'Bearer <token>'",
    ),
    Attack("empty bearer", lambda i, e, r: "Bearer ", "the Authorization header must be 'Bearer <token>'"),
    Attack("bare scheme", lambda i, e, r: "Bearer", "the Authorization header must be 'Bearer <token>'"),
    Attack("garbage", bearer(lambda i, e, r: "garbage"), "invalid token: malformed token"),
    Attack("three garbage segments", bearer(lambda i, e, r: "a.b.c"), "invalid token: malformed token"),
    Attack(
        "alg none, empty signature",
        bearer(lambda i, e, r: raw_token({"alg": "none", "kid": i.dev.kid}, claims(i), b"")),
        "invalid token: malformed token",
    ),
    Attack(
        "alg none, some signature",
        bearer(lambda i, e, r: raw_token({"alg": "none", "kid": i.dev.kid}, claims(i))),
        "invalid token: algorithm not allowed",
    ),
    Attack(
        "HS256 keyed with the public key",
        bearer(lambda i, e, r: hs256_with_public_key(i)),
        "invalid token: algorithm not allowed",
    ),
    Attack("unknown kid", bearer(lambda i, e, r: forge(e, claims(i))), "invalid token: unknown signing key"),
    Attack(
        "no kid",
        bearer(lambda i, e, r: forge(private_key(i), claims(i), kid=None)),
        "invalid token: missing kid",
    ),
    Attack(
        "tampered payload",
        bearer(lambda i, e, r: tamper_payload(i.token("viewer"), i)),
        "invalid token: bad signature",
    ),
    Attack(
        "tampered signature",
        bearer(lambda i, e, r: tamper_signature(i.token("admin"))),
        "invalid token: bad signature",
    ),
    Attack("expired", bearer(lambda i, e, r: i.token("admin", ttl=-120)), "invalid token: token expired"),
    Attack(
        "nbf in the future",
        bearer(lambda i, e, r: forge(private_key(i), claims(i, nbf=NOW + 3600, exp=NOW + 7200))),
        "invalid token: token not yet valid",
    ),
    Attack(
        "wrong iss",
        bearer(lambda i, e, r: forge(private_key(i), claims(i, iss="https://evil.example"))),
        "invalid token: wrong issuer",
    ),
    Attack(
        "wrong aud",
        bearer(lambda i, e, r: forge(private_key(i), claims(i, aud=["another-project"]))),
        "invalid token: wrong audience",
    ),
    Attack(
        "missing exp",
        bearer(lambda i, e, r: forge(private_key(i), claims(i, exp=None))),
        "invalid token: missing claim: exp",
    ),
    Attack(
        "jku header pointing at the attacker's key set",
        bearer(lambda i, e, r: forge(e, claims(i), jku=r.jwks_url)),
        "invalid token: unknown signing key",
    ),
    Attack(
        "jwk header carrying the attacker's key",
        bearer(lambda i, e, r: forge(e, claims(i), jwk=e.as_dict(private=False))),
        "invalid token: unknown signing key",
    ),
    Attack(
        # joserfc caps the protected header at 512 bytes, which an embedded RSA key exceeds.
        "jwk header carrying the attacker's RSA key under our kid",
        bearer(lambda i, e, r: forge(with_kid(e, i.dev.kid), claims(i), jwk=public(with_kid(e, i.dev.kid)))),
        "invalid token: token too large",
    ),
    Attack(
        "jwk header carrying the attacker's EC key under our kid",
        bearer(lambda i, e, r: forge(small(i.dev.kid), claims(i), alg="ES256", jwk=public(small(i.dev.kid)))),
        "invalid token: algorithm does not match key",
    ),
    Attack(
        "another issuer's key with a kid we know",
        bearer(lambda i, e, r: forge(with_kid(e, i.dev.kid), claims(i))),
        "invalid token: bad signature",
    ),
    Attack(
        "crit header",
        bearer(
            lambda i, e, r: raw_token(
                {"alg": "RS256", "kid": i.dev.kid, "crit": ["exp"], "exp": 1}, claims(i)
            )
        ),
        "invalid token: unsupported header",
    ),
    Attack(
        "oversized (validly signed)",
        bearer(lambda i, e, r: forge(private_key(i), claims(i, padding="x" * 9000))),
        "invalid token: token too large",
    ),
    Attack(
        "no org claim",
        bearer(
            lambda i, e, r: forge(
                private_key(i), claims(i, **{"urn:zitadel:iam:user:resourceowner:id": None})
            )
        ),
        "invalid token: missing claim: urn:zitadel:iam:user:resourceowner:id",
    ),
]


def with_kid(key: jwk.RSAKey, kid: str) -> jwk.RSAKey:
    return jwk.RSAKey.import_key({**key.as_dict(private=True), "kid": kid})


def public(key: jwk.Key) -> dict[str, Any]:
    return dict(key.as_dict(private=False))


_EC = jwk.generate_key("EC", "P-256")


def small(kid: str) -> jwk.ECKey:
    """An attacker's EC key (small enough to embed in a header) claiming our kid."""
    return jwk.ECKey.import_key({**_EC.as_dict(private=True), "kid": kid})


def assert_unauthenticated(response: httpx.Response, reason: str, case: str, *secrets: str) -> None:
    assert response.status_code == 401, (case, response.status_code, response.text)
    assert response.headers["www-authenticate"] == CHALLENGE, case
    media_type = response.headers["content-type"].partition(";")[0]
    assert media_type in ("application/json", "application/graphql-response+json"), case
    body = response.json()
    assert body == {"errors": [{"message": reason, "extensions": {"code": "UNAUTHENTICATED"}}]}, case
    assert "\n" not in response.text, case
    for secret in secrets:
        assert secret not in response.text, (case, "names a key or secret")


@pytest.fixture
def evil() -> jwk.RSAKey:
    return jwk.generate_key("RSA", 2048, parameters={"kid": "evil-1", "use": "sig", "alg": "RS256"})


async def test_every_attack_is_a_one_line_401(
    anonymous: httpx.AsyncClient, issuer: Issuer, evil: jwk.RSAKey
) -> None:
    async with JwksServer() as rogue:
        rogue.publish(evil)
        secrets = [issuer.dev.kid, str(evil.kid), "BEGIN", str(evil.as_dict()["n"])[:40]]
        for attack in ATTACKS:
            authorization = attack.authorization(issuer, evil, rogue)
            headers = {"Authorization": authorization} if authorization is not None else {}
            response = await anonymous.post("/graphql", json=ME, headers=headers)
            token = (authorization or "").partition(" ")[2]
            leaks = [*secrets, token] if len(token) > 8 else secrets
            assert_unauthenticated(response, attack.reason, attack.name, *leaks)
        assert rogue.fetches == 0, "a token header made the gateway fetch keys from elsewhere"


async def test_the_same_tokens_work_when_valid(anonymous: httpx.AsyncClient, issuer: Issuer) -> None:
    """The table's forgeries differ from valid tokens only in what they break."""
    for token in (issuer.token("user"), forge(private_key(issuer), claims(issuer))):
        response = await anonymous.post("/graphql", json=ME, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.text
        assert response.json() == {"data": {"me": {"sub": "user-1"}}}
    lower = await anonymous.post(
        "/graphql", json=ME, headers={"Authorization": f"bearer {issuer.token('user')}"}
    )
    assert lower.status_code == 200, "the scheme is case-insensitive (RFC 7235)"


async def test_401_comes_before_any_graphql_work(anonymous: httpx.AsyncClient) -> None:
    """A broken document, a mutation, a GET: without a token each is 401, never a GraphQL answer."""
    requests = [
        ("POST", {"json": {"query": "{ not valid"}}),
        ("POST", {"json": {"query": 'mutation { deleteInstance(id: "x") { userErrors { code } } }'}}),
        (
            "POST",
            {"json": {"query": "{ me { sub } }"}, "headers": {"Accept": "application/graphql-response+json"}},
        ),
        ("GET", {"params": {"query": "{ me { sub } }"}}),
    ]
    for method, options in requests:
        response = await anonymous.request(method, "/graphql", **options)  # type: ignore[arg-type]
        assert_unauthenticated(response, "a bearer token is required", f"{method} {options}")


async def test_public_endpoints_need_no_token(anonymous: httpx.AsyncClient, runtime: Runtime) -> None:
    # Start-up loads the issuer's keys (a probe never fetches them); this app's runtime was not started.
    assert await runtime.refresh_keys()
    page = await anonymous.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    health = await anonymous.get("/healthz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = await anonymous.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"


async def test_introspection_needs_a_token_by_default(anonymous: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await anonymous.post("/graphql", json={"query": INTROSPECTION})
    assert_unauthenticated(response, "a bearer token is required", "introspection")
    # With a token, introspection is a permission of its own (tests/test_discovery.py).
    allowed = await anonymous.post(
        "/graphql", json={"query": INTROSPECTION}, headers=issuer.headers("operator")
    )
    assert allowed.json() == {"data": {"__schema": {"queryType": {"name": "Query"}}}}


async def test_public_introspection_serves_introspection_only(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(public_introspection=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        for query in (
            INTROSPECTION,
            "{ __typename }",
            '{ __type(name: "Instance") { name } }',
            "query A { ...F } fragment F on Query { __schema { queryType { name } } }",
        ):
            response = await client.post("/graphql", json={"query": query})
            assert response.status_code == 200, (query, response.text)
            assert "errors" not in response.json(), query
        for query in (
            "{ __schema { queryType { name } } instances { nodes { id } } }",
            "{ __typename me { sub } }",
            "query A { ...F } fragment F on Query { __typename instances { nodes { ipAddress } } }",
            '{ __typename ... on Query { instance(id: "x") { id } } }',
            "query A { __typename } mutation B { syncInstances { transitions } }",
            "{ not valid",
        ):
            response = await client.post("/graphql", json={"query": query})
            assert_unauthenticated(response, "a bearer token is required", query)
        # A bad token is no better than none, but introspection stays public.
        garbage = await client.post(
            "/graphql", json={"query": INTROSPECTION}, headers={"Authorization": "Bearer x"}
        )
        assert garbage.status_code == 200


# -- the running gateway against a real issuer ---------------------------------------------------


def rotated_key(kid: str) -> jwk.RSAKey:
    return jwk.generate_key("RSA", 2048, parameters={"kid": kid, "use": "sig", "alg": "RS256"})


async def test_jwks_outage_and_key_rotation_through_the_running_gateway(
    make_app: AppFactory, issuer: Issuer
) -> None:
    app = await make_app(oidc_jwks_min_refresh_seconds=1)
    old = private_key(issuer)
    new = rotated_key("rotated-1")
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:

        async def ask(token: str) -> httpx.Response:
            return await http.post("/graphql", json=ME, headers={"Authorization": f"Bearer {token}"})

        first = await ask(issuer.token("user"))
        assert first.json() == {"data": {"me": {"sub": "user-1"}}}
        assert issuer.server.fetches == 1

        await issuer.server.stop()
        # A token never seen before still verifies: the key comes from the cache, not the issuer.
        cached = await ask(issuer.token("viewer"))
        assert cached.json() == {"data": {"me": {"sub": "viewer-1"}}}
        # A kid nobody published is a plain 401, even with the issuer down: never a 5xx.
        unknown = await ask(forge(new, claims(issuer)))
        assert_unauthenticated(unknown, "invalid token: unknown signing key", "kid while the issuer is down")

        # ZITADEL rotates: the new key is published and the old one withdrawn.
        issuer.server.publish(new)
        await issuer.server.start()
        await asyncio.sleep(1.1)  # past the refetch rate limit (1 s here)
        rotated = await ask(forge(new, claims(issuer, sub="rotated-user")))
        assert rotated.status_code == 200, rotated.text
        assert rotated.json() == {"data": {"me": {"sub": "rotated-user"}}}
        assert issuer.server.fetches == 2  # the first load and the refetch for the new kid
        # The withdrawn key no longer verifies anything, not even a token accepted before.
        withdrawn = await ask(forge(old, claims(issuer)))
        assert_unauthenticated(withdrawn, "invalid token: unknown signing key", "withdrawn key")


async def test_issuer_down_from_the_start_is_503_not_401(make_app: AppFactory, issuer: Issuer) -> None:
    """The token cannot be judged yet: a retryable 503, not a 401 that would sign the user out."""
    await issuer.server.stop()
    app = await make_app()
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/graphql", json=ME, headers=issuer.headers("admin"))
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert response.json() == {
            "errors": [
                {
                    "message": "the token issuer's keys are not available yet; try again shortly",
                    "extensions": {"code": "SERVICE_UNAVAILABLE"},
                }
            ]
        }
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["jwks"] == "failing"
