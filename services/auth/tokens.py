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
from typing import Any

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

DEFAULT_ALGORITHMS: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA")
ASYMMETRIC_ALGORITHMS = frozenset(
    {*DEFAULT_ALGORITHMS, "ES512", "PS256", "PS384", "PS512", "Ed25519", "Ed448"}
)
"""What `algorithms` may name at all: public-key signatures only, so never `none`, never HS*."""

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

    async def verify(self, token: str) -> Principal:
        """The principal of a valid token; `InvalidToken` (and only that) for anything else."""
        if not isinstance(token, str) or not token:
            raise InvalidToken("missing token")
        if len(token) > self._max_token_bytes:
            raise InvalidToken("token too large")
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        cached = self._cached(digest)
        if cached is not None:
            return cached
        if not _COMPACT_JWS.fullmatch(token):
            raise InvalidToken("malformed token")
        alg, kid = self._read_header(token)
        key = await self._keys.get(kid)
        if key is None:
            if not self._keys.loaded:
                raise KeysUnavailable("signing keys unavailable")
            raise InvalidToken("unknown signing key")
        claims = self._decode(token, key, alg)
        principal = principal_from_claims(
            claims, project_id=self._project_id, policy=self._policy, admin_org_id=self._admin_org_id
        )
        self._remember(digest, _Cached(principal, float(claims["exp"]), kid))
        return principal

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

    def _decode(self, token: str, key: Any, alg: str) -> dict[str, Any]:
        now = int(self._clock())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self._leeway,
            iss={"essential": True, "value": self._issuer},
            aud={"essential": True, "values": self._audiences},
            exp={"essential": True},
            sub={"essential": True},
        )
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
