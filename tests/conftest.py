"""Fixtures shared by the suites: a migrated database of each kind, the wired app, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.db.engine import make_engine
from tests.support.databases import database

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


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def runtime(settings: Settings, engine: AsyncEngine) -> Runtime:
    return build_runtime(settings, engine=engine)


@pytest.fixture
def app(runtime: Runtime) -> Starlette:
    return create_app(runtime, own_runtime=False)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client
