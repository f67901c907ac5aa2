"""The services one process runs, built once by the composition root and handed to every request."""

from __future__ import annotations

from dataclasses import dataclass

from services.auth.revocation import Revocations
from services.catalog import Catalog
from services.events.hub import Hub
from services.instances.actions import Actions
from services.instances.internals import InternalsReader
from services.instances.lifecycle import Lifecycle
from services.instances.reading import InstanceReader
from services.instances.security import SecurityStore


@dataclass(frozen=True, slots=True)
class PageLimits:
    default: int
    maximum: int


@dataclass(frozen=True, slots=True)
class Services:
    catalog: Catalog
    instances: InstanceReader
    lifecycle: Lifecycle
    internals: InternalsReader
    hub: Hub
    page_limits: PageLimits
    revocations: Revocations | None = None
    security: SecurityStore | None = None

    actions: Actions | None = None  # day-2 actions; None in tests that build Services by hand
