"""quota / orgQuota over HTTP, and instances(orderBy:) pages under each order."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from services.instances.states import InstanceStatus
from tests.conftest import AppFactory, Issuer
from tests.support.factories import insert_instances, instance_row
from tests.test_queries import gql

QUOTA = """
query {
  quota { instances { used limit } cpu { used limit } memoryMib { used limit } }
  orgQuota { instances { used limit } cpu { used limit } memoryMib { used limit } }
}
"""
CREATE = """
mutation($input: CreateInstanceInput!) { createInstance(input: $input) { userErrors { message code } } }
"""
OWN_QUOTA = "query { quota { instances { used limit } cpu { used limit } memoryMib { used limit } } }"
PAGE = """
query($first: Int, $after: String, $orderBy: InstanceOrder) {
  instances(first: $first, after: $after, orderBy: $orderBy) {
    edges { cursor node { name } }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def usage(instances: tuple[int, int], cpu: tuple[int, int], memory: tuple[int, int]) -> dict[str, Any]:
    return {
        "instances": {"used": instances[0], "limit": instances[1]},
        "cpu": {"used": cpu[0], "limit": cpu[1]},
        "memoryMib": {"used": memory[0], "limit": memory[1]},
    }


def caller(app: Starlette, issuer: Issuer, role: str, sub: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://gateway",
        headers=issuer.headers(role, sub=sub),
    )


async def test_quota_counts_what_the_create_check_counts(
    make_app: AppFactory, issuer: Issuer, engine: AsyncEngine
) -> None:
    app = await make_app(quota_user_instances=3, quota_org_cpu=9)
    await insert_instances(
        engine,
        [
            instance_row(1, owner_sub="user-1"),
            instance_row(2, owner_sub="user-1", status=InstanceStatus.PENDING, cpu=4, memory_mib=8192),
            instance_row(3, owner_sub="user-1", status=InstanceStatus.FAILED),
            instance_row(4, owner_sub="user-1", status=InstanceStatus.DELETED, cpu=64),  # freed
            instance_row(5, owner_sub="user-2"),
            instance_row(6, owner_sub="user-1", org_id="org-b", cpu=32),  # another org
        ],
    )
    async with (
        caller(app, issuer, "user", "user-1") as user,
        caller(app, issuer, "admin", "admin-1") as admin,
    ):
        mine = await gql(user, OWN_QUOTA)
        assert mine == {"data": {"quota": usage((3, 3), (6, 32), (12288, 65536))}}
        # The same figures refuse the next create.
        new = {"name": "one-more", "flavor": "small", "image": "debian-12"}
        refused = await gql(user, CREATE, input=new)
        assert refused["data"]["createInstance"]["userErrors"] == [
            {
                "message": "the user quota of 3 instances would be exceeded (3 in use)",
                "code": "QUOTA_EXCEEDED",
            }
        ]
        # orgQuota needs quota:read:org, which only admin has by default.
        denied = await gql(user, QUOTA)
        assert denied["data"] == {"quota": mine["data"]["quota"], "orgQuota": None}
        assert [(e["path"], e["extensions"]["code"]) for e in denied["errors"]] == [
            (["orgQuota"], "FORBIDDEN")
        ]
        both = await gql(admin, QUOTA)
        assert both == {
            "data": {
                "quota": usage((0, 3), (0, 32), (0, 65536)),
                "orgQuota": usage((4, 50), (7, 9), (14336, 262144)),
            }
        }


async def walk(client: httpx.AsyncClient, order: dict[str, str] | None, first: int = 2) -> list[str]:
    names: list[str] = []
    after = None
    while True:
        body = await gql(client, PAGE, first=first, after=after, orderBy=order)
        connection = body["data"]["instances"]
        names += [edge["node"]["name"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            return names
        after = connection["pageInfo"]["endCursor"]


async def test_pages_walk_every_row_once_under_each_order(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # Names out of creation order; "web" twice (two orgs) so the id must break the tie; equal times too.
    names = ["web", "alpha", "zulu", "mike", "web", "bravo", "echo"]
    tied = instance_row(0)["created_at"]
    rows = await insert_instances(
        engine,
        [
            instance_row(
                i,
                name=name,
                org_id="org-b" if i == 4 else "org-a",
                **({"created_at": tied} if i in (2, 3) else {}),
            )
            for i, name in enumerate(names)
        ],
    )
    by_name = sorted(rows, key=lambda r: (str(r["name"]), str(r["id"])))
    by_time = sorted(rows, key=lambda r: (str(r["created_at"]), str(r["id"])))
    # UUIDs compare alike as text and as the databases' uuid types only in their canonical form; check it.
    assert await walk(client, {"field": "NAME", "direction": "ASC"}) == [r["name"] for r in by_name]
    assert await walk(client, {"field": "NAME", "direction": "DESC"}) == [
        r["name"] for r in reversed(by_name)
    ]
    assert await walk(client, {"field": "CREATED_AT", "direction": "ASC"}) == [r["name"] for r in by_time]
    assert await walk(client, None) == [r["name"] for r in reversed(by_time)]
    assert await walk(client, {"field": "CREATED_AT"}) == [
        r["name"] for r in reversed(by_time)
    ]  # DESC default


async def test_a_cursor_is_refused_under_another_order(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await insert_instances(engine, [instance_row(i) for i in range(3)])
    first = await gql(client, PAGE, first=1, orderBy={"field": "NAME", "direction": "ASC"})
    cursor = first["data"]["instances"]["pageInfo"]["endCursor"]
    for other in (None, {"field": "NAME", "direction": "DESC"}, {"field": "CREATED_AT", "direction": "ASC"}):
        body = await gql(client, PAGE, first=1, after=cursor, orderBy=other)
        assert body["data"] is None
        error = body["errors"][0]
        assert error["message"].startswith("the cursor belongs to orderBy NAME ASC, not ")
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
    same = await gql(client, PAGE, first=5, after=cursor, orderBy={"field": "NAME", "direction": "ASC"})
    assert [e["node"]["name"] for e in same["data"]["instances"]["edges"]] == ["vm-0001", "vm-0002"]
