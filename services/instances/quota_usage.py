"""How much of a quota is used: the caller's own (`quota`) and the org's (`orgQuota`).

Both read `InstanceStore.usage`, the same query the atomic check of a create runs, so the figures shown
are the ones a create is refused by. A read outside the create's lock may be stale by the creates that
commit meanwhile; it is a display, never the check.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.instances.store import InstanceStore, Quota


@dataclass(frozen=True, slots=True)
class Measure:
    used: int
    limit: int


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    instances: Measure
    cpu: Measure
    memory_mib: Measure


async def quota_usage(store: InstanceStore, quota: Quota, org_id: str, owner_sub: str | None) -> QuotaUsage:
    """One owner's instances in `org_id` (against the per-user quota), or the whole org's (`owner_sub`
    None, against the per-org quota)."""
    used = await store.usage(org_id, owner_sub)
    return QuotaUsage(
        instances=Measure(used.instances, quota.instances),
        cpu=Measure(used.cpu, quota.cpu),
        memory_mib=Measure(used.memory_mib, quota.memory_mib),
    )
