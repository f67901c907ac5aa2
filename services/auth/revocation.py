"""Signed-out sessions: which tokens a revocation covers, and how every replica comes to know it.

A revocation names a subject (or, failing that, a session id) and an instant: it covers every token of
that subject issued at or before the instant (`iat ≤ revoked_at`). ZITADEL's access tokens carry no
`sid`, so a back-channel logout revokes by `sub` and time; a token issued after it works. A revocation
made by an org's admin carries that org and covers only tokens whose org claim names it (a user belongs
to exactly one org in ZITADEL, so an org admin can lock out their own users and nobody else's); one made
by the issuer (back-channel logout) or a cross-org admin carries no org and covers the subject everywhere.

Revocations are rows (`RevocationStore`); this process keeps the live ones in memory and checks every
request against them. The replica that records one applies it at once; the others hear of it from
the store's notification (a hint: they re-read the rows from the table) and re-read every live row when
they start and whenever their notification connection comes back. A row is pruned once no token it
covers can still be valid: tokens live at most `max_token_lifetime` (the verifier refuses longer ones),
so after `revoked_at + max_token_lifetime` (plus leeway, and never before the logout token itself has
expired, since its `jti` must stay known until then) nothing it covers remains.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from services.auth.permissions import ADMIN_REVOKE
from services.auth.principal import Principal

logger = logging.getLogger(__name__)

MAX_SUBJECT_CHARS = 255


@dataclass(frozen=True, slots=True)
class Revocation:
    id: int
    sub: str | None
    sid: str | None
    org_id: str | None
    """None: every org (the issuer's logout, a cross-org admin); else only tokens of that org."""
    revoked_at: datetime
    expires_at: datetime
    """From then on no token it covers can be valid: the row may be pruned."""

    def covers(self, principal: Principal) -> bool:
        if self.sub is not None:
            if principal.sub != self.sub or (self.org_id is not None and principal.org_id != self.org_id):
                return False
        elif self.sid is None or principal.session_id != self.sid:
            return False
        # A token without `iat` cannot show it came after: it is covered (fails closed).
        return principal.issued_at is None or principal.issued_at <= self.revoked_at


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    sub: str | None
    sid: str | None
    org_id: str | None
    revoked_at: datetime
    expires_at: datetime
    source: str
    """"backchannel-logout" or "admin:<sub of the admin>", for the audit trail."""
    jti: str | None = None
    """The logout token's id: the store accepts each once."""


class Replayed(Exception):
    """The logout token's `jti` was seen before."""


class RevocationStore(Protocol):
    async def insert(self, request: RevocationRequest) -> Revocation:
        """Record it (raises `Replayed` for a known `jti`) and announce it to the other replicas."""
        ...

    async def live(self, now: datetime) -> list[Revocation]: ...

    async def matching(self, sub: str | None, sid: str | None) -> list[Revocation]: ...

    async def prune(self, now: datetime) -> int: ...

    async def watch(self, hint: Callable[[str | None, str | None], None], resync: Callable[[], None]) -> None:
        """Until cancelled: `hint(sub, sid)` for each announced revocation, `resync()` whenever
        announcements may have been missed (the connection came back). Returns at once when there is
        nobody to hear from (SQLite: one process)."""
        ...


Listener = Callable[[Revocation], Awaitable[None]]
Clock = Callable[[], datetime]


def _now() -> datetime:
    return datetime.now(UTC)


class RevocationSet:
    """The live revocations, indexed so a request's check is two dict lookups."""

    def __init__(self) -> None:
        self._by_sub: dict[str, dict[int, Revocation]] = {}
        self._by_sid: dict[str, dict[int, Revocation]] = {}

    def __len__(self) -> int:
        return sum(map(len, self._by_sub.values())) + sum(map(len, self._by_sid.values()))

    def add(self, revocation: Revocation) -> bool:
        """False when it was known already."""
        index, key = (
            (self._by_sub, revocation.sub) if revocation.sub is not None else (self._by_sid, revocation.sid)
        )
        if key is None:
            return False
        known = index.setdefault(key, {})
        if revocation.id in known:
            return False
        known[revocation.id] = revocation
        return True

    def covers(self, principal: Principal) -> bool:
        return any(revocation.covers(principal) for revocation in self._candidates(principal))

    def prune(self, now: datetime) -> int:
        pruned = 0
        for index in (self._by_sub, self._by_sid):
            for key in list(index):
                live = {i: r for i, r in index[key].items() if r.expires_at > now}
                pruned += len(index[key]) - len(live)
                if live:
                    index[key] = live
                else:
                    del index[key]
        return pruned

    def _candidates(self, principal: Principal) -> Iterable[Revocation]:
        yield from self._by_sub.get(principal.sub, {}).values()
        if principal.session_id is not None:
            yield from self._by_sid.get(principal.session_id, {}).values()


class Revocations:
    """This process's view of the revocations, kept in step with the store."""

    def __init__(
        self,
        store: RevocationStore,
        *,
        max_token_lifetime: timedelta,
        leeway: timedelta = timedelta(seconds=60),
        prune_interval: float = 300.0,
        clock: Clock = _now,
    ) -> None:
        self._store = store
        self.max_token_lifetime = max_token_lifetime
        self.leeway = leeway
        self._prune_interval = prune_interval
        self._clock = clock
        self._set = RevocationSet()
        self._listeners: list[Listener] = []
        self._pending: set[asyncio.Task[None]] = set()
        self.applied = 0

    def __len__(self) -> int:
        return len(self._set)

    def covers(self, principal: Principal) -> bool:
        return self._set.covers(principal)

    def on_revoked(self, listener: Listener) -> None:
        """`listener` runs once per revocation this process learns of (drop caches, close sockets)."""
        self._listeners.append(listener)

    def expiry(self, revoked_at: datetime, not_before: datetime | None = None) -> datetime:
        """When no token issued at or before `revoked_at` can be valid any more."""
        end = revoked_at + self.max_token_lifetime + self.leeway
        return max(end, not_before + self.leeway) if not_before is not None else end

    async def revoke(self, request: RevocationRequest) -> Revocation:
        """Record, announce and apply here at once (the other replicas follow through the store)."""
        revocation = await self._store.insert(request)
        await self.apply(revocation)
        return revocation

    async def revoke_subject(self, actor: Principal, sub: str) -> Revocation:
        """An admin's lockout of `sub`, now: in the admin's own org, or every org for a cross-org admin.

        Raises `PermissionError` without admin:revoke and `ValueError` for a sub no token can carry."""
        if not actor.has(ADMIN_REVOKE):
            raise PermissionError(ADMIN_REVOKE)
        if not sub or len(sub) > MAX_SUBJECT_CHARS:
            raise ValueError(f"sub must be 1 to {MAX_SUBJECT_CHARS} characters")
        now = self._clock()
        request = RevocationRequest(
            sub=sub,
            sid=None,
            org_id=None if actor.all_orgs else actor.org_id,
            revoked_at=now,
            expires_at=self.expiry(now),
            source=f"admin:{actor.sub}",
        )
        return await self.revoke(request)

    async def apply(self, revocation: Revocation) -> None:
        if revocation.expires_at <= self._clock() or not self._set.add(revocation):
            return
        self.applied += 1
        for listener in self._listeners:
            try:
                await listener(revocation)
            except Exception:  # one failing listener must not keep the others from acting
                logger.exception("applying revocation %d failed in a listener", revocation.id)

    async def load(self) -> None:
        """Every live revocation from the table: at start and after a gap in announcements."""
        for revocation in await self._store.live(self._clock()):
            await self.apply(revocation)

    async def run(self) -> None:
        """Until cancelled: follow the store's announcements and prune what expired."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._store.watch(self._hint, self._resync), name="revocation watch")
                group.create_task(self._prune_forever(), name="revocation prune")
        finally:
            for task in list(self._pending):
                task.cancel()

    def _hint(self, sub: str | None, sid: str | None) -> None:
        self._spawn(self._reread(sub, sid))

    def _resync(self) -> None:
        self._spawn(self.load())

    def _spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception:
                logger.exception("re-reading revocations failed; the next announcement or resync retries")

        task = asyncio.create_task(guarded(), name="revocation re-read")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _reread(self, sub: str | None, sid: str | None) -> None:
        # The announcement only says where to look: what applies is what the table holds.
        for revocation in await self._store.matching(sub, sid):
            await self.apply(revocation)

    async def _prune_forever(self) -> None:
        while True:
            await asyncio.sleep(self._prune_interval)
            await self.prune()

    async def prune(self) -> int:
        now = self._clock()
        self._set.prune(now)
        try:
            return await self._store.prune(now)
        except Exception as error:  # the database may be away; the next round prunes
            logger.warning("pruning revocations failed: %s", error)
            return 0
