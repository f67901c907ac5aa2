"""The composition root: settings in, the process's real dependencies out. Tests call it with their own."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.settings import Settings
from schema.limits import DocumentLimits
from services.catalog import Catalog
from services.container import PageLimits, Services
from services.db.engine import make_engine, make_sessionmaker
from services.instances.reading import InstanceReader


@dataclass(slots=True)
class Runtime:
    """Everything one process owns and must close on shutdown."""

    settings: Settings
    engine: AsyncEngine
    services: Services

    async def aclose(self) -> None:
        await self.engine.dispose()


def build_runtime(settings: Settings, *, engine: AsyncEngine | None = None) -> Runtime:
    engine = engine or make_engine(settings.database_url, pool_size=settings.database_pool_size)
    sessions = make_sessionmaker(engine)
    services = Services(
        catalog=Catalog(settings.flavors, settings.images),
        instances=InstanceReader(sessions),
        page_limits=PageLimits(default=settings.default_page_size, maximum=settings.max_page_size),
    )
    return Runtime(settings=settings, engine=engine, services=services)


def document_limits(settings: Settings) -> DocumentLimits:
    return DocumentLimits(
        max_query_bytes=settings.max_query_bytes,
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_tokens=settings.max_tokens,
    )
