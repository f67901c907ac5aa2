"""Which tokens a revocation covers, how long it is kept, and the org rule of an admin's lockout."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from services.auth.permissions import DEFAULT_POLICY
from services.auth.principal import Principal
from services.auth.revocation import (
    Revocation,
    RevocationRequest,
    Revocations,
    RevocationSet,
)

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIFETIME = timedelta(hours=12)


def principal(
    sub: str = "u1",
    *,
    org: str = "org-a",
    issued: timedelta | None = timedelta(0),
    sid: str | None = None,
    role: str = "viewer",
    admin_org: str | None = None,
) -> Principal:
    return Principal.from_roles(
        sub=sub,
        org_id=org,
        roles={org: frozenset({role})},
        policy=DEFAULT_POLICY,
        expires_at=T0 + timedelta(hours=1),
        issued_at=None if issued is None else T0 + issued,
        session_id=sid,
        admin_org_id=admin_org,
    )


def revocation(
    sub: str | None = "u1", *, sid: str | None = None, org: str | None = None, id: int = 1
) -> Revocation:
    return Revocation(id, sub, sid, org, revoked_at=T0, expires_at=T0 + LIFETIME)


@pytest.mark.parametrize(
    ("case", "rule", "token", "covered"),
    [
        ("issued before", revocation(), principal(issued=-timedelta(seconds=1)), True),
        ("issued at the instant", revocation(), principal(), True),
        ("issued after", revocation(), principal(issued=timedelta(seconds=1)), False),
        ("another sub", revocation(), principal("u2"), False),
        ("no iat fails closed", revocation(), principal(issued=None), True),
        ("org-scoped, same org", revocation(org="org-a"), principal(), True),
        ("org-scoped, other org", revocation(org="org-a"), principal(org="org-b"), False),
        ("sid only, same sid", revocation(None, sid="s1"), principal("anyone", sid="s1"), True),
        ("sid only, no sid", revocation(None, sid="s1"), principal(), False),
        (
            "sid only, after",
            revocation(None, sid="s1"),
            principal(sid="s1", issued=timedelta(seconds=1)),
            False,
        ),
        ("sub and sid: by sub", revocation(sid="s1"), principal(sid=None), True),
        ("names nothing", revocation(None), principal(), False),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_what_a_revocation_covers(case: str, rule: Revocation, token: Principal, covered: bool) -> None:
    assert rule.covers(token) is covered, case
    indexed = RevocationSet()
    indexed.add(rule)
    assert indexed.covers(token) is (covered and (rule.sub is not None or rule.sid is not None)), case


def test_the_set_prunes_what_expired() -> None:
    live = RevocationSet()
    assert live.add(revocation(id=1))
    assert not live.add(revocation(id=1))  # known already: listeners do not run twice
    live.add(Revocation(2, "u2", None, None, T0, T0 + timedelta(minutes=1)))
    assert live.prune(T0 + timedelta(minutes=1)) == 1
    assert len(live) == 1
    assert not live.covers(principal("u2"))
    assert live.covers(principal("u1"))


class Store:
    """The `RevocationStore` port kept in a list (the SQL store is exercised over real sockets)."""

    def __init__(self) -> None:
        self.rows: list[Revocation] = []

    async def insert(self, request: RevocationRequest) -> Revocation:
        row = Revocation(
            len(self.rows) + 1,
            request.sub,
            request.sid,
            request.org_id,
            request.revoked_at,
            request.expires_at,
        )
        self.rows.append(row)
        return row

    async def live(self, now: datetime) -> list[Revocation]:
        return [row for row in self.rows if row.expires_at > now]

    async def matching(self, sub: str | None, sid: str | None) -> list[Revocation]:
        return [row for row in self.rows if (sub and row.sub == sub) or (sid and row.sid == sid)]

    async def prune(self, now: datetime) -> int:
        before = len(self.rows)
        self.rows = [row for row in self.rows if row.expires_at > now]
        return before - len(self.rows)

    async def watch(self, hint: Callable[[str | None, str | None], None], resync: Callable[[], None]) -> None:
        return None


def revocations(store: Store, now: datetime = T0) -> Revocations:
    return Revocations(store, max_token_lifetime=LIFETIME, leeway=timedelta(seconds=60), clock=lambda: now)


def test_kept_until_no_covered_token_can_be_valid() -> None:
    kept = revocations(Store())
    assert kept.expiry(T0) == T0 + LIFETIME + timedelta(seconds=60)
    # A logout token valid for longer keeps its row (and jti) at least as long as itself.
    late = T0 + LIFETIME + timedelta(hours=1)
    assert kept.expiry(T0, not_before=late) == late + timedelta(seconds=60)


async def test_an_org_admin_locks_out_in_their_org_a_cross_org_admin_everywhere() -> None:
    store = Store()
    lockouts = revocations(store)
    in_org = await lockouts.revoke_subject(principal("admin-b", org="org-b", role="admin"), "u1")
    assert (in_org.org_id, in_org.revoked_at, in_org.sub) == ("org-b", T0, "u1")
    assert lockouts.covers(principal(org="org-b"))
    assert not lockouts.covers(principal(org="org-c"))
    platform = principal("root", org="org-a", role="admin", admin_org="org-a")
    everywhere = await lockouts.revoke_subject(platform, "u1")
    assert everywhere.org_id is None
    assert lockouts.covers(principal(org="org-c"))


async def test_a_lockout_needs_admin_revoke_and_a_possible_sub() -> None:
    lockouts = revocations(Store())
    with pytest.raises(PermissionError):
        await lockouts.revoke_subject(principal("op", role="operator"), "u1")
    admin = principal("admin", role="admin")
    for sub in ("", "x" * 256):
        with pytest.raises(ValueError, match="sub must be"):
            await lockouts.revoke_subject(admin, sub)


async def test_listeners_run_once_per_revocation_and_expired_rows_are_not_applied() -> None:
    store = Store()
    seen: list[int] = []
    later = revocations(store, T0 + LIFETIME + timedelta(hours=1))

    async def listener(revoked: Revocation) -> None:
        seen.append(revoked.id)

    later.on_revoked(listener)
    store.rows = [revocation(id=1), Revocation(2, "u2", None, None, T0, T0 + 2 * LIFETIME)]
    await later.load()
    await later.load()  # a resync re-reads everything: nothing is applied twice
    assert seen == [2]
    assert await later.prune() == 1
    assert [row.id for row in store.rows] == [2]
