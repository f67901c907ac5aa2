"""Each request limit is a setting: a request at the limit is served, one just over it is refused clearly.

Also the HTTP method rule for operation types: mutations only over POST, subscriptions never over HTTP.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import strawberry
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gateway.graphql_http import GraphQLHTTP
from tests.conftest import AppFactory, Issuer
from tests.support.documents import CREATE
from tests.support.servers import serve

GRAPHQL_RESPONSE = "application/graphql-response+json"
TYPENAME = {"data": {"__typename": "Query"}}


def client_for(app: Starlette, issuer: Issuer | None = None) -> httpx.AsyncClient:
    headers = issuer.headers("viewer") if issuer else None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=headers
    )


async def post(http: httpx.AsyncClient, query: str, accept: str = GRAPHQL_RESPONSE) -> httpx.Response:
    return await http.post("/graphql", json={"query": query}, headers={"accept": accept})


async def assert_served(http: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await post(http, query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body


async def assert_refused(http: httpx.AsyncClient, query: str, message: str) -> None:
    """Refused before execution: 400 for graphql-response+json, 200 for legacy JSON; never `data`."""
    for accept, status in ((GRAPHQL_RESPONSE, 400), ("application/json", 200)):
        response = await post(http, query, accept)
        assert response.status_code == status, (accept, response.text)
        body = response.json()
        assert "data" not in body, body
        assert [error["message"] for error in body["errors"]] == [message]


def padded_body(size: int) -> bytes:
    """A valid request body of exactly `size` bytes."""
    head, tail = b'{"query": "{ __typename }"', b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


async def test_max_body_bytes(make_app: AppFactory, issuer: Issuer) -> None:
    json_headers = {"content-type": "application/json"}

    def chunked(body: bytes) -> AsyncIterator[bytes]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 100):
                yield body[start : start + 100]

        return chunks()

    async with client_for(await make_app(max_body_bytes=1024), issuer) as http:
        # Declared with Content-Length, then streamed without it: both paths count the same bytes.
        for content in (padded_body, lambda size: chunked(padded_body(size))):
            at_limit = await http.post("/graphql", content=content(1024), headers=json_headers)
            assert at_limit.status_code == 200, at_limit.text
            assert at_limit.json() == TYPENAME

            over = await http.post("/graphql", content=content(1025), headers=json_headers)
            assert over.status_code == 413
            assert over.json()["errors"] == [
                {
                    "message": "The request body is larger than 1024 bytes.",
                    "extensions": {"code": "PAYLOAD_TOO_LARGE"},
                }
            ]


async def test_max_query_bytes(make_app: AppFactory, issuer: Issuer) -> None:
    query = "{ __typename }"
    async with client_for(await make_app(max_query_bytes=256), issuer) as http:
        assert await assert_served(http, query.ljust(256)) == TYPENAME
        await assert_refused(http, query.ljust(257), "The document is larger than 256 bytes.")
        # Bytes, not characters: 129 two-byte characters in a comment are 150 characters but 272 bytes.
        multibyte = query + "\n#" + "é" * 129
        assert len(multibyte) < 256 < len(multibyte.encode())
        await assert_refused(http, multibyte, "The document is larger than 256 bytes.")


async def test_max_query_depth(make_app: AppFactory, issuer: Issuer) -> None:
    async with client_for(await make_app(max_query_depth=3), issuer) as http:
        body = await assert_served(http, "{ instances { edges { node { name } } } }")
        assert body == {"data": {"instances": {"edges": []}}}
        await assert_refused(
            http,
            "query Deep { instances { edges { node { events { actor } } } } }",
            "'Deep' exceeds maximum operation depth of 3",
        )
        # Fragments do not hide depth.
        await assert_refused(
            http,
            "query Deep { instances { edges { ...E } } }"
            " fragment E on InstanceEdge { node { events { actor } } }",
            "'Deep' exceeds maximum operation depth of 3",
        )


async def test_max_aliases(make_app: AppFactory, issuer: Issuer) -> None:
    async with client_for(await make_app(max_aliases=2), issuer) as http:
        body = await assert_served(http, "{ a: __typename b: __typename }")
        assert body == {"data": {"a": "Query", "b": "Query"}}
        await assert_refused(
            http, "{ a: __typename b: __typename c: __typename }", "3 aliases found. Allowed: 2"
        )


async def test_max_tokens(make_app: AppFactory, issuer: Issuer) -> None:
    def fields(count: int) -> str:
        return "{ " + "__typename " * count + "}"  # count + 2 tokens

    # 98 sibling fields are 4,753 pairs to compare: the selection limit is raised out of the way.
    async with client_for(await make_app(max_tokens=100, max_selections=5_000), issuer) as http:
        assert await assert_served(http, fields(98)) == TYPENAME
        await assert_refused(
            http, fields(99), "Syntax Error: Document contains more than 100 tokens. Parsing aborted."
        )


# A tiny schema with every operation type, so the method rules are tested before the gateway has mutations.


@strawberry.type
class Counter:
    value: int = 0


@strawberry.type
class Query:
    @strawberry.field
    def count(self, info: strawberry.Info[Counter, None]) -> int:
        return info.context.value


@strawberry.type
class Mutation:
    @strawberry.mutation
    def increment(self, info: strawberry.Info[Counter, None]) -> int:
        info.context.value += 1
        return info.context.value


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self) -> AsyncIterator[int]:
        yield 1


def tiny_endpoint(counter: Counter) -> httpx.AsyncClient:
    async def context(_: Request, __: object) -> Counter:
        return counter

    schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    endpoint = GraphQLHTTP(schema, context, body_limit=4096, graphiql=False)
    return client_for(Starlette(routes=[Route("/graphql", endpoint.handle, methods=["GET", "POST"])]))


async def test_mutation_over_get_is_refused_and_not_run() -> None:
    counter = Counter()
    async with tiny_endpoint(counter) as http:
        for accept in (GRAPHQL_RESPONSE, "application/json"):
            response = await http.get(
                "/graphql", params={"query": "mutation { increment }"}, headers={"accept": accept}
            )
            assert response.status_code == 405
            assert response.headers["allow"] == "POST"
            assert response.json()["errors"] == [
                {
                    "message": "Mutations are only accepted over POST.",
                    "extensions": {"code": "METHOD_NOT_ALLOWED"},
                }
            ]
        assert counter.value == 0

        # operationName decides: the query of a mixed document runs over GET, its mutation does not.
        document = "query Read { count } mutation Bump { increment }"
        read = await http.get("/graphql", params={"query": document, "operationName": "Read"})
        assert read.status_code == 200
        assert read.json() == {"data": {"count": 0}}
        bump = await http.get("/graphql", params={"query": document, "operationName": "Bump"})
        assert bump.status_code == 405
        assert counter.value == 0

        posted = await http.post("/graphql", json={"query": document, "operationName": "Bump"})
        assert posted.status_code == 200
        assert posted.json() == {"data": {"increment": 1}}
        assert counter.value == 1


async def test_subscriptions_are_not_served_over_http() -> None:
    async with tiny_endpoint(Counter()) as http:
        response = await http.post("/graphql", json={"query": "subscription { ticks }"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["message"] == "subscription operations are not served over HTTP."


# Selections and directives: counted on the parsed document before validation, each refused with one error.


def errors_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    assert "data" not in body, body
    errors: list[dict[str, Any]] = body["errors"]
    return errors


async def assert_refused_with(http: httpx.AsyncClient, query: str, code: str, message: str) -> None:
    """One error with `code`, nothing run: 400 and no `data`."""
    response = await post(http, query)
    assert response.status_code == 400, response.text
    assert errors_of(response.json()) == [{"message": message, "extensions": {"code": code}}]


NAMES = "{ instances { nodes { name } } }"
CREATE_NAMED = CREATE.replace("instance { id status }", "instance { id status name }")


async def test_max_selections_refuses_before_running(make_app: AppFactory, issuer: Issuer) -> None:
    too_many = (
        "The document has more than 7 field selections (a fragment's fields count wherever it is spread)."
    )
    app = await make_app(max_selections=7)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway", headers=issuer.headers("user")
    ) as http:
        # CREATE has exactly 7 field selections: served, and it creates.
        at_limit = await http.post("/graphql", json={"query": CREATE, "variables": {"name": "at-limit"}})
        assert at_limit.json()["data"]["createInstance"]["userErrors"] == [], at_limit.text

        # One more field: refused with one error, and the mutation does not run.
        over = await http.post(
            "/graphql",
            json={"query": CREATE_NAMED, "variables": {"name": "over"}},
            headers={"accept": GRAPHQL_RESPONSE},
        )
        assert over.status_code == 400, over.text
        assert errors_of(over.json()) == [
            {"message": too_many, "extensions": {"code": "TOO_MANY_SELECTIONS"}}
        ]
        names = (await http.post("/graphql", json={"query": NAMES})).json()
        assert names == {"data": {"instances": {"nodes": [{"name": "at-limit"}]}}}

        # A fragment counts wherever it is spread: 6 fields written, 4 + 4 + its own 2 = 10 validated.
        fragment = " fragment N on Instance { name status }"
        spread_twice = "{ a: instances { nodes { ...N } } b: instances { nodes { ...N } } }" + fragment
        await assert_refused_with(http, spread_twice, "TOO_MANY_SELECTIONS", too_many)
        # ... while spread once it is 4 + 2 = 6.
        once = await post(http, "{ a: instances { nodes { ...N } } }" + fragment)
        nodes = once.json()["data"]["a"]["nodes"]
        assert [node["name"] for node in nodes] == ["at-limit"], once.text


async def test_repeated_fields_are_bounded_by_pairs(make_app: AppFactory, issuer: Issuer) -> None:
    """Sibling fields of one name cost validation a comparison per pair: 5 are 10 pairs, 6 are 15."""
    async with client_for(await make_app(max_selections=10), issuer) as http:
        assert await assert_served(http, "{ " + "__typename " * 5 + "}") == TYPENAME
        await assert_refused_with(
            http,
            "{ " + "__typename " * 6 + "}",
            "TOO_MANY_SELECTIONS",
            "The document repeats fields too often: more than 10 pairs of same-named fields to compare.",
        )


async def test_max_directives(make_app: AppFactory, issuer: Issuer) -> None:
    async with client_for(await make_app(max_directives=3), issuer) as http:
        three = "{ __typename @include(if: true) @skip(if: false) a: __typename @include(if: true) }"
        assert await assert_served(http, three) == {"data": {"__typename": "Query", "a": "Query"}}
        await assert_refused_with(
            http,
            "query($yes: Boolean! = true) { __typename @include(if: $yes) @skip(if: false)"
            " a: __typename @include(if: true) b: __typename @include(if: true) }",
            "TOO_MANY_DIRECTIVES",
            "The document has more than 3 directives.",
        )


async def test_a_repeated_directive_is_one_error(app: Starlette, issuer: Issuer) -> None:
    async with client_for(app, issuer) as http:
        repeated = (
            "{ __typename"
            + " @skip(if: false)" * 40
            + " a: __typename @include(if: true) @include(if: true) }"
        )
        response = await post(http, repeated)
        assert response.status_code == 400, response.text
        assert [error["message"] for error in errors_of(response.json())] == [
            "The directive '@skip' can only be used once at this location."
        ]


async def test_websocket_refuses_a_document_over_the_limits_with_one_error(
    make_app: AppFactory, issuer: Issuer
) -> None:
    async def receive(socket: Any) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await socket.recv())
            if message["type"] not in ("ping", "pong"):
                return message

    app = await make_app(max_selections=7)
    async with serve(app) as base:
        url = base.replace("http://", "ws://") + "/graphql"
        async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
            init = {"type": "connection_init", "payload": issuer.headers("user")}
            await socket.send(json.dumps(init))
            assert await receive(socket) == {"type": "connection_ack"}

            over = {"query": CREATE_NAMED, "variables": {"name": "over"}}
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": over}))
            assert await receive(socket) == {
                "id": "1",
                "type": "error",
                "payload": [
                    {
                        "message": "The document has more than 7 field selections"
                        " (a fragment's fields count wherever it is spread).",
                        "extensions": {"code": "TOO_MANY_SELECTIONS"},
                    }
                ],
            }
            # At the limit the same socket is served, and the refused mutation created nothing.
            await socket.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": NAMES}}))
            served = await receive(socket)
            assert served == {
                "id": "2",
                "type": "next",
                "payload": {"data": {"instances": {"nodes": []}}},
            }
