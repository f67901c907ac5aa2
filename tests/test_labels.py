"""Labels over HTTP: create, setInstanceLabels, and filters with Kubernetes selector semantics (in SQL).

Cases share one database per test: each test pays for a fresh app and migration, a loop does not."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from services.instances.states import InstanceStatus
from tests.conftest import Issuer
from tests.support.factories import insert_instances, insert_labels, instance_row
from tests.test_queries import gql

NAMES = """
query($filter: InstanceFilter) { instances(filter: $filter, first: 100) { nodes { name } } }
"""
SET = """
mutation($id: ID!, $labels: [LabelInput!]!) {
  setInstanceLabels(id: $id, labels: $labels) {
    instance { name labels { key value } version }
    userErrors { field message code }
  }
}
"""
CREATE = """
mutation($input: CreateInstanceInput!) {
  createInstance(input: $input) { instance { id } userErrors { field code } }
}
"""

SELECTIONS = [
    (["env=prod"], "ab"),
    (["env==prod", "tier!=db"], "a"),
    (["tier!=db"], "acd"),  # as in Kubernetes: an instance without the key matches !=
    (["team"], "a"),
    (["!team"], "bcd"),
    (["env in (dev,prod)", "tier notin (web)"], "bc"),
    (["env=prod,tier=web"], "a"),  # one string may hold several requirements
    (["env="], ""),  # the empty value, which no instance here has
    ([], "abcd"),
]
BAD_SELECTORS = [
    ("env=prod)", "label selector 'env=prod)' is invalid: found ')', expected: ',' or 'end of string'"),
    ("env in prod", "label selector 'env in prod' is invalid: found 'prod', expected: '('"),
    ("-bad=1", "label selector '-bad=1' is invalid: invalid label key '-bad'"),
    ("n>1", "label selector 'n>1': the operators > and < are not supported for labels"),
]
BAD_LABELS = [
    ([{"key": "example.com/env", "value": "x"}], ["INVALID_LABEL_KEY"]),
    ([{"key": "-env", "value": "x"}], ["INVALID_LABEL_KEY"]),
    ([{"key": "k" * 64, "value": "x"}], ["INVALID_LABEL_KEY"]),
    ([{"key": "env", "value": "a b"}], ["INVALID_LABEL_VALUE"]),
    ([{"key": "env", "value": "v" * 64}], ["INVALID_LABEL_VALUE"]),
    ([{"key": "env", "value": "x\n"}], ["INVALID_LABEL_VALUE"]),
    ([{"key": "env", "value": "a"}, {"key": "env", "value": "b"}], ["DUPLICATE_LABEL_KEY"]),
    ([{"key": f"k{i}", "value": ""} for i in range(65)], ["TOO_MANY_LABELS"]),
]


@pytest.fixture
async def labelled(engine: AsyncEngine) -> list[dict[str, object]]:
    rows = await insert_instances(engine, [instance_row(i, name=n) for i, n in enumerate("abcd")])
    await insert_labels(
        engine,
        {
            rows[0]["id"]: {"env": "prod", "tier": "web", "team": "x"},
            rows[1]["id"]: {"env": "prod", "tier": "db"},
            rows[2]["id"]: {"env": "dev"},
        },
    )
    return rows


async def _names(client: httpx.AsyncClient, selectors: list[str]) -> list[str]:
    body = await gql(client, NAMES, filter={"labels": selectors})
    return sorted(node["name"] for node in body["data"]["instances"]["nodes"])


async def test_label_selectors_filter_with_kubernetes_semantics(
    client: httpx.AsyncClient, labelled: list[dict[str, object]]
) -> None:
    found = {tuple(selectors): "".join(await _names(client, selectors)) for selectors, _ in SELECTIONS}
    assert found == {tuple(selectors): expected for selectors, expected in SELECTIONS}


async def test_a_bad_selector_is_a_clear_error_naming_it(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    for selector, message in BAD_SELECTORS:
        body = await gql(client, NAMES, filter={"labels": ["env", selector]})
        assert body["data"] is None
        errors = [(e["message"], e["extensions"]["code"]) for e in body["errors"]]
        assert errors == [(message, "BAD_USER_INPUT")]


async def test_labels_on_create_are_read_back_sorted_by_key(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    labels = [{"key": "tier", "value": "web"}, {"key": "env", "value": "prod"}, {"key": "team", "value": ""}]
    created = await gql(
        client, CREATE, input={"name": "web-1", "flavor": "small", "image": "debian-12", "labels": labels}
    )
    instance_id = created["data"]["createInstance"]["instance"]["id"]
    body = await gql(client, "query($id: ID!) { instance(id: $id) { labels { key value } } }", id=instance_id)
    assert body["data"]["instance"]["labels"] == sorted(labels, key=lambda label: label["key"])
    assert await _names(client, ["env=prod", "team"]) == ["web-1"]


async def test_set_labels_replaces_the_whole_set(
    client: httpx.AsyncClient, labelled: list[dict[str, object]]
) -> None:
    body = await gql(client, SET, id=str(labelled[1]["id"]), labels=[{"key": "owner", "value": "ops.team_1"}])
    assert body["data"]["setInstanceLabels"] == {
        "instance": {"name": "b", "labels": [{"key": "owner", "value": "ops.team_1"}], "version": 2},
        "userErrors": [],
    }
    assert await _names(client, ["env=prod"]) == ["a"]
    assert await _names(client, ["owner=ops.team_1"]) == ["b"]
    cleared = await gql(client, SET, id=str(labelled[1]["id"]), labels=[])
    assert cleared["data"]["setInstanceLabels"]["instance"]["labels"] == []


async def test_bad_labels_are_user_errors_and_change_nothing(
    client: httpx.AsyncClient, labelled: list[dict[str, object]]
) -> None:
    for labels, codes in BAD_LABELS:
        body = await gql(client, SET, id=str(labelled[0]["id"]), labels=labels)
        payload = body["data"]["setInstanceLabels"]
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [("labels", c) for c in codes]
        assert payload["instance"]["version"] == 1
        assert len(payload["instance"]["labels"]) == 3
        new = {"name": "new-1", "flavor": "small", "image": "debian-12", "labels": labels}
        created = await gql(client, CREATE, input=new)
        assert created["data"]["createInstance"] == {
            "instance": None,
            "userErrors": [{"field": "labels", "code": c} for c in codes],
        }
    assert await _names(client, []) == ["a", "b", "c", "d"]  # no create got through


async def test_who_may_set_labels(app: Starlette, issuer: Issuer, engine: AsyncEngine) -> None:
    rows = await insert_instances(
        engine,
        [
            instance_row(1, owner_sub="user-1"),
            instance_row(2, owner_sub="user-2"),
            instance_row(3, status=InstanceStatus.DELETED),
        ],
    )
    mine, theirs, deleted = (str(row["id"]) for row in rows)

    async def codes(role: str, sub: str, instance_id: str) -> Any:
        variables = {"id": instance_id, "labels": [{"key": "env", "value": "x"}]}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://gateway",
            headers=issuer.headers(role, sub=sub),
        ) as caller:
            body = (await caller.post("/graphql", json={"query": SET, "variables": variables})).json()
        if body.get("errors"):
            return body["errors"][0]["extensions"]["code"]
        return [e["code"] for e in body["data"]["setInstanceLabels"]["userErrors"]]

    assert await codes("user", "user-1", mine) == []
    assert await codes("user", "user-1", theirs) == ["NOT_FOUND"]  # not visible to a user: as missing
    assert await codes("viewer", "viewer-1", mine) == "FORBIDDEN"  # no instance:label at all
    assert await codes("operator", "operator-1", theirs) == []  # instance:label:org
    assert await codes("admin", "admin-1", deleted) == ["ALREADY_DELETED"]
