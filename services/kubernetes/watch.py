"""Keep the gateway's view of Terraform objects current: list, then watch from the list's resourceVersion.

Why this shape (in the spirit of kopf's watching): a watch alone can miss what happened while it was
not connected, so every (re)start begins with a list, delivered whole as one `SYNC` so the consumer
can also notice objects that vanished meanwhile. The watch then continues exactly from the list's
resourceVersion, with the managed-by label selector and bookmarks; a `BOOKMARK` only moves that
resourceVersion forward. `410 Gone` means the resourceVersion is too old to continue from: the inner
watch returns and the loop lists again (kubernetes_asyncio raises it and never re-lists by itself).
A dropped stream or an API error resumes the watch from the last resourceVersion seen, after a jittered
exponential backoff that is bounded and reset by the next success. If the consumer fails on an event,
the next list re-delivers the state, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn, Protocol

from services.kubernetes.errors import ClusterError, ClusterGone
from services.kubernetes.terraform_object import API_VERSION, KIND, MANAGED_SELECTOR

logger = logging.getLogger(__name__)

EventKind = Literal["ADDED", "MODIFIED", "DELETED", "SYNC"]
# ADDED / MODIFIED / DELETED carry the object; SYNC carries the whole list `{metadata, items}`.
OnEvent = Callable[[EventKind, dict[str, Any]], Awaitable[None]]


class WatchSource(Protocol):
    """What the watch needs from the cluster; `TerraformCluster` is one."""

    async def list(
        self, label_selector: str = ..., *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]: ...

    def watch(
        self,
        *,
        resource_version: str,
        label_selector: str = ...,
        namespace: str | None = None,
        timeout_seconds: int = ...,
    ) -> AsyncGenerator[dict[str, Any], None]: ...


@dataclass
class WatchHealth:
    """For /readyz and metrics: is the watch live, when did it last hear from the API, how often failed."""

    connected: bool = False
    last_event_at: datetime | None = None
    resource_version: str | None = None
    relists: int = 0
    reconnects: int = 0
    last_error: str | None = None

    def heard(self, resource_version: str) -> None:
        self.connected = True
        self.last_event_at = datetime.now(UTC)
        self.resource_version = resource_version


@dataclass
class Backoff:
    """Exponential delays with "equal jitter": half fixed, half random, never above `cap`."""

    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return float(ceiling / 2 + self.rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0


class ConsumerFailed(Exception):
    """`on_event` raised; the watch lists again so the consumer gets another chance."""


async def watch_terraforms(
    source: WatchSource,
    *,
    on_event: OnEvent,
    namespace: str | None = None,
    label_selector: str = MANAGED_SELECTOR,
    health: WatchHealth | None = None,
    backoff: Backoff | None = None,
    timeout_seconds: int = 300,
) -> NoReturn:
    """Run until cancelled, delivering every change of the selected Terraform objects to `on_event`."""
    health = health or WatchHealth()
    backoff = backoff or Backoff()
    loop = _ListWatch(source, on_event, namespace, label_selector, health, backoff, timeout_seconds)
    while True:
        try:
            await loop.watch(loop.resource_version or await loop.list())
        except (ClusterError, ConsumerFailed) as exc:
            health.connected, health.last_error = False, str(exc)
            if isinstance(exc, ConsumerFailed):
                loop.resource_version = None
            delay = backoff.next_delay()
            logger.warning("terraform watch: %s; retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)
            health.reconnects += 1


@dataclass
class _ListWatch:
    source: WatchSource
    on_event: OnEvent
    namespace: str | None
    label_selector: str
    health: WatchHealth
    backoff: Backoff
    timeout_seconds: int
    resource_version: str | None = None  # where the next watch continues; None: list first

    async def list(self) -> str:
        items, resource_version = await self.source.list(self.label_selector, namespace=self.namespace)
        self.health.relists += 1
        self._heard(resource_version)
        listed: dict[str, Any] = {"apiVersion": API_VERSION, "kind": f"{KIND}List", "items": items}
        listed["metadata"] = {"resourceVersion": resource_version}
        await self._deliver("SYNC", listed)
        self.backoff.reset()
        return resource_version

    async def watch(self, since: str) -> None:
        """One watch request from `since`, advancing `resource_version`; 410 Gone resets it to None."""
        stream = self.source.watch(
            resource_version=since,
            label_selector=self.label_selector,
            namespace=self.namespace,
            timeout_seconds=self.timeout_seconds,
        )
        try:
            async with aclosing(stream):
                async for event in stream:
                    kind, obj = event["type"], event["object"]
                    seen = (obj.get("metadata") or {}).get("resourceVersion")
                    self._heard(seen or since)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        await self._deliver(kind, obj)
                    elif kind != "BOOKMARK":
                        logger.warning("terraform watch: ignoring event type %r", kind)
                    self.backoff.reset()
        except ClusterGone:
            logger.info("terraform watch: resourceVersion %s is gone; listing again", self.resource_version)
            self.resource_version = None

    def _heard(self, resource_version: str) -> None:
        self.resource_version = resource_version
        self.health.heard(resource_version)

    # The backoff resets once an answer was also delivered: a consumer that keeps failing (its database
    # is down) must not turn into a list every half second.

    async def _deliver(self, kind: EventKind, obj: dict[str, Any]) -> None:
        try:
            await self.on_event(kind, obj)
        except Exception as exc:
            logger.exception("terraform watch: the consumer failed on %s", kind)
            raise ConsumerFailed(f"consumer failed on {kind}: {exc!r}") from exc
