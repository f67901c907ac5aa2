"""Fixtures shared by the suites: a migrated database of each kind, the wired app, clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.auth.dev_issuer import DevIssuer
from services.db.engine import make_engine
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.peers.jwks_server import JwksServer
from tests.support.databases import database

# Builds an image and boots a Debian host as root: only `make test-deploy` (OPENCSP_LIVE_DEPLOY=1).
collect_ignore = [] if os.environ.get("OPENCSP_LIVE_DEPLOY") == "1" else ["deploy_live"]

PROJECT = "project-1"
ORG = "org-a"

DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database; every test that takes it runs once on SQLite and once on PostgreSQL."""
    async with database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The database at the head revision, reached through the gateway's own engine settings."""
    engine = make_engine(database_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@dataclass
class Issuer:
    """A token issuer shaped like ZITADEL, its key set served over real HTTP."""

    server: JwksServer
    dev: DevIssuer

    def token(
        self, role: str | list[str] | None = "admin", *, sub: str | None = None, org: str = ORG, **kw: Any
    ) -> str:
        name = role if isinstance(role, str) else "-".join(role or ["none"])
        return self.dev.issue(role, sub=sub or f"{name}-1", org=org, **kw)

    def headers(self, role: str | list[str] | None = "admin", **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, **kw)}"}


@pytest.fixture
async def issuer(tmp_path: Path) -> AsyncIterator[Issuer]:
    async with JwksServer() as server:
        dev = DevIssuer(directory=tmp_path / "issuer", issuer=server.issuer, project_id=PROJECT)
        server.jwks = dev.jwks()
        yield Issuer(server, dev)


@pytest.fixture
def settings(database_url: str, issuer: Issuer) -> Settings:
    """`org-a` is the admin org, so its admins cross orgs (without one, nobody does)."""
    return Settings(  # type: ignore[call-arg]
        database_url=database_url,
        oidc_issuer=issuer.server.issuer,
        oidc_project_id=PROJECT,
        oidc_jwks_url=issuer.server.jwks_url,
        oidc_admin_org_id=ORG,
        _env_file=None,
    )


@pytest.fixture
async def runtime(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Runtime]:
    """Wired with dev mode's simulated cluster and Semaphore; lifecycle suites bring real-protocol peers."""
    runtime = await build_runtime(
        settings,
        engine=engine,
        cluster=SimulatedCluster(step_delay=0.01),
        runner=SimulatedSemaphore(step_delay=0.01),
    )
    yield runtime
    await runtime.aclose()  # disposing the shared engine only empties its pool: later users reconnect


AppFactory = Callable[..., Awaitable[Starlette]]


@pytest.fixture
async def make_app(settings: Settings, engine: AsyncEngine) -> AsyncIterator[AppFactory]:
    """Build the real app over the test database with some settings changed (small limits, say)."""
    runtimes: list[Runtime] = []

    async def factory(**overrides: Any) -> Starlette:
        changed = Settings(**{**settings.model_dump(), **overrides, "_env_file": None})
        runtime = await build_runtime(
            changed,
            engine=engine,
            cluster=SimulatedCluster(step_delay=0.01),
            runner=SimulatedSemaphore(step_delay=0.01),
        )
        runtimes.append(runtime)
        return create_app(runtime, own_runtime=False)

    yield factory
    for runtime in runtimes:
        await runtime.aclose()


@pytest.fixture
def app(runtime: Runtime) -> Starlette:
    return create_app(runtime, own_runtime=False)


@pytest.fixture
async def anonymous(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """A client that sends no token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@pytest.fixture
async def client(app: Starlette, issuer: Issuer) -> AsyncIterator[httpx.AsyncClient]:
    """A client with an admin's token of org `org-a`, the admin org (sees every instance)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://gateway", headers=issuer.headers("admin")
    ) as client:
        yield client
