"""TokenVerifier against the attacks of the issue, and what it must accept, over a real JWKS server."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import pytest
from joserfc import jwk

from services.auth.errors import InvalidToken, KeysUnavailable
from services.auth.jwks import KeySetCache
from services.auth.permissions import INSTANCE_CREATE, INSTANCE_READ_INTERNALS
from services.auth.tokens import TokenVerifier
from tests.auth.conftest import PROJECT, Clock, b64, raw_token, sign
from tests.peers.jwks_server import JwksServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

Claims = Callable[..., dict[str, Any]]


async def rejected(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    reason = info.value.reason
    assert "\n" not in reason
    assert len(reason) < 80
    return reason


async def test_valid_token_gives_principal(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    principal = await verifier.verify(sign(rsa_key, claims()))
    assert (principal.sub, principal.org_id, principal.name) == ("user-1", "org-a", "Ada")
    assert principal.has(INSTANCE_CREATE)
    assert not principal.has(INSTANCE_READ_INTERNALS)


async def test_alg_none(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    header = {"alg": "none", "kid": rsa_key.kid}
    assert await rejected(verifier, raw_token(header, claims(), b"")) == "malformed token"
    assert await rejected(verifier, raw_token(header, claims())) == "algorithm not allowed"
    assert await rejected(verifier, raw_token({**header, "alg": "None"}, claims())) == "algorithm not allowed"


async def test_hs256_with_public_key_as_secret(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    header = {"alg": "HS256", "kid": rsa_key.kid, "typ": "JWT"}
    unsigned = raw_token(header, claims()).rsplit(".", 1)[0]
    for secret in (rsa_key.as_pem(private=False), str(rsa_key.as_dict(private=False)["n"]).encode()):
        signature = hmac.new(secret, unsigned.encode(), hashlib.sha256).digest()
        assert await rejected(verifier, f"{unsigned}.{b64(signature)}") == "algorithm not allowed"


async def test_unknown_kid(verifier: TokenVerifier, attacker_key: jwk.RSAKey, claims: Claims) -> None:
    assert await rejected(verifier, sign(attacker_key, claims())) == "unknown signing key"


async def test_no_kid_rejected_even_with_a_single_key(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, keys: KeySetCache
) -> None:
    assert await rejected(verifier, sign(rsa_key, claims(), kid=None)) == "missing kid"
    assert len(keys.kids) == 0 or keys.kids == {rsa_key.kid}


async def test_tampered_payload(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    header, _, signature = sign(rsa_key, claims()).split(".")
    forged = sign(rsa_key, claims(sub="someone-else")).split(".")[1]
    assert await rejected(verifier, f"{header}.{forged}.{signature}") == "bad signature"


async def test_tampered_signature(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    token = sign(rsa_key, claims())
    middle = len(token) - 40
    flipped = "A" if token[middle] != "A" else "B"
    assert await rejected(verifier, token[:middle] + flipped + token[middle + 1 :]) == "bad signature"


async def test_expired(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock) -> None:
    now = int(clock())
    assert await rejected(verifier, sign(rsa_key, claims(exp=now - 61, iat=now - 700))) == "token expired"


async def test_leeway_accepts_small_skew(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    now = int(clock())
    assert await verifier.verify(sign(rsa_key, claims(exp=now - 30, nbf=now + 30, iat=now + 30)))


async def test_nbf_in_future(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    assert await rejected(verifier, sign(rsa_key, claims(nbf=int(clock()) + 120))) == "token not yet valid"


async def test_iat_in_future(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    reason = await rejected(verifier, sign(rsa_key, claims(iat=int(clock()) + 120)))
    assert reason == "token issued in the future"


@pytest.mark.parametrize("iss", ["https://evil.example", "http://127.0.0.1", "", 42])
async def test_wrong_iss(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, iss: object) -> None:
    await rejected(verifier, sign(rsa_key, claims(iss=iss)))


async def test_iss_must_match_exactly(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, server: JwksServer
) -> None:
    assert await rejected(verifier, sign(rsa_key, claims(iss=server.issuer + "/"))) == "wrong issuer"


@pytest.mark.parametrize("aud", ["other-project", ["a", "b"], [], f"{PROJECT}x", [f"x{PROJECT}"]])
async def test_wrong_aud(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, aud: object) -> None:
    await rejected(verifier, sign(rsa_key, claims(aud=aud)))


async def test_aud_as_string_or_list(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    assert await verifier.verify(sign(rsa_key, claims(aud=PROJECT)))
    assert await verifier.verify(sign(rsa_key, claims(aud=["client-9", PROJECT])))


@pytest.mark.parametrize("claim", ["exp", "aud", "iss", "sub", "urn:zitadel:iam:user:resourceowner:id"])
async def test_missing_required_claim(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, claim: str
) -> None:
    assert await rejected(verifier, sign(rsa_key, claims(**{claim: None}))) == f"missing claim: {claim}"


@pytest.mark.parametrize("exp", ["tomorrow", 1e300, float("inf"), True, None])
async def test_odd_exp_values(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, exp: object
) -> None:
    token = raw_token({"alg": "RS256", "kid": rsa_key.kid}, claims(exp=exp))
    await rejected(verifier, token)  # signature fails first here; the signed variant follows
    try:
        signed = sign(rsa_key, claims(exp=exp))
    except ValueError:  # joserfc refuses to serialise inf
        return
    await rejected(verifier, signed)


async def test_jku_x5u_headers_are_ignored(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, attacker_key: jwk.RSAKey, claims: Claims
) -> None:
    evil = {"jku": "https://evil.example/keys", "x5u": "https://evil.example/cert.pem"}
    assert await rejected(verifier, sign(attacker_key, claims(), **evil)) == "unknown signing key"
    with_our_kid = sign(attacker_key, claims(), kid=rsa_key.kid, **evil)
    assert await rejected(verifier, with_our_kid) == "bad signature"


async def test_embedded_jwk_header_is_ignored(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    # An EC key keeps the header small enough to reach the key lookup.
    attacker = jwk.generate_key("EC", "P-256", parameters={"kid": "evil-ec"})
    embedded = {"jwk": attacker.as_dict(private=False), "jku": "https://evil.example/keys"}
    token = sign(attacker, claims(), alg="ES256", **embedded)
    assert await rejected(verifier, token) == "unknown signing key"
    token = sign(attacker, claims(), alg="ES256", kid=rsa_key.kid, **embedded)
    assert await rejected(verifier, token) == "algorithm does not match key"
    # And with an RSA attacker key under our kid, it is our key that checks the signature.
    rsa_attacker = jwk.generate_key("RSA", 2048, parameters={"kid": str(rsa_key.kid)})
    token = sign(rsa_attacker, claims(), x5c=["MIIB"], jku="https://evil.example/keys")
    assert await rejected(verifier, token) == "bad signature"


async def test_other_issuers_key_with_a_kid_we_know(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    other = jwk.generate_key("RSA", 2048, parameters={"kid": str(rsa_key.kid)})
    assert await rejected(verifier, sign(other, claims())) == "bad signature"


async def test_crit_header_rejected(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    token = raw_token({"alg": "RS256", "kid": rsa_key.kid, "crit": ["exp"], "exp": 1}, claims())
    assert await rejected(verifier, token) == "unsupported header"


async def test_oversized_token(verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims) -> None:
    assert await rejected(verifier, sign(rsa_key, claims(padding="x" * 9000))) == "token too large"
    assert await rejected(verifier, "a" * 10_000_000) == "token too large"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        "a.b.c.d.e",
        "Bearer x.y.z",
        "é.é.é",
        "\x00.\x00.\x00",
        "e30.e30.e30",
        b64(b"[1,2]") + ".e30.sig",
        b64(b'"alg"') + ".e30.sig",
        b64(b'{"alg":"RS256","kid":7}') + ".e30.sig",
        b64(b'{"alg":"RS256","kid":"' + b"k" * 300 + b'"}') + ".e30.sig",
        b64(b'{"alg":["RS256"],"kid":"rsa-1"}') + ".e30.sig",
        b64(b'{"alg":"RS256","kid":"rsa-1"}') + "." + b64(b"not json") + ".sig",
        b64(b'{"alg":"RS256","kid":"rsa-1"}') + "." + b64(b"[]") + ".sig",
        b64(b'{"alg":"RS256","kid":"rsa-1"') + ".e30.sig",
        "eyJhbGciOiJSUzI1NiJ9.%%%.sig",
    ],
)
async def test_garbage(verifier: TokenVerifier, garbage: str) -> None:
    await rejected(verifier, garbage)


async def test_non_string_token(verifier: TokenVerifier) -> None:
    await rejected(verifier, None)  # type: ignore[arg-type]


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
async def test_es256_and_eddsa_keys(
    server: JwksServer, keys: KeySetCache, clock: Clock, claims: Claims
) -> None:
    ec = jwk.generate_key("EC", "P-256", parameters={"kid": "ec-1"})
    ed = jwk.generate_key("OKP", "Ed25519", parameters={"kid": "ed-1"})
    server.publish(ec, ed)
    verifier = TokenVerifier(
        keys=keys, issuer=server.issuer, audiences=PROJECT, project_id=PROJECT, clock=clock
    )
    assert (await verifier.verify(sign(ec, claims(), alg="ES256"))).sub == "user-1"
    assert (await verifier.verify(sign(ed, claims(), alg="EdDSA"))).sub == "user-1"
    # The header's alg must fit the key: type and curve.
    forged = raw_token({"alg": "RS256", "kid": "ec-1"}, claims())
    assert await rejected(verifier, forged) == "algorithm does not match key"
    forged = raw_token({"alg": "ES384", "kid": "ec-1"}, claims())
    assert await rejected(verifier, forged) == "algorithm does not match key"


async def test_key_alg_pins_the_algorithm(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims
) -> None:
    # rsa-1 is published with "alg": "RS256", so RS512 with the very same key is refused.
    unpinned = jwk.import_key({k: v for k, v in rsa_key.as_dict(private=True).items() if k != "alg"})
    token = sign(unpinned, claims(), alg="RS512", kid=rsa_key.kid)
    assert await rejected(verifier, token) == "algorithm does not match key"


async def test_symmetric_algorithms_cannot_be_configured(keys: KeySetCache) -> None:
    for algorithms in (["HS256"], ["RS256", "none"], []):
        with pytest.raises(ValueError, match="asymmetric"):
            TokenVerifier(keys=keys, issuer="i", audiences="a", project_id="p", algorithms=algorithms)


async def test_keys_never_loaded(server: JwksServer, rsa_key: jwk.RSAKey, clock: Clock) -> None:
    await server.stop()  # nobody listens on the port any more
    async with KeySetCache(jwks_url=server.jwks_url, clock=clock, timeout=2.0) as keys:
        verifier = TokenVerifier(keys=keys, issuer=server.issuer, audiences=PROJECT, project_id=PROJECT)
        with pytest.raises(KeysUnavailable):
            await verifier.verify(sign(rsa_key, {"sub": "x"}))
        assert not keys.loaded


async def test_cache_hit_until_exp(
    verifier: TokenVerifier, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    token = sign(rsa_key, claims(exp=int(clock()) + 100))
    first = await verifier.verify(token)
    assert await verifier.verify(token) is first
    clock.advance(99)
    assert await verifier.verify(token) is first
    clock.advance(1)  # at exp: never served from the cache, only re-verified within the leeway
    again = await verifier.verify(token)
    assert again is not first
    assert again == first
    clock.advance(60)
    assert await rejected(verifier, token) == "token expired"


async def test_cache_is_bounded(
    keys: KeySetCache, server: JwksServer, rsa_key: jwk.RSAKey, claims: Claims, clock: Clock
) -> None:
    verifier = TokenVerifier(
        keys=keys,
        issuer=server.issuer,
        audiences=PROJECT,
        project_id=PROJECT,
        cache_size=2,
        clock=clock,
    )
    tokens = [sign(rsa_key, claims(sub=f"user-{n}")) for n in range(3)]
    principals = [await verifier.verify(token) for token in tokens]
    assert await verifier.verify(tokens[2]) is principals[2]
    assert await verifier.verify(tokens[1]) is principals[1]
    assert await verifier.verify(tokens[0]) is not principals[0]  # evicted as least recently used
