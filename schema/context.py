"""What every resolver receives: the caller, the services, and per-request DataLoaders."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from strawberry.dataloader import DataLoader

from services.auth.principal import Principal
from services.container import Services
from services.instances.access import visibility_of
from services.instances.records import InstanceEventRecord, InstanceRecord
from services.instances.security import SecurityRecord
from services.instances.visibility import Visibility

EVENTS_PER_INSTANCE = 50


@dataclass(slots=True)
class Loaders:
    """Batch per-row lookups of one request into one query each; never shared across requests."""

    instance: DataLoader[uuid.UUID, InstanceRecord | None]
    newest_events: DataLoader[uuid.UUID, list[InstanceEventRecord]]
    oldest_events: DataLoader[uuid.UUID, list[InstanceEventRecord]]
    security: DataLoader[uuid.UUID, SecurityRecord | None]
    labels: DataLoader[uuid.UUID, dict[str, str]]

    def forget(self, instance_id: uuid.UUID) -> None:
        """Drop what was read for one instance: a socket's loaders outlive one change of it."""
        for loader in (self.instance, self.newest_events, self.oldest_events, self.security, self.labels):
            with contextlib.suppress(KeyError):  # Strawberry's clear() raises for a key never loaded
                loader.clear(instance_id)

    @classmethod
    def create(cls, services: Services, visibility: Visibility) -> Loaders:
        async def load_instances(ids: list[uuid.UUID]) -> list[InstanceRecord | None]:
            return await services.instances.by_ids(ids, visibility)

        async def load_newest(ids: list[uuid.UUID]) -> list[list[InstanceEventRecord]]:
            found = await services.instances.events(ids, limit=EVENTS_PER_INSTANCE, newest=True)
            return [found[i] for i in ids]

        async def load_oldest(ids: list[uuid.UUID]) -> list[list[InstanceEventRecord]]:
            found = await services.instances.events(ids, limit=EVENTS_PER_INSTANCE, newest=False)
            return [found[i] for i in ids]

        async def load_security(ids: list[uuid.UUID]) -> list[SecurityRecord | None]:
            found = await services.security.of(ids) if services.security is not None else {}
            return [found.get(i) for i in ids]

        async def load_labels(ids: list[uuid.UUID]) -> list[dict[str, str]]:
            found = await services.instances.labels(ids)
            return [found[i] for i in ids]

        return cls(
            labels=DataLoader(load_labels),
            instance=DataLoader(load_instances),
            newest_events=DataLoader(load_newest),
            oldest_events=DataLoader(load_oldest),
            security=DataLoader(load_security),
        )


@dataclass(slots=True)
class Context:
    services: Services
    principal: Principal | None
    visibility: Visibility
    # Made on first use: most websocket connections only hold shared subscriptions and never load.
    _loaders: Loaders | None = field(default=None)
    # Set by the websocket protocols from `connection_init`.
    connection_params: dict[str, Any] | None = field(default=None)
    # A websocket connection's socket and the timer that closes it when its token expires.
    websocket: Any = field(default=None)
    expiry: asyncio.Task[None] | None = field(default=None)
    # The deployment made the schema public (OPENCSP_PUBLIC_INTROSPECTION): see `schema.discovery`.
    schema_public: bool = field(default=False)
    # With introspection configured: raises unless the issuer calls the token active (schema.active_token).
    confirm_write: Callable[[], Awaitable[None]] | None = field(default=None)
    # The budget was already charged for the next execution (`schema.cost.Charged`): demand control must
    # not charge it again (the compiled path before a fallback, a shared subscription's own run).
    cost_charged: Any = field(default=None)
    # The instance of the status change a subscription resolver yielded last: a shared group takes it with
    # each result (`take_instance`), so its writer can coalesce a slow member per instance (gateway.fanout).
    instance: uuid.UUID | None = field(default=None)

    @classmethod
    def create(
        cls, services: Services, principal: Principal | None, *, schema_public: bool = False
    ) -> Context:
        """No principal (public introspection) sees no rows at all."""
        visibility = visibility_of(principal) if principal is not None else Visibility()
        return cls(services=services, principal=principal, visibility=visibility, schema_public=schema_public)

    def take_instance(self) -> uuid.UUID | None:
        """The instance of the result just produced, once: a result made without one (an error) has none."""
        instance, self.instance = self.instance, None
        return instance

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders.create(self.services, self.visibility)
        return self._loaders

    def authenticate(self, principal: Principal, visibility: Visibility | None = None) -> None:
        """A websocket learns its principal at connection_init, after the context exists. `visibility`:
        the principal's, when the caller already has it (`visibility_of(principal)`)."""
        self.principal = principal
        self.visibility = visibility if visibility is not None else visibility_of(principal)
        self._loaders = None
