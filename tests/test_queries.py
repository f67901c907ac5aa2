"""Queries over HTTP against a migrated database: lookup, newest-first pages, filters, catalog."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from services.instances.states import InstanceStatus
from tests.support.factories import insert_instances, instance_row


async def gql(client: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await client.post("/graphql", json={"query": query, "variables": variables})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


LIST = """
query List($first: Int, $after: String, $filter: InstanceFilter) {
  instances(first: $first, after: $after, filter: $filter) {
    edges { cursor node { name status } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def test_instance_by_id_and_unknown_id(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    [row] = await insert_instances(engine, [instance_row(1)])
    query = "query($id: ID!) { instance(id: $id) { id name cpu memoryMib status events { toStatus actor } } }"
    body = await gql(client, query, id=str(row["id"]))
    assert body == {
        "data": {
            "instance": {
                "id": str(row["id"]),
                "name": "vm-0001",
                "cpu": 1,
                "memoryMib": 2048,
                "status": "ACTIVE",
                "events": [{"toStatus": "PENDING", "actor": "user-1"}],
            }
        }
    }
    assert await gql(client, query, id=str(uuid.uuid4())) == {"data": {"instance": None}}
    assert await gql(client, query, id="not-a-uuid") == {"data": {"instance": None}}


async def test_pages_walk_every_row_newest_first_without_gaps(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # Rows 0-6 share one timestamp and straddle the second page's end: ties are broken by id, on each
    # database's own comparison (the cursor itself is unit-tested in tests/unit/test_cursor.py).
    tied = instance_row(0)["created_at"]
    rows = await insert_instances(
        engine, [instance_row(i, **({"created_at": tied} if i < 7 else {})) for i in range(45)]
    )
    seen: list[str] = []
    after = None
    pages = 0
    while True:
        body = await gql(client, LIST, first=20, after=after)
        connection = body["data"]["instances"]
        seen += [edge["node"]["name"] for edge in connection["edges"]]
        pages += 1
        assert connection["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
        assert after == connection["edges"][-1]["cursor"]
    assert pages == 3
    newest_first = sorted(rows, key=lambda row: (row["created_at"], row["id"]), reverse=True)
    assert seen == [row["name"] for row in newest_first]
    assert seen[:38] == [f"vm-{i:04d}" for i in reversed(range(7, 45))]


async def test_first_defaults_to_20_and_is_capped_at_100(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    await insert_instances(engine, [instance_row(i) for i in range(120)])
    default = await gql(client, LIST)
    assert len(default["data"]["instances"]["edges"]) == 20
    capped = await gql(client, LIST, first=1000)
    assert len(capped["data"]["instances"]["edges"]) == 100
    assert capped["data"]["instances"]["pageInfo"]["hasNextPage"] is True


async def test_bad_paging_arguments_are_clear_errors(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    negative = await gql(client, LIST, first=-1)
    assert negative["data"] is None
    assert negative["errors"][0]["message"] == "first must not be negative"
    assert negative["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    forged = await gql(client, LIST, after="bm90LWEtY3Vyc29y")
    assert forged["errors"][0]["message"] == "the cursor is not one this API gave out"
    assert forged["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_filters_by_status_and_name(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    await insert_instances(
        engine,
        [
            instance_row(1, name="web-1"),
            instance_row(2, name="web-2", status=InstanceStatus.FAILED),
            instance_row(3, name="db_1", status=InstanceStatus.DELETED),
            instance_row(4, name="dbx1"),
        ],
    )

    async def names(filter: dict[str, Any]) -> list[str]:
        body = await gql(client, LIST, filter=filter)
        return [edge["node"]["name"] for edge in body["data"]["instances"]["edges"]]

    assert await names({"status": ["FAILED"]}) == ["web-2"]
    assert await names({"nameContains": "WEB"}) == ["web-2", "web-1"]
    # LIKE wildcards in the needle are literal characters.
    assert await names({"nameContains": "db_"}) == ["db_1"]
    assert await names({"includeDeleted": False}) == ["dbx1", "web-2", "web-1"]
    assert await names({"status": ["ACTIVE", "DELETED"], "nameContains": "db"}) == ["dbx1", "db_1"]


async def test_catalog_lists_configured_flavors_and_images(client: httpx.AsyncClient) -> None:
    body = await gql(client, "{ catalog { flavors { name cpu memoryMib diskGib } images { name } } }")
    flavors = body["data"]["catalog"]["flavors"]
    assert flavors[0] == {"name": "small", "cpu": 1, "memoryMib": 2048, "diskGib": 20}
    assert [image["name"] for image in body["data"]["catalog"]["images"]] == [
        "debian-12",
        "ubuntu-24.04",
        "rocky-9",
    ]


async def test_events_first_and_last_and_their_bounds(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    [row] = await insert_instances(engine, [instance_row(1)])
    from sqlalchemy import insert

    from services.db.models import InstanceEventRow

    statuses = [InstanceStatus.PROVISIONING, InstanceStatus.CONFIGURING, InstanceStatus.ACTIVE]
    async with engine.begin() as connection:
        for version, status in enumerate(statuses, start=2):
            await connection.execute(
                insert(InstanceEventRow).values(
                    instance_id=row["id"],
                    at=row["created_at"],
                    to_status=status,
                    actor="system",
                    version=version,
                )
            )
    query = (
        "query($id: ID!, $f: Int, $l: Int) { instance(id: $id) { events(first: $f, last: $l) { toStatus } } }"
    )

    async def events(**arguments: int) -> list[str]:
        body = await gql(client, query, id=str(row["id"]), **arguments)
        return [event["toStatus"] for event in body["data"]["instance"]["events"]]

    assert await events() == ["PENDING", "PROVISIONING", "CONFIGURING", "ACTIVE"]
    assert await events(f=2) == ["PENDING", "PROVISIONING"]
    assert await events(l=2) == ["CONFIGURING", "ACTIVE"]
    assert await events(l=0) == []
    both = await gql(client, query, id=str(row["id"]), f=1, l=1)
    assert both["errors"][0]["message"] == "give first or last, not both"
    too_many = await gql(client, query, id=str(row["id"]), f=51)
    assert too_many["errors"][0]["message"] == "first must be between 0 and 50"
