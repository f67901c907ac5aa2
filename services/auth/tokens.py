"""Bearer token → `Principal`, with every check ZITADEL's contract needs and nothing a token can steer.

The header is read only to learn `alg` and `kid`. The key comes from our cached key set by `kid`
alone: `jku`, `x5u`, `jwk` and `x5c` headers are ignored, so a token can never bring its own key. A
token without `kid` is rejected even when the set holds a single key: ZITADEL always sends one, and
guessing would make a key swap at the issuer silently accept tokens meant for another key. The
algorithm must be on an asymmetric allow-list and fit the key (type, curve, the key's own `alg`), which
rules out `none` and the HS256-with-a-public-key confusion.

Verified principals are cached by the token's SHA-256 (bounded LRU), never past the token's `exp`, and
re-verified whenever the key set is due for a refresh, so a key removed at the issuer stops working
for cached tokens too.

Only access tokens are credentials: a token carrying ID-token claims (`nonce`, `at_hash`, `c_hash`) is
refused, and with `client_ids` set so is one whose `client_id`/`azp` names another app. A revoked token
(`services.auth.revocation`) is refused whether it was cached or not, and its cache entry dropped.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExceededSizeError,
    ExpiredTokenError,
    InvalidKeyCurveError,
    InvalidKeyTypeError,
    JoseError,
    KeyParameterError,
    MissingClaimError,
    SecurityWarning,
    UnsupportedAlgorithmError,
)
from joserfc.jws import JWSRegistry

from services.auth.errors import InvalidToken, KeysUnavailable
from services.auth.jwks import KeySetCache
from services.auth.permissions import DEFAULT_POLICY, Policy
from services.auth.principal import Principal, principal_from_claims

Clock = Callable[[], float]


class RevocationCheck(Protocol):
    def covers(self, principal: Principal) -> bool: ...


ID_TOKEN_CLAIMS = ("nonce", "at_hash", "c_hash")

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
ASYMMETRIC_ALGORITHMS = frozenset(
    {*DEFAULT_ALGORITHMS, "ES512", "PS256", "PS384", "PS512", "Ed25519", "Ed448"}
)
"""What `algorithms` may name at all: public-key signatures only, so never `none`, never HS*."""

REVOKED = "token revoked"
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_KID_CHARS = 256
_CLAIM_REASONS = {
    "iss": "wrong issuer",
    "aud": "wrong audience",
    "nbf": "token not yet valid",
    "iat": "token issued in the future",
    "exp": "invalid claim: exp",
    "sub": "invalid claim: sub",
}


@dataclass(frozen=True, slots=True)
class _Cached:
    principal: Principal
    exp: float
    kid: str


class TokenVerifier:
    """Checks ZITADEL JWT access tokens against one issuer, audience and key set.

    `audiences`: the token's `aud` must contain at least one of them (the project id or client id).
    `project_id` names the project-specific roles claim. `clock` is Unix seconds, injectable for tests.
    """

    def __init__(
        self,
        *,
        keys: KeySetCache,
        issuer: str,
        audiences: str | Collection[str],
        project_id: str,
        policy: Policy = DEFAULT_POLICY,
        admin_org_id: str | None = None,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        leeway: int = 60,
        max_token_bytes: int = 8192,
        cache_size: int = 10_000,
        clock: Clock = time.time,
        client_ids: Collection[str] = (),
        max_lifetime: float | None = None,
    ) -> None:
        audience_list = [audiences] if isinstance(audiences, str) else list(audiences)
        if not issuer or not audience_list or not all(audience_list):
            raise ValueError("TokenVerifier needs an issuer and at least one audience")
        unsafe = set(algorithms) - ASYMMETRIC_ALGORITHMS
        if unsafe or not algorithms:
            raise ValueError(f"algorithms must be asymmetric signature algorithms, not {sorted(unsafe)}")
        self._keys = keys
        self._issuer = issuer
        self._audiences = audience_list
        self._project_id = project_id
        self._policy = policy
        self._admin_org_id = admin_org_id
        # One registry per algorithm: decoding with exactly the header's alg lets joserfc check the
        # key fits that alg, and nothing else can slip through.
        self._registries = {
            alg: JWSRegistry(algorithms=[alg], strict_check_header=False) for alg in algorithms
        }
        self._leeway = leeway
        self._max_token_bytes = max_token_bytes
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, _Cached] = OrderedDict()
        self._clock = clock
        self._client_ids = frozenset(client_ids)
        self._max_lifetime = max_lifetime
        self.revocations: RevocationCheck | None = None
        """Set by the composition root once the revocations exist (they need the database)."""

    @property
    def issuer(self) -> str:
        return self._issuer

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; `InvalidToken` (and only that) for anything else."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("missing token")
        if len(token) > self._max_token_bytes:
            raise InvalidToken("token too large")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cached(digest)
        if cached is not None:
            self._refuse_revoked(digest, cached)
            return cached
        claims, kid = await self._verified(token, self._claims_registry())
        self._access_token_only(claims)
        principal = principal_from_claims(
            claims, project_id=self._project_id, policy=self._policy, admin_org_id=self._admin_org_id
        )
        self._refuse_revoked(digest, principal)
        self._remember(digest, _Cached(principal, float(claims["exp"]), kid))
        return principal

    async def signed_claims(self, token: str, registry: jwt.JWTClaimsRegistry) -> dict[str, Any]:
        """The claims of `token` checked with the same key set, header and algorithm rules as access
        tokens, and `registry` for the claims (a logout token has rules of its own). Never cached."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("missing token")
        if len(token) > self._max_token_bytes:
            raise InvalidToken("token too large")
        claims, _ = await self._verified(token, registry)
        return claims

    def forget(self, covered: Callable[[Principal], bool]) -> int:
        """Drop the cached principals `covered` selects (a revocation's); how many were dropped."""
        stale = [digest for digest, entry in self._cache.items() if covered(entry.principal)]
        for digest in stale:
            del self._cache[digest]
        return len(stale)

    def claims_registry(self, **rules: Any) -> jwt.JWTClaimsRegistry:
        """A registry with this verifier's clock and leeway (`rules` as joserfc takes them)."""
        return jwt.JWTClaimsRegistry(now=int(self._clock()), leeway=self._leeway, **rules)

    def _claims_registry(self) -> jwt.JWTClaimsRegistry:
        return self.claims_registry(
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "values": self._audiences},
            exp={"essential": True},
            sub={"essential": True},
        )

    async def _verified(self, token: str, registry: jwt.JWTClaimsRegistry) -> tuple[dict[str, Any], str]:
        if not _COMPACT_JWS.fullmatch(token):
            raise InvalidToken("malformed token")
        alg, kid = self._read_header(token)
        key = await self._keys.get(kid)
        if key is None:
            if not self._keys.loaded:
                raise KeysUnavailable("signing keys unavailable")
            raise InvalidToken("unknown signing key")
        return self._decode(token, key, alg, registry), kid

    def _access_token_only(self, claims: dict[str, Any]) -> None:
        # A revocation is pruned once `max_lifetime` has passed: a token living longer would outlive it.
        if self._max_lifetime is not None:
            iat, exp = claims.get("iat"), claims["exp"]
            start = iat if isinstance(iat, int | float) and not isinstance(iat, bool) else self._clock()
            if isinstance(exp, int | float) and exp - start > self._max_lifetime + self._leeway:
                raise InvalidToken("token lives longer than allowed")
        if any(name in claims for name in ID_TOKEN_CLAIMS):
            raise InvalidToken("an ID token is not an access token")
        if "events" in claims:  # a security event token, such as a logout token, whose aud may be ours too
            raise InvalidToken("a logout token is not an access token")
        if self._client_ids:
            clients = [claims[name] for name in ("client_id", "azp") if name in claims]
            if not clients or not all(isinstance(c, str) and c in self._client_ids for c in clients):
                raise InvalidToken("token of another client")

    def _refuse_revoked(self, digest: bytes, principal: Principal) -> None:
        if self.revocations is not None and self.revocations.covers(principal):
            self._cache.pop(digest, None)
            raise InvalidToken(REVOKED)

    def _read_header(self, token: str) -> tuple[str, str]:
        try:
            header = orjson.loads(_b64decode(token.split(".", 1)[0]))
        except (ValueError, orjson.JSONDecodeError):
            raise InvalidToken("malformed token") from None
        if not isinstance(header, dict):
            raise InvalidToken("malformed token")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._registries:
            raise InvalidToken("algorithm not allowed")
        # `crit` (and RFC 7797's unencoded payload) would change how the signature is checked.
        if "crit" in header or "b64" in header:
            raise InvalidToken("unsupported header")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_CHARS:
            raise InvalidToken("missing kid")
        return alg, kid

    def _decode(self, token: str, key: Any, alg: str, registry: jwt.JWTClaimsRegistry) -> dict[str, Any]:
        try:
            with warnings.catch_warnings():
                # joserfc flags "EdDSA" as superseded by RFC 9864; ZITADEL still signs with it.
                warnings.simplefilter("ignore", SecurityWarning)
                decoded = jwt.decode(token, key, algorithms=[alg], registry=self._registries[alg])
            registry.validate(decoded.claims)
        except BadSignatureError:
            raise InvalidToken("bad signature") from None
        except (InvalidKeyTypeError, InvalidKeyCurveError, KeyParameterError, UnsupportedAlgorithmError):
            raise InvalidToken("algorithm does not match key") from None
        except ExpiredTokenError:
            raise InvalidToken("token expired") from None
        except MissingClaimError as exc:
            raise InvalidToken(f"missing claim: {_first_claim(exc.claim)}") from None
        except ClaimError as exc:
            raise InvalidToken(_CLAIM_REASONS.get(exc.claim, "invalid claims")) from None
        except ExceededSizeError:
            raise InvalidToken("token too large") from None
        except JoseError:
            raise InvalidToken("malformed token") from None
        except Exception:  # whatever a hostile token provokes in parsing, the answer is one 401
            raise InvalidToken("malformed token") from None
        return decoded.claims

    def _cached(self, digest: bytes) -> Principal | None:
        entry = self._cache.get(digest)
        if entry is None:
            return None
        if self._clock() >= entry.exp or self._keys.current(entry.kid) is None:
            del self._cache[digest]
            return None
        self._cache.move_to_end(digest)
        return entry.principal

    def _remember(self, digest: bytes, entry: _Cached) -> None:
        if self._cache_size <= 0 or self._clock() >= entry.exp:
            return
        self._cache[digest] = entry
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _first_claim(claims: str) -> str:
    # joserfc joins several missing claims with commas; naming one is enough and keeps it one word.
    return sorted(claims.split(","))[0]
