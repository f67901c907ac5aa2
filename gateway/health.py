"""Probes: /healthz says the process runs; /readyz says it can serve (its dependencies answer).

/readyz is unauthenticated and polled by the kubelet (and by anyone who reaches the port), so it never
does work per call: it answers from a snapshot of the checks that the runtime's background loop takes
every second. Without that loop (an app whose runtime was not started), a probe takes the snapshot
itself, at most once per `max_age` and single-flight. Either way a thousand probes a second cost one
database round trip per second, and never a request to the token issuer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]

MAX_AGE = 2.0
"""Seconds a snapshot answers probes for."""
INTERVAL = 1.0
"""Seconds between the background loop's snapshots: well inside MAX_AGE, so probes never take one."""


async def healthz(_: Request) -> Response:
    return JSONResponse({"status": "ok"})


def database_check(engine: AsyncEngine, timeout: float = 2.0) -> Check:
    async def check() -> bool:
        try:
            async with asyncio.timeout(timeout), engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any failure means not ready; the probe must never raise
            return False
        return True

    return check


class Readiness:
    """The last results of `checks`, and the one loop that keeps them current."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        max_age: float = MAX_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._checks = dict(checks)
        self._max_age = max_age
        self._clock = clock
        self._snapshot: dict[str, bool] | None = None
        self._taken_at = -math.inf
        self._inflight: asyncio.Task[dict[str, bool]] | None = None
        self.rounds = 0
        """Snapshots taken; each costs one database connection (tests count them against checkouts)."""

    async def current(self) -> dict[str, bool]:
        """What a probe answers: the snapshot while fresh, else a new one shared by all who ask."""
        if self._snapshot is not None and self._clock() - self._taken_at <= self._max_age:
            return self._snapshot
        return await self.refresh()

    async def refresh(self) -> dict[str, bool]:
        # No await between the check and the assignment: one snapshot in flight per process.
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._take(), name="readiness snapshot")
        # Shielded: a probe that gives up (the kubelet's timeout) must not cancel the others' snapshot.
        return await asyncio.shield(self._inflight)

    async def run(
        self, tend: Callable[[], Awaitable[object]] | None = None, interval: float = INTERVAL
    ) -> None:
        """Until cancelled: `tend` (repair what it can, e.g. load the issuer's keys), then a snapshot."""
        while True:
            try:
                if tend is not None:
                    await tend()
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # one failed round must not stop the next: the probes depend on it
                logger.exception("a readiness round failed")
            await asyncio.sleep(interval)

    async def _take(self) -> dict[str, bool]:
        try:
            results = await asyncio.gather(*(_never_raises(check) for check in self._checks.values()))
            snapshot = dict(zip(self._checks, results, strict=True))
            self._snapshot, self._taken_at = snapshot, self._clock()
            self.rounds += 1
            return snapshot
        finally:
            self._inflight = None


async def _never_raises(check: Check) -> bool:
    try:
        return await check()
    except Exception:
        logger.exception("a readiness check failed")
        return False


def readyz(readiness: Readiness) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_: Request) -> Response:
        results = await readiness.current()
        ready = all(results.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "checks": {k: "ok" if v else "failing" for k, v in results.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return endpoint
