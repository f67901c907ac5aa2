"""Demand control: static cost (a table of documents), the cost limit, the per-user budget in process and in
a real Redis, and how HTTP answers them (COST_LIMIT_EXCEEDED, 429 RATE_LIMITED with Retry-After)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from graphql import parse

from schema.budget import Budget, LocalBuckets
from schema.build import build_schema
from schema.compiled import CompiledQueries
from schema.cost import CostError, operation_cost
from tests.conftest import AppFactory, Issuer

SCHEMA = build_schema()._schema
INSTANCE = "{ id name status }"


@pytest.mark.parametrize(
    ("document", "variables", "cost"),
    [
        ("{ __typename }", {}, 0),
        ("{ me { sub permissions } }", {}, 1),  # an object 1, scalars and lists of scalars 0
        ("{ catalog { flavors { name } } }", {}, 1 + 20),  # @listSize(assumedSize: 20)
        (f"{{ instances {{ nodes {INSTANCE} }} }}", {}, 1 + 20),  # sizedFields take the assumed 20
        (f"{{ instances(first: 5) {{ nodes {INSTANCE} edges {{ node {INSTANCE} }} }} }}", {}, 1 + 5 + 5 * 2),
        ("query($n: Int) { instances(first: $n) { nodes { id } } }", {"n": 3}, 1 + 3),  # variables resolved
        ("query($n: Int = 7) { instances(first: $n) { nodes { id } } }", {}, 1 + 7),  # and their defaults
        ("{ instances(first: 2) { nodes { events(last: 4) { at } } } }", {}, 1 + 2 * (1 + 4)),
        ("{ instances(first: 2) { nodes { events { at } } } }", {}, 1 + 2 * (1 + 50)),
        (
            "{ instances(first: 1) { nodes { terraform { name } } } }",
            {},
            1 + 1 * (1 + 10),
        ),  # @cost(weight: 10)
        ("query($s: Boolean!) { me { sub } catalog @skip(if: $s) { images { name } } }", {"s": True}, 1),
        ("fragment F on Me { roles { orgId } } { me { ...F } }", {}, 1 + 10),  # an unsized list: 10
        ('mutation { deleteInstance(id: "x") { instance { id } } }', {}, 10 + 1 + 1),  # mutations weigh 10
        ("subscription { instanceStatusChanges { instance { id } } }", {}, 2),
    ],
)
def test_static_cost(document: str, variables: dict[str, Any], cost: int) -> None:
    assert operation_cost(SCHEMA, parse(document), None, variables) == cost


def test_the_introspection_query_costs_nothing() -> None:
    from graphql import get_introspection_query

    assert operation_cost(SCHEMA, parse(get_introspection_query()), None, {}) == 0


def test_require_one_slicing_argument_is_enforced_when_declared() -> None:
    from schema.cost import ListSize, _Walk

    walk = _Walk(SCHEMA, {}, {}, {})
    field = SCHEMA.query_type.fields["instances"]  # type: ignore[union-attr]
    node = parse("{ instances { nodes { id } } }").definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]
    with pytest.raises(CostError, match="exactly one of first"):
        walk.size(field, node, ListSize(slicing_arguments=["first"], require_one_slicing_argument=True))


def test_the_local_bucket_refills_by_the_minute() -> None:
    now = [0.0]
    bucket = LocalBuckets(60, clock=lambda: now[0])  # 60 a minute: one a second
    assert bucket.charge("alice", 50) is None
    assert bucket.charge("alice", 20) == 10  # 10 left, 20 wanted: 10 s until it fits
    assert bucket.charge("bob", 60) is None  # buckets are per user
    now[0] = 10.0
    assert bucket.charge("alice", 20) is None
    assert bucket.charge("alice", 1) == 1


async def test_the_shared_bucket_lives_in_redis() -> None:
    prefix = f"opencsp-test:{uuid.uuid4().hex}:"
    first, second = (
        Budget(60, "redis://127.0.0.1:6379/0", prefix),
        Budget(60, "redis://127.0.0.1:6379/0", prefix),
    )
    try:
        assert await first.charge("alice", 50) is None
        # Another replica sees what the first took.
        wait = await second.charge("alice", 20)
        assert wait is not None
        assert 9 <= wait <= 10
        assert await second.charge("bob", 20) is None
        assert not first.local._buckets
        assert not second.local._buckets
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_unreachable_redis_falls_back_to_the_process_bucket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = Budget(60, "redis://127.0.0.1:1/0", "opencsp-test:")  # nothing listens on port 1
    try:
        assert await budget.charge("alice", 50) is None
        assert await budget.charge("alice", 20) is not None  # still limited, by this process
        assert sum("unreachable" in r.getMessage() for r in caplog.records) == 1  # logged once
    finally:
        await budget.aclose()


async def test_over_the_cost_limit_is_refused_with_the_estimate(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(max_operation_cost=100)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=issuer.headers("viewer")
    ) as http:
        refused = await http.post("/graphql", json={"query": "{ instances(first: 100) { nodes { id } } }"})
        assert refused.status_code == 200
        error = refused.json()["errors"][0]
        assert error["extensions"] == {
            "code": "COST_LIMIT_EXCEEDED",
            "cost": {"estimated": 101, "limit": 100},
        }
        assert "data" not in refused.json()
        reported = await http.post(
            "/graphql",
            json={"query": "{ catalog { flavors { name } } }", "extensions": {"cost": {"report": True}}},
        )
        assert reported.json()["extensions"] == {"cost": {"estimated": 21, "limit": 100}}
        quiet = await http.post("/graphql", json={"query": "{ catalog { flavors { name } } }"})
        assert "extensions" not in quiet.json()


async def test_a_spent_budget_is_a_429_with_retry_after(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(cost_per_minute=30)
    query = {"query": "{ catalog { flavors { name } } }"}  # 21
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        assert (await http.post("/graphql", json=query, headers=issuer.headers("viewer"))).status_code == 200
        spent = await http.post("/graphql", json=query, headers=issuer.headers("viewer"))
        assert spent.status_code == 429
        assert spent.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert 1 <= int(spent.headers["Retry-After"]) <= 60
        # Another user has a budget of their own.
        other = await http.post("/graphql", json=query, headers=issuer.headers("viewer", sub="someone-else"))
        assert other.status_code == 200


async def test_the_compiled_path_charges_the_budget_once_whichever_path_answers(
    make_app: AppFactory, issuer: Issuer
) -> None:
    """With a budget the compiled path stays on; each request takes exactly its estimate, once: answered
    by graphql-core (first sight), by a plan, or by a plan that fell back to graphql-core."""
    app = await make_app(cost_per_minute=200)
    compiled = app.state.compiled
    assert isinstance(compiled, CompiledQueries), "a budget must not turn compiled execution off"
    budget = app.state.budget
    assert isinstance(budget, Budget)
    budget.local.clock = lambda: 0.0  # no refill during the test: the bucket moves by the charges only
    sub = "viewer-1"

    def left() -> float:
        return budget.local._buckets[sub][0]

    catalog = {"query": "{ catalog { flavors { name } } }"}  # 21
    failing = {"query": "{ instances(first: -1) { nodes { id } } }"}  # 1; its resolver refuses -1
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=issuer.headers("viewer")
    ) as http:
        expected = 200.0
        before, fell_back = compiled.compiled, compiled.fell_back
        for _ in range(3):  # graphql-core, then a plan twice
            answer = await http.post("/graphql", json=catalog)
            assert answer.status_code == 200, answer.text
            expected -= 21
            assert left() == expected
        assert compiled.compiled == before + 2
        for _ in range(3):  # graphql-core, then a plan that falls back, twice
            answer = await http.post("/graphql", json=failing)
            assert answer.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT", answer.text
            expected -= 1
            assert left() == expected
        assert compiled.fell_back == fell_back + 2
        for _ in range(10):  # down to 200 - 3 * 21 - 3 - 6 * 21 = 8: the seventh catalog is refused
            answer = await http.post("/graphql", json=catalog)
            if answer.status_code == 429:
                break
            expected -= 21
            assert left() == expected
        assert expected == 8
        assert answer.json()["errors"][0]["extensions"] == {
            "code": "RATE_LIMITED",
            "retryAfter": 4,  # 13 tokens short at 200 a minute
            "cost": {"estimated": 21, "limit": 5000},
        }
        assert left() == 8  # a refused charge takes nothing


async def test_get_reports_the_estimate_when_asked(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app()
    query = "{ catalog { flavors { name } } }"
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=issuer.headers("viewer")
    ) as http:
        for _ in range(2):  # graphql-core, then a document the compiled path knows: it reports as well
            reported = await http.get(
                "/graphql", params={"query": query, "extensions": '{"cost": {"report": true}}'}
            )
            assert reported.json()["extensions"] == {"cost": {"estimated": 21, "limit": 5000}}
        assert "extensions" not in (await http.get("/graphql", params={"query": query})).json()
