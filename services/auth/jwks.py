"""The issuer's signing keys, fetched over HTTP and cached, so tokens verify without a round trip.

Keys are looked up only by `kid`. The set is cached for the response's `Cache-Control: max-age`
(bounded), refetched when it expires, and refetched early when a token names a `kid` we do not know,
which is how ZITADEL's key rotation reaches us without a restart. Early refetches are single-flight
(concurrent callers share one request) and rate-limited (one per `min_refresh_interval`), so a flood of
tokens with made-up `kid`s costs the issuer at most one request per interval. When the endpoint fails,
the keys we already have keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import httpx
import orjson
from joserfc import jwk
from joserfc.errors import JoseError

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

SIGNING_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class FetchError(Exception):
    """One fetch of the key set failed; logged, never raised to callers of `get`."""


class KeySetCache:
    """The cached JWKS of one issuer.

    `jwks_url` wins when given; otherwise the issuer's discovery document names `jwks_uri`, and if that
    cannot be read we fall back to ZITADEL's fixed `{issuer}/oauth/v2/keys`. Pass `http` to share a
    client (it is then not closed here). `clock` is monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        *,
        jwks_url: str | None = None,
        issuer: str | None = None,
        http: httpx.AsyncClient | None = None,
        default_max_age: float = 300.0,
        min_max_age: float = 30.0,
        max_max_age: float = 3600.0,
        min_refresh_interval: float = 30.0,
        timeout: float = 5.0,
        max_response_bytes: int = 1_048_576,
        clock: Clock = time.monotonic,
    ) -> None:
        if not jwks_url and not issuer:
            raise ValueError("KeySetCache needs jwks_url or issuer")
        if not 0 <= min_max_age <= max_max_age:
            raise ValueError("need 0 <= min_max_age <= max_max_age")
        self._jwks_url = jwks_url
        self._issuer = issuer.rstrip("/") if issuer else None
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)
        self._default_max_age = default_max_age
        self._min_max_age = min_max_age
        self._max_max_age = max_max_age
        self._min_refresh_interval = min_refresh_interval
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        self._keys: dict[str, jwk.Key] = {}
        self._loaded = False
        self._expires_at = 0.0
        self._last_attempt: float | None = None
        self._discovered_url: str | None = None
        self._inflight: asyncio.Task[None] | None = None

    @property
    def loaded(self) -> bool:
        """Whether a key set was ever fetched (for /readyz); stays true while serving stale keys."""
        return self._loaded

    @property
    def http(self) -> httpx.AsyncClient:
        """The client key sets are fetched with, for the gateway's metrics and tracing hooks."""
        return self._http

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def current(self, kid: str) -> jwk.Key | None:
        """The key for `kid` if we hold it and the set is not due for a refresh; never fetches.

        Lets callers that cache verification results notice a rotation: once the set is due, they
        go through `get`, which refreshes it and drops removed keys.
        """
        if not self._loaded or self._clock() >= self._expires_at:
            return None
        return self._keys.get(kid)

    async def get(self, kid: str) -> jwk.Key | None:
        """The key for `kid`, fetching when the set expired or the `kid` is new (within the rate limit)."""
        if (not self._loaded or self._clock() >= self._expires_at) and self._may_fetch():
            await self._fetch_shared()
        key = self._keys.get(kid)
        if key is None and self._may_fetch():
            await self._fetch_shared()
            key = self._keys.get(kid)
        return key

    async def refresh(self) -> bool:
        """Fetch now, ignoring the rate limit (start-up warm-up); true when the set is loaded."""
        await self._fetch_shared()
        return self._loaded

    async def load_if_due(self) -> bool:
        """While no set was ever loaded, fetch within the rate limit (the readiness loop's retry, so a
        replica that started during an issuer outage becomes ready without any request or probe
        fetching); true when a set is loaded."""
        if not self._loaded and self._may_fetch():
            await self._fetch_shared()
        return self._loaded

    async def aclose(self) -> None:
        if self._inflight is not None:
            self._inflight.cancel()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> KeySetCache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _may_fetch(self) -> bool:
        if self._inflight is not None or self._last_attempt is None:
            return True
        return self._clock() - self._last_attempt >= self._min_refresh_interval

    async def _fetch_shared(self) -> None:
        # No await between the check and the assignment: one event loop, so one fetch in flight.
        if self._inflight is None:
            self._last_attempt = self._clock()
            self._inflight = asyncio.create_task(self._fetch_once())
        # Shielded: a caller that gives up (client disconnect) must not cancel the others' fetch.
        await asyncio.shield(self._inflight)

    async def _fetch_once(self) -> None:
        try:
            url = await self._resolve_url()
            body, headers = await self._get(url)
            keys = parse_key_set(body)
        except FetchError as exc:
            logger.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), exc)
            return
        except Exception:  # a bug here must not turn every request into a 500
            logger.exception("JWKS fetch failed unexpectedly, keeping %d cached keys", len(self._keys))
            return
        finally:
            self._inflight = None
        if not keys:
            logger.warning("JWKS at %s holds no usable signing keys", url)
        self._keys = keys
        self._loaded = True
        self._expires_at = self._clock() + self._ttl(headers.get("cache-control"))

    async def _resolve_url(self) -> str:
        if self._jwks_url:
            return self._jwks_url
        if self._discovered_url:
            return self._discovered_url
        fallback = f"{self._issuer}/oauth/v2/keys"
        try:
            document, _ = await self._get(f"{self._issuer}/.well-known/openid-configuration")
        except FetchError as exc:
            logger.warning("OIDC discovery failed, using %s: %s", fallback, exc)
            return fallback
        jwks_uri = document.get("jwks_uri") if isinstance(document, Mapping) else None
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            logger.warning("OIDC discovery has no usable jwks_uri, using %s", fallback)
            return fallback
        self._discovered_url = jwks_uri
        return jwks_uri

    async def _get(self, url: str) -> tuple[Any, httpx.Headers]:
        try:
            async with self._http.stream("GET", url, headers={"Accept": "application/json"}) as response:
                if response.status_code != 200:
                    raise FetchError(f"{url}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self._max_response_bytes:
                        raise FetchError(f"{url}: response larger than {self._max_response_bytes} bytes")
                headers = response.headers
        except httpx.HTTPError as exc:
            raise FetchError(f"{url}: {type(exc).__name__}") from None
        try:
            return orjson.loads(body), headers
        except orjson.JSONDecodeError:
            raise FetchError(f"{url}: not JSON") from None

    def _ttl(self, cache_control: str | None) -> float:
        max_age = parse_max_age(cache_control)
        ttl = self._default_max_age if max_age is None else max_age
        return min(max(ttl, self._min_max_age), self._max_max_age)


def parse_max_age(cache_control: str | None) -> float | None:
    """Seconds from `Cache-Control` (`no-cache`/`no-store` count as 0), or None when it says nothing."""
    if not cache_control:
        return None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-cache", "no-store"):
            return 0.0
        if name == "max-age":
            try:
                return max(0.0, float(int(value.strip().strip('"'))))
            except ValueError:
                return None
    return None


def parse_key_set(document: object) -> dict[str, jwk.Key]:
    """`kid` → public signing key, from a JWKS document.

    Keys without a `kid`, not for signing, symmetric (`oct`: an HMAC secret must never verify a token
    from a public set), weak RSA, or not understood are skipped rather than failing the set, so one odd
    key does not lock everyone out. Private members are dropped so only public keys are ever held.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise FetchError("not a JWKS document")
    keys: dict[str, jwk.Key] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not kid or kid in keys:
            continue
        if entry.get("kty") not in SIGNING_KEY_TYPES or entry.get("use", "sig") != "sig":
            continue
        public = {name: value for name, value in entry.items() if name not in _PRIVATE_MEMBERS}
        try:
            key = jwk.import_key(public)
        except (JoseError, ValueError, TypeError, KeyError):
            logger.warning("JWKS key %r could not be imported, skipped", kid)
            continue
        if key.key_type == "RSA" and getattr(key.raw_value, "key_size", 0) < MIN_RSA_BITS:
            logger.warning("JWKS key %r is RSA below %d bits, skipped", kid, MIN_RSA_BITS)
            continue
        keys[kid] = key
    return keys
