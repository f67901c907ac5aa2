"""The catalog of flavors and images."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.types import Catalog, Flavor, Image


def resolve_catalog(info: strawberry.Info[Context, None]) -> Catalog:
    catalog = info.context.services.catalog
    return Catalog(
        flavors=[Flavor.from_model(flavor) for flavor in catalog.flavors],
        images=[Image.from_model(image) for image in catalog.images],
    )
