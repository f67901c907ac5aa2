"""The revocations table on SQLite and PostgreSQL: a jti once, what is live, what is pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.revocation import Replayed, RevocationRequest
from services.auth.revocation_store import SqlRevocationStore

NOW = datetime.now(UTC).replace(microsecond=0)


def request(
    sub: str | None, *, expires: timedelta, jti: str | None = None, sid: str | None = None
) -> RevocationRequest:
    return RevocationRequest(
        sub=sub, sid=sid, org_id=None, revoked_at=NOW, expires_at=NOW + expires, source="test", jti=jti
    )


async def test_a_jti_is_recorded_once(engine: AsyncEngine) -> None:
    store = SqlRevocationStore(engine)
    first = await store.insert(request("u1", expires=timedelta(hours=1), jti="j-1"))
    with pytest.raises(Replayed):
        await store.insert(request("u1", expires=timedelta(hours=1), jti="j-1"))
    assert [r.id for r in await store.matching("u1", None)] == [first.id]


async def test_live_matching_and_pruned(engine: AsyncEngine) -> None:
    store = SqlRevocationStore(engine)
    gone = await store.insert(request("u1", expires=timedelta(seconds=-1)))
    kept = await store.insert(request(None, sid="s-1", expires=timedelta(hours=1)))
    assert {r.id for r in await store.live(NOW)} == {kept.id}
    assert {r.id for r in await store.matching("u1", "s-1")} == {gone.id, kept.id}
    assert (await store.matching(None, "s-1"))[0].revoked_at == NOW
    assert await store.matching(None, None) == []
    assert await store.prune(NOW) == 1
    assert {r.id for r in await store.matching("u1", "s-1")} == {kept.id}
