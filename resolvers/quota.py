"""Quota usage: the caller's own and its org's, as the create's quota check counts them."""

from __future__ import annotations

import strawberry

from schema.context import Context
from schema.types import QuotaType
from services.instances.quota_usage import quota_usage


async def resolve_quota(info: strawberry.Info[Context, None]) -> QuotaType:
    principal = info.context.principal
    assert principal is not None, "`quota` is reached only with a verified token"
    lifecycle = info.context.services.lifecycle
    usage = await quota_usage(lifecycle.store, lifecycle.quotas.user, principal.org_id, principal.sub)
    return QuotaType.from_usage(usage)


async def resolve_org_quota(info: strawberry.Info[Context, None]) -> QuotaType | None:
    principal = info.context.principal
    assert principal is not None, "`orgQuota` is reached only with a verified token"
    lifecycle = info.context.services.lifecycle
    usage = await quota_usage(lifecycle.store, lifecycle.quotas.org, principal.org_id, None)
    return QuotaType.from_usage(usage)
