"""Field-level and row-level RBAC over HTTP, for every role of the default policy and a token with none.

Three instances: A1 (org-a, owned by `user-1`, ACTIVE), A2 (org-a, someone else's, FAILED) and B1 (org-b,
also owned by a `user-1`, FAILED). Tokens come from `Issuer` with the sub `<role>-1` in org-a unless said
otherwise. Responses are compared whole: data exactly, and errors by path, message and code.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.permissions import DEFAULT_POLICY
from services.instances.states import InstanceStatus
from tests.conftest import AppFactory, Issuer
from tests.support.factories import insert_instances, instance_row

ROLES: list[str | None] = [None, "viewer", "user", "operator", "admin"]
NETWORK = "instance:read:network"
INTERNALS = "instance:read:internals"
FIELD_PERMISSIONS = {
    "ipAddress": NETWORK,
    "hostname": NETWORK,
    "statusDetail": INTERNALS,
    "node": INTERNALS,
    "terraform": INTERNALS,
    "semaphoreTask": INTERNALS,
}
MUTATION_PERMISSIONS = {
    "createInstance": "instance:create",
    "deleteInstance": "instance:delete",
    "retryInstance": "instance:retry",
    "syncInstances": "admin:sync",
    "revokeSessions": "admin:revoke",
}
INSTANCE_FIELDS = (
    "name orgId statusDetail ipAddress hostname node terraform { name exists } semaphoreTask { id }"
)
LIST = {"query": f"{{ instances {{ nodes {{ {INSTANCE_FIELDS} }} }} }}"}
ONE = f"query($id: ID!) {{ instance(id: $id) {{ {INSTANCE_FIELDS} }} }}"
ME = "{ me { sub name email orgId roles { orgId roles } permissions tokenExpiresAt } }"
PAYLOAD = "instance { name orgId ownerSub status } userErrors { field message code }"
CREATE = (
    'mutation { createInstance(input: {name: "new-vm", flavor: "small", image: "debian-12"}) '
    f"{{ {PAYLOAD} }} }}"
)
DELETE = f"mutation($id: ID!) {{ deleteInstance(id: $id) {{ {PAYLOAD} }} }}"
RETRY = f"mutation($id: ID!) {{ retryInstance(id: $id) {{ {PAYLOAD} }} }}"
SYNC = "mutation { syncInstances { objectsWithoutRows rowsWithoutObjects transitions } }"
REVOKE = 'mutation { revokeSessions(sub: "gone-1") { sub orgId revokedAt userErrors { code } } }'
NOT_FOUND = {"field": "id", "message": "no such instance", "code": "NOT_FOUND"}

# What each role may see and read, straight from DESIGN.md's table (and DEFAULT_POLICY).
VISIBLE: dict[str | None, list[str]] = {
    None: [],
    "viewer": ["a2", "a1"],
    "user": ["a1"],
    "operator": ["a2", "a1"],
    "admin": ["b1", "a2", "a1"],
}
READABLE: dict[str | None, set[str]] = {
    None: set(),
    "viewer": set(),
    "user": {"ipAddress", "hostname"},
    "operator": set(FIELD_PERMISSIONS),
    "admin": set(FIELD_PERMISSIONS),
}
MAY_RUN: dict[str | None, set[str]] = {
    None: set(),
    "viewer": set(),
    "user": {"createInstance", "deleteInstance"},
    "operator": {"createInstance", "deleteInstance", "retryInstance"},
    "admin": set(MUTATION_PERMISSIONS),
}


def rows() -> dict[str, dict[str, object]]:
    common = {"terraform_namespace": "opencsp-instances"}
    return {
        "a1": instance_row(
            1,
            name="a1",
            status_reason="ConfigurationSucceeded",
            status_message="Semaphore task 11 succeeded",
            node="pve-1",
            terraform_name="tf-a1",
            semaphore_task_id=11,
            **common,
        ),
        "a2": instance_row(
            2,
            name="a2",
            owner_sub="someone-else",
            status=InstanceStatus.FAILED,
            status_reason="TFExecApplyFailed",
            status_message="node pve-2 storage local-lvm: clone of template 9000 failed",
            node="pve-2",
            terraform_name="tf-a2",
            semaphore_task_id=12,
            **common,
        ),
        "b1": instance_row(
            3,
            name="b1",
            org_id="org-b",
            status=InstanceStatus.FAILED,
            status_reason="TFExecApplyFailed",
            status_message="node pve-3 storage local-lvm: clone of template 9000 failed",
            node="pve-3",
            terraform_name="tf-b1",
            semaphore_task_id=13,
            **common,
        ),
    }


@pytest.fixture
async def instances(engine: AsyncEngine) -> dict[str, str]:
    """The three instances by name → id."""
    inserted = rows()
    await insert_instances(engine, list(inserted.values()))
    return {name: str(row["id"]) for name, row in inserted.items()}


def full_view(name: str) -> dict[str, Any]:
    row = rows()[name]
    return {
        "name": name,
        "orgId": row["org_id"],
        "statusDetail": row.get("status_message"),
        "ipAddress": row["ip_address"],
        "hostname": row["hostname"],
        "node": row["node"],
        "terraform": {"name": row["terraform_name"], "exists": False},
        "semaphoreTask": {"id": row["semaphore_task_id"]},
    }


def view_as(name: str, readable: set[str]) -> dict[str, Any]:
    """The instance as a caller who may read only `readable` of the guarded fields sees it."""
    return {
        key: (None if key in FIELD_PERMISSIONS and key not in readable else value)
        for key, value in full_view(name).items()
    }


def forbidden(path: list[str | int], permission: str) -> dict[str, Any]:
    return {
        "message": f"requires the permission {permission}",
        "path": path,
        "extensions": {"code": "FORBIDDEN", "permission": permission},
    }


def errors_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Errors without `locations` (they depend on the document's layout), in a stable order."""
    errors = [{k: v for k, v in error.items() if k != "locations"} for error in body.get("errors", [])]
    return sorted(errors, key=lambda error: orjson.dumps(error))


async def post(
    client: httpx.AsyncClient, headers: dict[str, str], query: str, **variables: Any
) -> httpx.Response:
    return await client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)


def expiry_of(headers: dict[str, str]) -> str:
    segment = headers["Authorization"].split(".")[1]
    claims = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return datetime.fromtimestamp(claims["exp"], UTC).isoformat()


def name_of(role: str | None) -> str:
    return role or "none"


# -- the matrix ------------------------------------------------------------------------------------


async def test_reads_for_every_role(
    anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    """Table-driven (reads change nothing), so the whole matrix costs one database per backend."""
    for role in ROLES:
        await check_reads(role, anonymous, issuer, instances)

    # A denied field leaves the rest of the response standing.
    query = "{ me { sub } catalog { flavors { name } } instances { nodes { name node } } }"
    response = await post(anonymous, issuer.headers("viewer"), query)
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["me"] == {"sub": "viewer-1"}
    assert body["data"]["catalog"]["flavors"]
    assert body["data"]["instances"] == {
        "nodes": [{"name": "a2", "node": None}, {"name": "a1", "node": None}]
    }
    assert errors_of(body) == [
        forbidden(["instances", "nodes", 0, "node"], INTERNALS),
        forbidden(["instances", "nodes", 1, "node"], INTERNALS),
    ]


async def check_reads(
    role: str | None, anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    case = name_of(role)
    headers = issuer.headers(role)
    response = await post(anonymous, headers, LIST["query"])
    assert response.status_code == 200, case
    visible = VISIBLE[role]
    readable = READABLE[role]
    body = response.json()
    assert body["data"] == {"instances": {"nodes": [view_as(name, readable) for name in visible]}}, case
    assert errors_of(body) == errors_of(
        {
            "errors": [
                forbidden(["instances", "nodes", index, field], permission)
                for index, _ in enumerate(visible)
                for field, permission in FIELD_PERMISSIONS.items()
                if field not in readable
            ]
        }
    ), case

    # One instance by id: the same rules, and an invisible one is null without an error.
    for name, instance_id in instances.items():
        one = (await post(anonymous, headers, ONE, id=instance_id)).json()
        if name in visible:
            assert one["data"] == {"instance": view_as(name, readable)}, (case, name)
            assert errors_of(one) == errors_of(
                {
                    "errors": [
                        forbidden(["instance", field], permission)
                        for field, permission in FIELD_PERMISSIONS.items()
                        if field not in readable
                    ]
                }
            ), (case, name)
        else:
            assert one == {"data": {"instance": None}}, (case, name)

    me = await post(anonymous, headers, ME)
    assert me.status_code == 200, case
    assert me.json() == {
        "data": {
            "me": {
                "sub": f"{case}-1",
                "name": "Dev User",
                "email": "dev@localhost",
                "orgId": "org-a",
                "roles": [{"orgId": "org-a", "roles": [role]}] if role else [],
                "permissions": sorted(DEFAULT_POLICY[role]) if role else [],
                "tokenExpiresAt": expiry_of(headers),
            }
        }
    }, case


@pytest.mark.parametrize("role", ROLES, ids=name_of)
async def test_mutations_per_role(
    role: str | None, anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    headers = issuer.headers(role)
    sub = f"{name_of(role)}-1"
    calls = {
        "createInstance": (CREATE, {}),
        "deleteInstance": (DELETE, {"id": instances["a1"]}),
        "retryInstance": (RETRY, {"id": instances["a2"]}),
        "syncInstances": (SYNC, {}),
        "revokeSessions": (REVOKE, {}),
    }
    outcomes = {
        "createInstance": {
            "instance": {"name": "new-vm", "orgId": "org-a", "ownerSub": sub, "status": "PENDING"},
            "userErrors": [],
        },
        "deleteInstance": {
            "instance": {"name": "a1", "orgId": "org-a", "ownerSub": "user-1", "status": "DELETED"},
            "userErrors": [],
        },
        "retryInstance": {
            "instance": {"name": "a2", "orgId": "org-a", "ownerSub": "someone-else", "status": "PENDING"},
            "userErrors": [],
        },
    }
    for field, (query, variables) in calls.items():
        response = await post(anonymous, headers, query, **variables)
        body = response.json()
        if field in MAY_RUN[role]:
            assert response.status_code == 200, (field, body)
            assert "errors" not in body, (field, body)
            if field == "syncInstances":
                report = body["data"][field]
                assert set(report) == {"objectsWithoutRows", "rowsWithoutObjects", "transitions"}
                assert isinstance(report["transitions"], int)
            elif field == "revokeSessions":
                lockout = body["data"][field]
                # An admin of the admin org (org-a here) locks the subject out in every org.
                assert (lockout["sub"], lockout["orgId"], lockout["userErrors"]) == ("gone-1", None, [])
                assert lockout["revokedAt"]
            else:
                assert body["data"] == {field: outcomes[field]}, field
        else:
            assert response.status_code == 403, (field, body)
            assert body["data"] is None, field
            assert errors_of(body) == [forbidden([field], MUTATION_PERMISSIONS[field])], field


# -- row-level rules ---------------------------------------------------------------------------------


async def test_a_user_never_touches_another_users_instance(
    make_app: AppFactory, issuer: Issuer, instances: dict[str, str]
) -> None:
    # A policy where users may also retry, so retry is refused by the row rule and not by the field rule.
    policy = {role: sorted(permissions) for role, permissions in DEFAULT_POLICY.items()}
    policy["user"].append("instance:retry")
    app = await make_app(rbac_policy=policy)
    user = issuer.headers("user")
    missing = str(uuid.uuid4())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        for query in (ONE, DELETE, RETRY):
            absent = (await post(client, user, query, id=missing)).json()
            for name in ("a2", "b1"):  # someone else's; the same sub but another org
                hidden = await post(client, user, query, id=instances[name])
                assert hidden.status_code == 200
                assert hidden.json() == absent, (query, name)
        assert absent == {"data": {"retryInstance": {"instance": None, "userErrors": [NOT_FOUND]}}}

        # Nothing happened to them.
        admin = issuer.headers("admin")
        statuses = (await post(client, admin, "{ instances { nodes { name status } } }")).json()
        assert statuses == {
            "data": {
                "instances": {
                    "nodes": [
                        {"name": "b1", "status": "FAILED"},
                        {"name": "a2", "status": "FAILED"},
                        {"name": "a1", "status": "ACTIVE"},
                    ]
                }
            }
        }


async def test_org_wide_roles_stop_at_the_org_but_admin_all_orgs_does_not(
    anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    missing = str(uuid.uuid4())
    for role in ("viewer", "operator"):
        headers = issuer.headers(role)
        assert (await post(anonymous, headers, ONE, id=instances["b1"])).json() == {
            "data": {"instance": None}
        }
        if role == "operator":
            for query, field in ((DELETE, "deleteInstance"), (RETRY, "retryInstance")):
                hidden = (await post(anonymous, headers, query, id=instances["b1"])).json()
                absent = (await post(anonymous, headers, query, id=missing)).json()
                assert hidden == absent == {"data": {field: {"instance": None, "userErrors": [NOT_FOUND]}}}
    # admin:all-orgs: an admin of org-a reads org-b's instance, guarded fields included.
    body = (await post(anonymous, issuer.headers("admin"), ONE, id=instances["b1"])).json()
    assert body == {"data": {"instance": full_view("b1")}}


async def test_the_admin_org_setting_confines_other_orgs_admins(
    make_app: AppFactory, issuer: Issuer, instances: dict[str, str]
) -> None:
    app = await make_app(oidc_admin_org_id="platform")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        org_admin = (await post(client, issuer.headers("admin"), "{ instances { nodes { name } } }")).json()
        assert org_admin == {"data": {"instances": {"nodes": [{"name": "a2"}, {"name": "a1"}]}}}
        platform = issuer.headers("admin", sub="root", org="platform")
        everyone = (await post(client, platform, "{ instances { nodes { name } } }")).json()
        assert everyone == {
            "data": {"instances": {"nodes": [{"name": "b1"}, {"name": "a2"}, {"name": "a1"}]}}
        }


@pytest.mark.parametrize("admin_org", [None, "", "platform"])
async def test_without_the_admin_org_an_admin_acts_in_its_own_org_only(
    make_app: AppFactory, issuer: Issuer, instances: dict[str, str], admin_org: str | None
) -> None:
    """Fail closed: unset (as the shipped configmaps leave it), empty or another org: org-b's admin stays."""
    app = await make_app(oidc_admin_org_id=admin_org)
    org_b_admin = issuer.headers("admin", sub="b-admin", org="org-b")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        listed = (await post(client, org_b_admin, LIST["query"])).json()
        assert listed == {"data": {"instances": {"nodes": [full_view("b1")]}}}
        for name in ("a1", "a2"):  # org-a's instances, IP addresses included, stay hidden
            hidden = (await post(client, org_b_admin, ONE, id=instances[name])).json()
            assert hidden == {"data": {"instance": None}}
            deleted = (await post(client, org_b_admin, DELETE, id=instances[name])).json()
            assert deleted == {"data": {"deleteInstance": {"instance": None, "userErrors": [NOT_FOUND]}}}
        # `me` says what the checks do: admin:all-orgs is not among its permissions.
        me = (await post(client, org_b_admin, ME)).json()["data"]["me"]
        assert me["permissions"] == sorted(DEFAULT_POLICY["admin"] - {"admin:all-orgs"})
        # Its own org's business is unchanged.
        assert (await post(client, org_b_admin, ONE, id=instances["b1"])).json() == {
            "data": {"instance": full_view("b1")}
        }


async def test_the_admin_org_admin_crosses_orgs(
    make_app: AppFactory, issuer: Issuer, instances: dict[str, str]
) -> None:
    app = await make_app(oidc_admin_org_id="org-b")
    org_b_admin = issuer.headers("admin", sub="b-admin", org="org-b")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        listed = (await post(client, org_b_admin, LIST["query"])).json()
        assert listed == {"data": {"instances": {"nodes": [full_view(n) for n in ("b1", "a2", "a1")]}}}
        me = (await post(client, org_b_admin, ME)).json()["data"]["me"]
        assert me["permissions"] == sorted(DEFAULT_POLICY["admin"])
        # org-a's admin is now an admin of org-a only.
        org_a_admin = (await post(client, issuer.headers("admin"), "{ instances { nodes { name } } }")).json()
        assert org_a_admin == {"data": {"instances": {"nodes": [{"name": "a2"}, {"name": "a1"}]}}}


async def test_a_role_granted_in_another_org_counts_only_there(
    anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    # An operator of org-b whose own org is org-a.
    headers = issuer.headers("operator", sub="guest", role_org="org-b")
    listed = (await post(anonymous, headers, LIST["query"])).json()
    assert listed == {"data": {"instances": {"nodes": [full_view("b1")]}}}, "internals readable in org-b"
    for name in ("a1", "a2"):
        assert (await post(anonymous, headers, ONE, id=instances[name])).json() == {
            "data": {"instance": None}
        }
    me = (await post(anonymous, headers, ME)).json()["data"]["me"]
    assert (me["orgId"], me["roles"], me["permissions"]) == (
        "org-a",
        [{"orgId": "org-b", "roles": ["operator"]}],
        [],
    )
    # Mutations are checked in the caller's own org, where the role does not count.
    created = await post(anonymous, headers, CREATE)
    assert created.status_code == 403
    assert errors_of(created.json()) == [forbidden(["createInstance"], "instance:create")]

    # A user granted in org-b only: own instances count in one's own org, so nothing is visible.
    guest_user = issuer.headers("user", role_org="org-b")
    assert (await post(anonymous, guest_user, "{ instances { nodes { name } } }")).json() == {
        "data": {"instances": {"nodes": []}}
    }


async def test_peer_text_is_guarded_in_the_org_of_its_instance(
    anonymous: httpx.AsyncClient, issuer: Issuer, instances: dict[str, str]
) -> None:
    # An operator of org-a who is only a viewer in org-b: internals count in org-a, not on org-b's rows.
    headers = issuer.headers(sub="guest", grants={"org-a": ["operator"], "org-b": ["viewer"]})
    query = "query($id: ID!) { instance(id: $id) { statusReason statusDetail events { reason detail } } }"

    own = (await post(anonymous, headers, query, id=instances["a2"])).json()
    other = (await post(anonymous, headers, query, id=instances["b1"])).json()

    assert own == {
        "data": {
            "instance": {
                "statusReason": "TFExecApplyFailed",
                "statusDetail": rows()["a2"]["status_message"],
                "events": [{"reason": None, "detail": None}],
            }
        }
    }
    assert other["data"] == {
        "instance": {
            "statusReason": "TFExecApplyFailed",
            "statusDetail": None,
            "events": [{"reason": None, "detail": None}],
        }
    }
    assert errors_of(other) == [
        forbidden(["instance", "events", 0, "detail"], INTERNALS),
        forbidden(["instance", "statusDetail"], INTERNALS),
    ]


async def test_sync_names_cluster_objects_only_to_internals_readers(
    make_app: AppFactory, issuer: Issuer, instances: dict[str, str]
) -> None:
    policy = {role: sorted(permissions) for role, permissions in DEFAULT_POLICY.items()}
    policy["syncer"] = ["instance:read", "admin:sync"]
    app = await make_app(rbac_policy=policy)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        syncer = (await post(client, issuer.headers("syncer"), SYNC)).json()
        admin = (await post(client, issuer.headers("admin"), SYNC)).json()

    assert syncer["data"]["syncInstances"]["objectsWithoutRows"] is None
    assert isinstance(syncer["data"]["syncInstances"]["transitions"], int)
    assert errors_of(syncer) == [forbidden(["syncInstances", "objectsWithoutRows"], INTERNALS)]
    assert isinstance(admin["data"]["syncInstances"]["objectsWithoutRows"], list)
    assert "errors" not in admin
