"""RFC 7662 token introspection, asked before writes when configured (off by default).

A JWT stays valid until `exp` whatever happens at the issuer; introspection asks the issuer whether the
token is still active (the session not ended, the user not deactivated), at the price of a round trip.
So it guards only mutations, and each answer is kept per token for at most `ttl` seconds (never past the
token's expiry). Concurrent writes with the same token share one request (single-flight). An issuer that
does not answer makes writes fail with `IntrospectionUnavailable` (the gateway answers 503 + Retry-After);
reads never introspect, so they go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

import httpx
import orjson


class TokenInactive(Exception):
    """The issuer says the token is not active (signed out, revoked, user deactivated)."""


class IntrospectionUnavailable(Exception):
    """The issuer's introspection endpoint did not give a usable answer."""


class Introspector:
    def __init__(
        self,
        url: str,
        client_id: str,
        client_secret: str,
        *,
        http: httpx.AsyncClient | None = None,
        ttl: float = 30.0,
        cache_size: int = 10_000,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None
        self._ttl = ttl
        self._cache_size = cache_size
        self._clock = clock
        self._answers: OrderedDict[bytes, tuple[bool, float]] = OrderedDict()
        self._in_flight: dict[bytes, asyncio.Future[bool]] = {}
        self.requests = 0

    async def confirm(self, token: str, sub: str, expires_at: datetime) -> None:
        """Return if the token is active for `sub`; raise `TokenInactive` or `IntrospectionUnavailable`."""
        if not await self.active(token, sub, expires_at.timestamp()):
            raise TokenInactive("the token is no longer active")

    async def active(self, token: str, sub: str, expires_at: float) -> bool:
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        known = self._answers.get(digest)
        if known is not None and now < known[1]:
            return known[0]
        pending = self._in_flight.get(digest)
        if pending is not None:
            with contextlib.suppress(asyncio.CancelledError):
                return await asyncio.shield(pending)
            if not pending.cancelled():
                raise asyncio.CancelledError  # this caller was cancelled, not the shared request
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._in_flight[digest] = future
        try:
            answer = await self._ask(token, sub)
        except asyncio.CancelledError:
            future.cancel()  # waiters then ask for themselves
            raise
        except Exception as error:
            future.set_exception(error)
            future.exception()  # retrieved: with nobody else waiting, nothing logs "never retrieved"
            raise
        finally:
            del self._in_flight[digest]
        future.set_result(answer)
        self._remember(digest, answer, min(now + self._ttl, expires_at))
        return answer

    async def _ask(self, token: str, sub: str) -> bool:
        self.requests += 1
        try:
            response = await self._http.post(
                self._url, data={"token": token, "token_type_hint": "access_token"}, auth=self._auth
            )
        except httpx.HTTPError as error:
            raise IntrospectionUnavailable(f"introspection failed: {type(error).__name__}") from None
        if response.status_code != 200:
            raise IntrospectionUnavailable(f"introspection answered {response.status_code}")
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise IntrospectionUnavailable("introspection answered no JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
            raise IntrospectionUnavailable("introspection answered no 'active'")
        # An active answer about someone else is no answer about this token.
        return bool(body["active"]) and body.get("sub", sub) == sub

    def _remember(self, digest: bytes, answer: bool, until: float) -> None:
        if self._cache_size <= 0:
            return
        self._answers[digest] = (answer, until)
        self._answers.move_to_end(digest)
        while len(self._answers) > self._cache_size:
            self._answers.popitem(last=False)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()
