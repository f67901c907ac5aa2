"""The catalog of flavors and images."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.types import CatalogType


def resolve_catalog(info: strawberry.Info[Context, None]) -> CatalogType:
    return CatalogType.from_model(info.context.services.catalog)
