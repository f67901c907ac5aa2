"""Probes: /healthz says the process runs; /readyz says it can serve (its dependencies answer)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Check = Callable[[], Awaitable[bool]]


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


def readyz(checks: Mapping[str, Check]) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(_: Request) -> Response:
        results = dict(
            zip(checks, await asyncio.gather(*(check() for check in checks.values())), strict=True)
        )
        ready = all(results.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "checks": {k: "ok" if v else "failing" for k, v in results.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return endpoint
