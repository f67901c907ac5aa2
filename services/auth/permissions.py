"""Permission strings and the policy that maps ZITADEL roles to them.

Permissions are plain strings so a resolver declares what it needs in the same words the design uses.
Roles are what ZITADEL grants; the policy (a setting) decides what each role may do, so operators can
reshape roles without code changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import orjson

INSTANCE_READ = "instance:read"
"""Read one's own instances."""
INSTANCE_READ_ORG = "instance:read:org"
"""Read every instance of the org."""
INSTANCE_READ_NETWORK = "instance:read:network"
"""Read an instance's IP address and hostname."""
INSTANCE_READ_INTERNALS = "instance:read:internals"
"""Read the Terraform object, the Semaphore task and its log, the node."""
INSTANCE_CREATE = "instance:create"
INSTANCE_DELETE = "instance:delete"
"""Delete one's own instances."""
INSTANCE_DELETE_ORG = "instance:delete:org"
"""Delete any instance of the org."""
INSTANCE_RETRY = "instance:retry"
INSTANCE_LABEL = "instance:label"
"""Set the labels of one's own instances (`setInstanceLabels`)."""
INSTANCE_LABEL_ORG = "instance:label:org"
"""Set the labels of any instance of the org."""

INSTANCE_POWER = "instance:power"
"""Start, stop and reboot one's own instances; the org's too where one reads the whole org."""
INSTANCE_RESIZE = "instance:resize"
"""Resize one's own instances; the org's too where one reads the whole org."""
ADMIN_ALL_ORGS = "admin:all-orgs"
"""Act in every org with the permissions held in one's own org (see `principal_from_claims`)."""
ADMIN_SYNC = "admin:sync"
ADMIN_REVOKE = "admin:revoke"
"""Sign a user out at once (`revokeSessions`): in one's own org, or every org with admin:all-orgs."""
QUOTA_READ_ORG = "quota:read:org"
SCHEMA_INTROSPECT = "schema:introspect"
"""Introspect the schema and get "Did you mean …" suggestions in errors (see `schema.discovery`)."""
OPERATIONS_ADHOC = "operations:adhoc"
"""Send documents that are not in the trusted manifest while OPENCSP_DOCUMENTS_MODE=enforce."""

ALL_PERMISSIONS: frozenset[str] = frozenset(
    {
        INSTANCE_READ,
        INSTANCE_READ_ORG,
        INSTANCE_READ_NETWORK,
        INSTANCE_READ_INTERNALS,
        INSTANCE_CREATE,
        INSTANCE_DELETE,
        INSTANCE_DELETE_ORG,
        INSTANCE_RETRY,
        INSTANCE_LABEL,
        INSTANCE_LABEL_ORG,
        INSTANCE_POWER,
        INSTANCE_RESIZE,
        ADMIN_ALL_ORGS,
        ADMIN_SYNC,
        ADMIN_REVOKE,
        QUOTA_READ_ORG,
        SCHEMA_INTROSPECT,
        OPERATIONS_ADHOC,
    }
)

Policy = Mapping[str, frozenset[str]]
"""Role name → the permissions that role grants."""

_VIEWER = frozenset({INSTANCE_READ, INSTANCE_READ_ORG})
_USER = frozenset(
    {
        INSTANCE_READ,
        INSTANCE_READ_NETWORK,
        INSTANCE_CREATE,
        INSTANCE_DELETE,
        INSTANCE_LABEL,
        INSTANCE_POWER,
        INSTANCE_RESIZE,
    }
)
_OPERATOR = (
    _VIEWER
    | _USER
    | {
        INSTANCE_READ_INTERNALS,
        INSTANCE_DELETE_ORG,
        INSTANCE_RETRY,
        INSTANCE_LABEL_ORG,
        SCHEMA_INTROSPECT,
    }
)
_ADMIN = _OPERATOR | {ADMIN_ALL_ORGS, ADMIN_SYNC, ADMIN_REVOKE, QUOTA_READ_ORG, OPERATIONS_ADHOC}

DEFAULT_POLICY: Policy = {"viewer": _VIEWER, "user": _USER, "operator": _OPERATOR, "admin": _ADMIN}
"""The role table of DESIGN.md "Roles, permissions, field-level RBAC"."""


class PolicyError(ValueError):
    """A policy override is malformed; the message is one line naming the culprit."""


def parse_policy(value: str | bytes | Mapping[str, object]) -> Policy:
    """Read a policy override: a JSON object of role → list of permission strings.

    The override replaces the default policy as a whole (roles it omits grant nothing), so what an
    operator writes is exactly what applies. Unknown permissions are errors, not ignored, because a
    typo would otherwise silently withhold (or, for a future permission, grant) access.
    """
    if isinstance(value, str | bytes):
        try:
            raw: object = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise PolicyError(f"policy is not valid JSON ({exc})") from None
    else:
        raw = value
    if not isinstance(raw, Mapping):
        raise PolicyError("policy must be a JSON object of role -> list of permissions")
    policy: dict[str, frozenset[str]] = {}
    for role, permissions in raw.items():
        if not isinstance(role, str) or not role:
            raise PolicyError("policy role names must be non-empty strings")
        if isinstance(permissions, str | bytes) or not isinstance(permissions, Iterable):
            raise PolicyError(f"policy role {role!r}: permissions must be a list of strings")
        granted: set[str] = set()
        for permission in permissions:
            if not isinstance(permission, str):
                raise PolicyError(f"policy role {role!r}: permissions must be a list of strings")
            if permission not in ALL_PERMISSIONS:
                known = ", ".join(sorted(ALL_PERMISSIONS))
                raise PolicyError(f"policy role {role!r}: unknown permission {permission!r} (known: {known})")
            granted.add(permission)
        policy[role] = frozenset(granted)
    return policy


def with_schema_discovery(policy: Policy) -> Policy:
    """`policy` with `schema:introspect` and `operations:adhoc` added to every role (dev mode's table:
    GraphiQL sends documents no manifest holds)."""
    return {role: permissions | {SCHEMA_INTROSPECT, OPERATIONS_ADHOC} for role, permissions in policy.items()}


def permissions_for(roles: Iterable[str], policy: Policy) -> frozenset[str]:
    """The union of what `roles` grant; roles the policy does not name grant nothing."""
    granted: set[str] = set()
    for role in roles:
        granted |= policy.get(role, frozenset())
    return frozenset(granted)
