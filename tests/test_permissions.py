"""The @requires guard: denied fields are null with FORBIDDEN at their path; denied operations are 403."""

from __future__ import annotations

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Issuer
from tests.support.factories import insert_instances, instance_row

CREATE = """
mutation { createInstance(input: {name: "vm-1", flavor: "small", image: "debian-12"}) { instance { id } } }
"""


async def test_a_denied_mutation_is_403_forbidden(anonymous: httpx.AsyncClient, issuer: Issuer) -> None:
    response = await anonymous.post("/graphql", json={"query": CREATE}, headers=issuer.headers("viewer"))
    assert response.status_code == 403
    body = response.json()
    assert body["data"] is None
    assert body["errors"][0]["path"] == ["createInstance"]
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN", "permission": "instance:create"}


async def test_a_denied_field_is_null_and_the_rest_stands(
    anonymous: httpx.AsyncClient, issuer: Issuer, engine: AsyncEngine
) -> None:
    [row] = await insert_instances(engine, [instance_row(1)])
    query = "query($id: ID!) { instance(id: $id) { name ipAddress node } }"
    response = await anonymous.post(
        "/graphql",
        json={"query": query, "variables": {"id": str(row["id"])}},
        headers=issuer.headers("viewer"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["data"] == {"instance": {"name": "vm-0001", "ipAddress": None, "node": None}}
    assert sorted((e["path"][-1], e["extensions"]["code"]) for e in body["errors"]) == [
        ("ipAddress", "FORBIDDEN"),
        ("node", "FORBIDDEN"),
    ]


async def test_a_mutation_document_with_a_denied_field_runs_nothing(
    anonymous: httpx.AsyncClient, issuer: Issuer
) -> None:
    mixed = """
    mutation {
      createInstance(input: {name: "vm-1", flavor: "small", image: "debian-12"}) { instance { id } }
      ...sync
    }
    fragment sync on Mutation { report: syncInstances { transitions } }
    """
    response = await anonymous.post("/graphql", json={"query": mixed}, headers=issuer.headers("user"))
    assert response.status_code == 403
    body = response.json()
    assert body == {
        "data": None,
        "errors": [
            {
                "message": "requires the permission admin:sync",
                "path": ["report"],
                "extensions": {"code": "FORBIDDEN", "permission": "admin:sync"},
            }
        ],
    }
    listed = await anonymous.post(
        "/graphql", json={"query": "{ instances { nodes { id } } }"}, headers=issuer.headers("user")
    )
    assert listed.json() == {"data": {"instances": {"nodes": []}}}
