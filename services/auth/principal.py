"""The authenticated caller and what it may do, derived once from the token's claims.

ZITADEL grants roles per org: its role claims read `{"<role>": {"<orgId>": "<orgDomain>"}}`, and a role
counts only in the orgs it names. So a `Principal` keeps permissions per org, and a check names the org
it is about (by default the caller's own org, `urn:zitadel:iam:user:resourceowner:id`).

`admin:all-orgs` is the one permission that crosses orgs. It is honoured only when an admin org is
configured and the caller's own org is that org, and the permission is held there; then the caller may
use, in every org, the permissions it holds in its own org. It fails closed: with no admin org
configured nobody crosses orgs, and an `admin` acts in its own org only. So a customer org's managers
cannot mint platform admins, whether by granting `admin` to an outsider (a role granted by some other
org never reaches beyond that org) or to their own users.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from services.auth.errors import InvalidToken
from services.auth.permissions import ADMIN_ALL_ORGS, ALL_PERMISSIONS, Policy, permissions_for

ROLES_CLAIM = "urn:zitadel:iam:org:project:roles"
ORG_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
_EMPTY: frozenset[str] = frozenset()
MAX_SESSION_ID_CHARS = 255


def project_roles_claim(project_id: str) -> str:
    """The project-specific roles claim, which ZITADEL sends alongside (or instead of) the generic one."""
    return f"urn:zitadel:iam:org:project:{project_id}:roles"


@dataclass(frozen=True)
class Principal:
    """Who is calling; immutable, so it can be cached with the token and shared across requests."""

    sub: str
    name: str
    email: str
    org_id: str
    expires_at: datetime
    roles: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """org id → roles granted in that org."""
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)
    """org id → permissions granted in that org (the policy applied to `roles`)."""
    global_permissions: frozenset[str] = _EMPTY
    """Permissions valid in every org (only set through `admin:all-orgs`, see the module docstring)."""
    kind: Literal["user", "system"] = "user"
    issued_at: datetime | None = None
    """The token's `iat`: a revocation covers tokens issued at or before it (`services.auth.revocation`)."""
    session_id: str | None = None
    """The token's `sid`, when it has one (ZITADEL's access tokens do not); a logout may name it."""

    @classmethod
    def from_roles(
        cls,
        *,
        sub: str,
        org_id: str,
        roles: Mapping[str, frozenset[str]],
        policy: Policy,
        expires_at: datetime,
        name: str = "",
        email: str = "",
        admin_org_id: str | None = None,
        issued_at: datetime | None = None,
        session_id: str | None = None,
    ) -> Principal:
        """Apply `policy` to per-org `roles`; the single place permissions are derived."""
        grants = {org: permissions_for(org_roles, policy) for org, org_roles in roles.items()}
        grants = {org: perms for org, perms in grants.items() if perms}
        home = grants.get(org_id, _EMPTY)
        crosses_orgs = ADMIN_ALL_ORGS in home and bool(admin_org_id) and org_id == admin_org_id
        if ADMIN_ALL_ORGS in home and not crosses_orgs:
            # Inert outside the admin org: leave it out, so `me` and every check say the same thing.
            home = home - {ADMIN_ALL_ORGS}
            grants[org_id] = home
        return cls(
            sub=sub,
            name=name,
            email=email,
            org_id=org_id,
            expires_at=expires_at,
            roles=dict(roles),
            grants=grants,
            global_permissions=home if crosses_orgs else _EMPTY,
            issued_at=issued_at,
            session_id=session_id,
        )

    @property
    def permissions(self) -> frozenset[str]:
        """What the principal may do in its own org."""
        return self.grants.get(self.org_id, _EMPTY) | self.global_permissions

    @property
    def all_orgs(self) -> bool:
        """True when the principal may act in every org (a platform admin, or `SYSTEM`)."""
        return ADMIN_ALL_ORGS in self.global_permissions

    @property
    def is_system(self) -> bool:
        return self.kind == "system"

    def has(self, permission: str, org_id: str | None = None) -> bool:
        """Whether the principal holds `permission` in `org_id` (default: its own org)."""
        org = self.org_id if org_id is None else org_id
        return permission in self.global_permissions or permission in self.grants.get(org, _EMPTY)

    def permissions_in(self, org_id: str) -> frozenset[str]:
        return self.grants.get(org_id, _EMPTY) | self.global_permissions


SYSTEM = Principal(
    sub="system:opencsp-gateway",
    name="OpenCSP gateway",
    email="",
    org_id="",
    expires_at=datetime.max.replace(tzinfo=UTC),
    global_permissions=ALL_PERMISSIONS,
    kind="system",
)
"""The actor of transitions the gateway makes on its own (cluster watch, reconciliation), for audit."""


def principal_from_claims(
    claims: Mapping[str, Any], *, project_id: str, policy: Policy, admin_org_id: str | None = None
) -> Principal:
    """Build the `Principal` of already verified claims.

    Roles are merged from the generic and the project-specific roles claim. Malformed role entries are
    skipped (they can only grant less); a missing subject, org or expiry rejects the token, because
    without them nothing downstream can be scoped or cached safely.
    """
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise InvalidToken("missing claim: sub")
    org_id = claims.get(ORG_CLAIM)
    if not isinstance(org_id, str) or not org_id:
        raise InvalidToken(f"missing claim: {ORG_CLAIM}")
    roles: dict[str, set[str]] = {}
    for claim in (ROLES_CLAIM, project_roles_claim(project_id)):
        _collect_roles(claims.get(claim), roles)
    name = _first_str(claims, "name", "preferred_username")
    return Principal.from_roles(
        sub=sub,
        org_id=org_id,
        roles={org: frozenset(org_roles) for org, org_roles in roles.items()},
        policy=policy,
        expires_at=_expiry(claims.get("exp")),
        name=name,
        email=_first_str(claims, "email"),
        admin_org_id=admin_org_id,
        issued_at=_issued_at(claims.get("iat")),
        session_id=_session_id(claims.get("sid")),
    )


def _collect_roles(value: object, into: dict[str, set[str]]) -> None:
    if not isinstance(value, Mapping):
        return
    for role, orgs in value.items():
        if not isinstance(role, str) or not role or not isinstance(orgs, Mapping):
            continue
        for org in orgs:
            if isinstance(org, str) and org:
                into.setdefault(org, set()).add(role)


def _first_str(claims: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = claims.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _expiry(exp: object) -> datetime:
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise InvalidToken("missing claim: exp")
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("invalid claim: exp") from None


def _issued_at(iat: object) -> datetime | None:
    """None when absent or unreadable: a revocation of the subject then covers the token (fails closed)."""
    if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
        return None
    try:
        return datetime.fromtimestamp(iat, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _session_id(sid: object) -> str | None:
    return sid if isinstance(sid, str) and 0 < len(sid) <= MAX_SESSION_ID_CHARS else None
