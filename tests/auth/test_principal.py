"""Roles → permissions per org, as DESIGN.md's table and ZITADEL's role claim shape say."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.auth import permissions as p
from services.auth.errors import InvalidToken
from services.auth.permissions import DEFAULT_POLICY, parse_policy
from services.auth.principal import (
    ORG_CLAIM,
    ROLES_CLAIM,
    SYSTEM,
    Principal,
    principal_from_claims,
    project_roles_claim,
)

PROJECT = "project-1"

# DESIGN.md "Roles, permissions, field-level RBAC", column by column.
TABLE = {
    "viewer": {p.INSTANCE_READ, p.INSTANCE_READ_ORG},
    "user": {
        p.INSTANCE_READ,
        p.INSTANCE_READ_NETWORK,
        p.INSTANCE_CREATE,
        p.INSTANCE_DELETE,
        p.INSTANCE_LABEL,
        p.INSTANCE_POWER,
        p.INSTANCE_RESIZE,
    },
    "operator": {
        p.INSTANCE_READ,
        p.INSTANCE_READ_ORG,
        p.INSTANCE_READ_NETWORK,
        p.INSTANCE_READ_INTERNALS,
        p.INSTANCE_CREATE,
        p.INSTANCE_DELETE,
        p.INSTANCE_DELETE_ORG,
        p.INSTANCE_RETRY,
        p.INSTANCE_LABEL,
        p.INSTANCE_LABEL_ORG,
        p.INSTANCE_POWER,
        p.INSTANCE_RESIZE,
        p.SCHEMA_INTROSPECT,
    },
}
TABLE["admin"] = TABLE["operator"] | {
    p.ADMIN_ALL_ORGS,
    p.ADMIN_SYNC,
    p.ADMIN_REVOKE,
    p.QUOTA_READ_ORG,
    p.OPERATIONS_ADHOC,
}


def claims(roles: dict[str, dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {"sub": "u1", "exp": 1_800_000_000, ORG_CLAIM: "org-a", ROLES_CLAIM: roles, **extra}


def test_permission_constants_are_the_designed_strings() -> None:
    assert {
        "instance:read",
        "instance:read:org",
        "instance:read:network",
        "instance:read:internals",
        "instance:create",
        "instance:delete",
        "instance:delete:org",
        "instance:retry",
        "instance:label",
        "instance:label:org",
        "instance:power",
        "instance:resize",
        "admin:all-orgs",
        "admin:sync",
        "admin:revoke",
        "quota:read:org",
        "schema:introspect",
        "operations:adhoc",
    } == p.ALL_PERMISSIONS


@pytest.mark.parametrize("role", sorted(TABLE))
def test_each_default_role_in_own_org(role: str) -> None:
    principal = principal_from_claims(
        claims({role: {"org-a": "a.example"}}),
        project_id=PROJECT,
        policy=DEFAULT_POLICY,
        admin_org_id="org-a",
    )
    assert DEFAULT_POLICY[role] == TABLE[role]
    assert principal.permissions == TABLE[role]
    assert principal.roles == {"org-a": {role}}
    for permission in p.ALL_PERMISSIONS:
        assert principal.has(permission) is (permission in TABLE[role])
        assert principal.has(permission, "org-a") is (permission in TABLE[role])
    assert principal.expires_at == datetime.fromtimestamp(1_800_000_000, UTC)


@pytest.mark.parametrize("role", ["viewer", "user", "operator"])
def test_non_admin_roles_stay_in_own_org(role: str) -> None:
    principal = principal_from_claims(
        claims({role: {"org-a": "a.example"}}), project_id=PROJECT, policy=DEFAULT_POLICY
    )
    assert not principal.all_orgs
    assert not any(principal.has(permission, "org-b") for permission in p.ALL_PERMISSIONS)


def test_role_granted_for_another_org_only() -> None:
    principal = principal_from_claims(
        claims({"operator": {"org-b": "b.example"}}), project_id=PROJECT, policy=DEFAULT_POLICY
    )
    assert principal.permissions == frozenset()
    assert not principal.has(p.INSTANCE_READ)
    assert principal.has(p.INSTANCE_RETRY, "org-b")
    assert principal.permissions_in("org-b") == TABLE["operator"]
    assert not principal.has(p.INSTANCE_RETRY, "org-c")


def test_roles_merge_across_claims_and_orgs() -> None:
    raw = claims(
        {"viewer": {"org-a": "a.example", "org-b": "b.example"}},
        **{project_roles_claim(PROJECT): {"user": {"org-a": "a.example"}}},
    )
    principal = principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY)
    assert principal.roles == {"org-a": {"viewer", "user"}, "org-b": {"viewer"}}
    assert principal.permissions == TABLE["viewer"] | TABLE["user"]
    assert principal.permissions_in("org-b") == TABLE["viewer"]


def test_only_our_projects_specific_claim_counts() -> None:
    raw = claims({}, **{project_roles_claim("other-project"): {"admin": {"org-a": "a.example"}}})
    assert principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY).permissions == frozenset()


def test_admin_of_the_admin_org_acts_in_every_org() -> None:
    principal = principal_from_claims(
        claims({"admin": {"org-a": "a.example"}}),
        project_id=PROJECT,
        policy=DEFAULT_POLICY,
        admin_org_id="org-a",
    )
    assert principal.all_orgs
    assert principal.has(p.INSTANCE_DELETE_ORG, "org-z")
    assert principal.permissions_in("org-z") == TABLE["admin"]


@pytest.mark.parametrize("admin_org_id", [None, ""])
def test_without_an_admin_org_nobody_crosses_orgs(admin_org_id: str | None) -> None:
    # Fail closed: an unset (or empty) OPENCSP_OIDC_ADMIN_ORG_ID must not make every org's admin global.
    principal = principal_from_claims(
        claims({"admin": {"org-a": "a.example"}}),
        project_id=PROJECT,
        policy=DEFAULT_POLICY,
        admin_org_id=admin_org_id,
    )
    assert not principal.all_orgs
    assert principal.global_permissions == frozenset()
    assert principal.permissions == TABLE["admin"] - {p.ADMIN_ALL_ORGS}
    assert principal.has(p.INSTANCE_READ_NETWORK)
    assert not any(principal.has(permission, "org-z") for permission in p.ALL_PERMISSIONS)


def test_admin_granted_by_a_foreign_org_stays_there() -> None:
    principal = principal_from_claims(
        claims({"admin": {"org-b": "b.example"}}), project_id=PROJECT, policy=DEFAULT_POLICY
    )
    assert not principal.all_orgs
    assert principal.has(p.ADMIN_SYNC, "org-b")
    assert not principal.has(p.INSTANCE_READ, "org-z")
    assert not principal.has(p.INSTANCE_READ)


def test_admin_org_restricts_all_orgs() -> None:
    customer_admin = principal_from_claims(
        claims({"admin": {"org-a": "a.example"}}),
        project_id=PROJECT,
        policy=DEFAULT_POLICY,
        admin_org_id="platform",
    )
    assert not customer_admin.all_orgs
    assert customer_admin.has(p.INSTANCE_DELETE_ORG)
    assert not customer_admin.has(p.INSTANCE_READ, "org-z")
    # Inert outside the admin org, so not listed either (what `me` shows is what the checks do).
    assert p.ADMIN_ALL_ORGS not in customer_admin.permissions
    platform_admin = principal_from_claims(
        claims({"admin": {"platform": "p.example"}}, **{ORG_CLAIM: "platform"}),
        project_id=PROJECT,
        policy=DEFAULT_POLICY,
        admin_org_id="platform",
    )
    assert platform_admin.all_orgs
    assert platform_admin.has(p.INSTANCE_READ, "org-z")
    assert p.ADMIN_ALL_ORGS in platform_admin.permissions


def test_unknown_roles_and_malformed_entries_grant_nothing() -> None:
    raw = claims(
        {"superuser": {"org-a": "x"}, "admin": ["org-a"], "": {"org-a": "x"}, "user": {"": "x"}}  # type: ignore[dict-item]
    )
    principal = principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY)
    assert principal.permissions == frozenset()
    assert principal.roles == {"org-a": {"superuser"}}
    garbage = claims({}, **{ROLES_CLAIM: "admin"})
    assert (
        principal_from_claims(garbage, project_id=PROJECT, policy=DEFAULT_POLICY).permissions == frozenset()
    )


def test_policy_override() -> None:
    policy = parse_policy('{"auditor": ["instance:read", "instance:read:org", "quota:read:org"]}')
    principal = principal_from_claims(
        claims({"auditor": {"org-a": "a"}, "admin": {"org-a": "a"}}), project_id=PROJECT, policy=policy
    )
    assert principal.permissions == {p.INSTANCE_READ, p.INSTANCE_READ_ORG, p.QUOTA_READ_ORG}
    assert not principal.all_orgs  # the override replaced the default roles


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"viewer": ["instance:reed"]}', "unknown permission 'instance:reed'"),
        ('{"viewer": "instance:read"}', "must be a list"),
        ('{"viewer": [1]}', "must be a list"),
        ('["viewer"]', "must be a JSON object"),
        ('{"": []}', "non-empty"),
        ("{nope", "not valid JSON"),
    ],
)
def test_policy_override_errors(text: str, message: str) -> None:
    with pytest.raises(p.PolicyError, match=message):
        parse_policy(text)


def test_names_and_email() -> None:
    raw = claims({}, preferred_username="ada@a.example", email="ada@a.example")
    principal = principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY)
    assert (principal.name, principal.email) == ("ada@a.example", "ada@a.example")
    raw = claims({}, name="Ada Lovelace", preferred_username="ada")
    assert principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY).name == "Ada Lovelace"


@pytest.mark.parametrize(
    ("drop", "value", "reason"),
    [
        ("sub", None, "missing claim: sub"),
        (ORG_CLAIM, None, f"missing claim: {ORG_CLAIM}"),
        (ORG_CLAIM, 7, f"missing claim: {ORG_CLAIM}"),
        ("exp", None, "missing claim: exp"),
        ("exp", 10**30, "invalid claim: exp"),
    ],
)
def test_required_claims(drop: str, value: object, reason: str) -> None:
    raw = claims({})
    if value is None:
        del raw[drop]
    else:
        raw[drop] = value
    with pytest.raises(InvalidToken) as info:
        principal_from_claims(raw, project_id=PROJECT, policy=DEFAULT_POLICY)
    assert info.value.reason == reason


def test_system_principal() -> None:
    assert SYSTEM.is_system
    assert SYSTEM.all_orgs
    assert all(SYSTEM.has(permission, "any-org") for permission in p.ALL_PERMISSIONS)
    user = Principal.from_roles(
        sub="system:opencsp-gateway",
        org_id="",
        roles={},
        policy=DEFAULT_POLICY,
        expires_at=SYSTEM.expires_at,
    )
    assert not user.is_system  # a token cannot claim to be the system by its sub
