"""/readyz answers from the state the background tasks keep: probing it in a loop during an issuer
outage fetches nothing and takes no database connection per call, and it still follows the state.

The gateway runs under a real uvicorn with its runtime started; the issuer is the real-HTTP JWKS
stand-in, which counts the requests it gets; database connections are counted with pool events.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.health import Readiness
from gateway.settings import Settings
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import Issuer
from tests.support.servers import serve


async def started(
    settings: Settings, engine: AsyncEngine, cluster: SimulatedCluster | None = None, **overrides: Any
) -> Runtime:
    """A runtime for an app that starts it (own_runtime) and closes it at shutdown."""
    changed = Settings(**{**settings.model_dump(), **overrides, "_env_file": None})
    return await build_runtime(
        changed,
        engine=engine,
        cluster=cluster or SimulatedCluster(step_delay=0.01),
        runner=SimulatedSemaphore(step_delay=0.01),
    )


async def ready_state(http: httpx.AsyncClient, wanted: dict[str, str]) -> dict[str, Any]:
    """Probe until the checks named in `wanted` read so: the state changes in the background."""
    body: dict[str, Any] = {}
    for _ in range(1000):
        body = (await http.get("/readyz")).json()
        if all(body["checks"].get(name) == state for name, state in wanted.items()):
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"readiness never showed {wanted}; last {body}")


class Checkouts:
    """Connections taken from the engine's pool, as the pool itself reports them."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.count = 0
        self._pool = engine.sync_engine.pool
        event.listen(self._pool, "checkout", self._seen)

    def _seen(self, *_: object) -> None:
        self.count += 1

    def remove(self) -> None:
        event.remove(self._pool, "checkout", self._seen)


async def test_probes_during_an_issuer_outage_fetch_nothing_and_take_no_connection(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    issuer.server.status = 503  # the issuer answers, badly: every fetch of its keys is counted
    runtime = await started(settings, engine, oidc_jwks_min_refresh_seconds=3600)
    # The lifecycle's watch and reconcile stay off: every connection taken below is readiness's own.
    app = create_app(runtime, own_runtime=True, background=False)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        await ready_state(http, {"jwks": "failing", "database": "ok"})
        fetches, rounds = issuer.server.fetches, runtime.readiness.rounds
        assert fetches >= 1  # start-up tried, and failed
        checkouts = Checkouts(runtime.engine)
        try:
            for _ in range(50):
                response = await http.get("/readyz")
                assert response.status_code == 503
                assert response.json()["checks"]["jwks"] == "failing"
        finally:
            checkouts.remove()
        rounds_taken = runtime.readiness.rounds - rounds
    assert issuer.server.fetches == fetches, "a probe made the gateway fetch the issuer's keys"
    # Every connection taken was a readiness round's (one each, once a second), none a probe's.
    assert checkouts.count <= rounds_taken < 50


async def test_readiness_follows_the_background_state(
    settings: Settings, engine: AsyncEngine, issuer: Issuer
) -> None:
    issuer.server.status = 503
    cluster = SimulatedCluster(step_delay=0.01)
    runtime = await started(settings, engine, cluster, oidc_jwks_min_refresh_seconds=1)
    app = create_app(runtime, own_runtime=True)
    async with serve(app) as base, httpx.AsyncClient(base_url=base) as http:
        down = await ready_state(http, {"jwks": "failing"})
        assert down["status"] == "unavailable"
        # The issuer recovers: the background loop loads its keys (no request had to), and /readyz says so.
        issuer.server.status = 200
        up = await ready_state(http, {"jwks": "ok", "cluster_watch": "ok", "events": "ok", "database": "ok"})
        assert up["status"] == "ready"
        assert (await http.get("/readyz")).status_code == 200
        # The cluster goes away: the watch drops, and readiness follows.
        await cluster.close()
        gone = await ready_state(http, {"cluster_watch": "failing"})
        assert gone["status"] == "unavailable"


async def test_concurrent_probes_share_one_snapshot() -> None:
    """Without the background loop, a stale snapshot is retaken once for all probes waiting on it."""
    calls = 0
    gate = asyncio.Event()

    async def slow() -> bool:
        nonlocal calls
        calls += 1
        await gate.wait()
        return True

    now = 0.0
    readiness = Readiness({"slow": slow}, max_age=2.0, clock=lambda: now)
    probes = [asyncio.create_task(readiness.current()) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*probes) == [{"slow": True}] * 20
    assert (calls, readiness.rounds) == (1, 1)
    now = 1.9  # still fresh: answered from the snapshot
    await readiness.current()
    assert calls == 1
    now = 2.1  # stale: taken anew
    await readiness.current()
    assert calls == 2


async def test_a_check_that_raises_reads_as_failing() -> None:
    async def broken() -> bool:
        raise RuntimeError("bug")

    async def fine() -> bool:
        return True

    assert await Readiness({"broken": broken, "fine": fine}).current() == {"broken": False, "fine": True}
