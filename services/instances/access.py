"""Row-level rules from a principal: which instances it sees and which it may act on."""

from __future__ import annotations

from services.auth.permissions import (
    INSTANCE_DELETE,
    INSTANCE_DELETE_ORG,
    INSTANCE_LABEL,
    INSTANCE_LABEL_ORG,
    INSTANCE_POWER,
    INSTANCE_READ,
    INSTANCE_READ_ORG,
    INSTANCE_RESIZE,
    INSTANCE_RETRY,
)
from services.auth.principal import Principal
from services.instances.records import InstanceRecord
from services.instances.visibility import Visibility


def visibility_of(principal: Principal) -> Visibility:
    """Own instances with `instance:read`; an org's with `instance:read:org` there; all with all-orgs."""
    if principal.all_orgs and INSTANCE_READ_ORG in principal.global_permissions:
        return Visibility.everything()
    org_ids = frozenset(org for org, granted in principal.grants.items() if INSTANCE_READ_ORG in granted)
    # Reading the whole own org already covers one's own instances: leaving the owner out makes callers
    # with the same rights in the same org see through the same Visibility (one shared subscription).
    own = principal.has(INSTANCE_READ) and principal.org_id not in org_ids
    return Visibility(
        owner_sub=principal.sub if own else None,
        owner_org=principal.org_id if own else None,
        org_ids=org_ids,
    )


def may_delete(principal: Principal, instance: InstanceRecord) -> bool:
    if principal.has(INSTANCE_DELETE_ORG, instance.org_id):
        return True
    return (
        instance.owner_sub == principal.sub
        and instance.org_id == principal.org_id
        and principal.has(INSTANCE_DELETE, instance.org_id)
    )


def may_retry(principal: Principal, instance: InstanceRecord) -> bool:
    return principal.has(INSTANCE_RETRY, instance.org_id)


def may_label(principal: Principal, instance: InstanceRecord) -> bool:
    """As for delete: one's own with `instance:label`, any of the org's with `instance:label:org`."""
    if principal.has(INSTANCE_LABEL_ORG, instance.org_id):
        return True
    return (
        instance.owner_sub == principal.sub
        and instance.org_id == principal.org_id
        and principal.has(INSTANCE_LABEL, instance.org_id)
    )


def _may_act(principal: Principal, instance: InstanceRecord, permission: str) -> bool:
    """Day-2 actions: on one's own instances, and on the org's where one reads the whole org (an
    operator); the permission must hold in the instance's org either way."""
    if not principal.has(permission, instance.org_id):
        return False
    own = instance.owner_sub == principal.sub and instance.org_id == principal.org_id
    return own or principal.has(INSTANCE_READ_ORG, instance.org_id)


def may_power(principal: Principal, instance: InstanceRecord) -> bool:
    return _may_act(principal, instance, INSTANCE_POWER)


def may_resize(principal: Principal, instance: InstanceRecord) -> bool:
    return _may_act(principal, instance, INSTANCE_RESIZE)
