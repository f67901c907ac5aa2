"""GraphQL documents and steps the suites share."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:  # the benchmarks read the documents without loading the suites' fixtures
    from tests.conftest import Issuer

LIFECYCLE = ["PENDING", "PROVISIONING", "CONFIGURING", "ACTIVE"]
CHANGES = "subscription { instanceStatusChanges { instance { id name } from to } }"
CREATE = """
mutation($name: String!) {
  createInstance(input: {name: $name, flavor: "small", image: "debian-12"}) {
    instance { id status }
    userErrors { code message }
  }
}
"""


async def create_instance(
    base: str, issuer: Issuer, name: str, role: str = "user", sub: str = "alice"
) -> str:
    """Order an instance over HTTP as `sub` with `role`; its id."""
    async with httpx.AsyncClient(base_url=base, headers=issuer.headers(role, sub=sub)) as http:
        body = (await http.post("/graphql", json={"query": CREATE, "variables": {"name": name}})).json()
    assert body["data"]["createInstance"]["userErrors"] == [], body
    return str(body["data"]["createInstance"]["instance"]["id"])
