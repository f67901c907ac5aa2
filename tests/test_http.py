"""The HTTP transport of /graphql: methods, media types, malformed requests, body limits, masking."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import strawberry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gateway.graphql_http import GraphQLHTTP
from services.semaphore.webhook import MAX_BODY_BYTES
from tests.conftest import AppFactory, Issuer
from tests.support.servers import serve

GRAPHQL_RESPONSE = "application/graphql-response+json"
TYPENAME = {"query": "{ __typename }"}


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"errors"}, body
    [error] = body["errors"]
    assert isinstance(error, dict)
    return error


async def test_other_methods_get_405_with_allow(client: httpx.AsyncClient) -> None:
    for method in ("PUT", "DELETE", "PATCH"):
        response = await client.request(method, "/graphql", json=TYPENAME)
        assert response.status_code == 405, method
        assert response.headers["allow"] == "GET, POST"
        assert error_of(response)["extensions"] == {"code": "METHOD_NOT_ALLOWED"}


async def test_mutation_over_get_gets_405_allow_post(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", params={"query": "mutation { __typename }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_of(response)["message"] == "Mutations are only accepted over POST."


# Table-driven rather than parametrized: each case needs no database of its own.
WRONG_CONTENT_TYPES = [
    ("text/plain", "Send the request as application/json."),
    ("application/graphql", "Send the request as application/json."),
    ("application/x-www-form-urlencoded", "Send the request as application/json."),
    ("", "Send the request as application/json."),
    ("application/json; charset=latin-1", "Only utf-8 encoded requests are accepted."),
]


async def test_wrong_content_type_gets_415(client: httpx.AsyncClient) -> None:
    for content_type, message in WRONG_CONTENT_TYPES:
        headers = {"content-type": content_type} if content_type else {}
        response = await client.post("/graphql", content=b'{"query": "{ __typename }"}', headers=headers)
        assert response.status_code == 415, content_type
        assert error_of(response) == {"message": message, "extensions": {"code": "UNSUPPORTED_MEDIA_TYPE"}}


MALFORMED_BODIES = [
    (b"", "The request body is empty."),
    (b'{"query": "{ __typename }"', "The request body is not valid JSON."),
    (b"\xff\xfe", "The request body is not valid JSON."),
    (b'"{ __typename }"', "The request body must be a JSON object."),
    (b"42", "The request body must be a JSON object."),
    (b"null", "The request body must be a JSON object."),
    (b"{}", "The query parameter is missing."),
    (b'{"query": null}', "The query parameter is missing."),
    (b'{"query": 7}', "The query parameter must be a non-empty string."),
    (b'{"query": "  "}', "The query parameter must be a non-empty string."),
    (b'{"query": "{ __typename }", "variables": []}', "The variables parameter must be a JSON object."),
    (b'{"query": "{ __typename }", "variables": "{}"}', "The variables parameter must be a JSON object."),
    (b'{"query": "{ __typename }", "variables": 3}', "The variables parameter must be a JSON object."),
    (b'{"query": "{ __typename }", "operationName": 1}', "The operationName parameter must be a string."),
    (b'{"query": "{ __typename }", "extensions": 1}', "The extensions parameter must be a JSON object."),
]


async def test_malformed_post_gets_400(client: httpx.AsyncClient) -> None:
    for accept in ("application/json", GRAPHQL_RESPONSE):
        for body, message in MALFORMED_BODIES:
            headers = {"content-type": "application/json", "accept": accept}
            response = await client.post("/graphql", content=body, headers=headers)
            assert response.status_code == 400, (accept, body)
            assert response.headers["content-type"] == f"{accept}; charset=utf-8"
            assert error_of(response) == {"message": message, "extensions": {"code": "BAD_REQUEST"}}


MALFORMED_PARAMS = [
    ({}, "The query parameter is missing."),
    ({"query": ""}, "The query parameter must be a non-empty string."),
    ({"query": "{ __typename }", "variables": "{nope"}, "The variables parameter is not valid JSON."),
    ({"query": "{ __typename }", "variables": "[1]"}, "The variables parameter must be a JSON object."),
    ({"query": "{ __typename }", "extensions": "3"}, "The extensions parameter must be a JSON object."),
]


async def test_malformed_get_gets_400(client: httpx.AsyncClient) -> None:
    for params, message in MALFORMED_PARAMS:
        response = await client.get("/graphql", params=params, headers={"accept": "application/json"})
        assert response.status_code == 400, params
        assert error_of(response)["message"] == message


async def test_get_runs_a_query_with_variables(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/graphql",
        params={"query": "query($n: String!) { __type(name: $n) { name } }", "variables": '{"n": "Query"}'},
        headers={"accept": GRAPHQL_RESPONSE},
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": {"name": "Query"}}}


async def test_batches_are_refused_with_a_clear_message(client: httpx.AsyncClient) -> None:
    response = await client.post("/graphql", json=[TYPENAME, TYPENAME])
    assert response.status_code == 400
    assert error_of(response)["message"] == (
        "Batched requests are not supported; send one operation per request."
    )


NEGOTIATED = [
    (None, "application/json"),
    ("*/*", "application/json"),
    ("application/*", "application/json"),
    ("application/json", "application/json"),
    (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
    (f"{GRAPHQL_RESPONSE}, application/json;q=0.9", GRAPHQL_RESPONSE),
    (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
    (f"text/html, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
]


async def test_accept_picks_the_response_media_type(client: httpx.AsyncClient) -> None:
    for accept, served in NEGOTIATED:
        request = client.build_request("POST", "/graphql", json=TYPENAME)
        if accept is None:
            del request.headers["accept"]
        else:
            request.headers["accept"] = accept
        response = await client.send(request)
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == f"{served}; charset=utf-8", accept


async def test_unacceptable_accept_gets_406(client: httpx.AsyncClient) -> None:
    for accept in ("text/plain", "application/xml", "application/json;q=0", "image/*"):
        response = await client.post("/graphql", json=TYPENAME, headers={"accept": accept})
        assert response.status_code == 406, accept
        assert error_of(response) == {
            "message": f"Accept {GRAPHQL_RESPONSE} or application/json.",
            "extensions": {"code": "NOT_ACCEPTABLE"},
        }


async def test_body_over_the_limit_with_content_length_gets_413(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(max_body_bytes=1024)
    body = b'{"query": "{ __typename }"' + b" " * 2048 + b"}"
    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, headers=issuer.headers()) as http:
        response = await http.post("/graphql", content=body, headers={"content-type": "application/json"})
        assert response.request.headers["content-length"] == str(len(body))
        assert response.status_code == 413
        assert error_of(response) == {
            "message": "The request body is larger than 1024 bytes.",
            "extensions": {"code": "PAYLOAD_TOO_LARGE"},
        }
        # The server still answers on the same client afterwards.
        assert (await http.post("/graphql", json=TYPENAME)).status_code == 200


async def test_the_webhook_reads_its_body_through_the_same_cap(make_app: AppFactory) -> None:
    """A declared length over the webhook's cap (or one that is no number) is refused before any of the
    body is read or checked, as on /graphql; an unread body is never judged by its signature."""
    app = await make_app(webhook_secret="webhook-secret")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for declared in (str(MAX_BODY_BYTES + 1), "12abc"):
            response = await http.post(
                "/webhooks/semaphore",
                content=b"{}",
                headers={"content-type": "application/json", "content-length": declared},
            )
            assert response.request.headers["content-length"] == declared
            assert (response.status_code, response.json()) == (413, {"error": "body too large"}), declared


async def test_chunked_body_over_the_limit_gets_413(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "{ __typename }"'
        for _ in range(8):
            yield b" " * 512
        yield b"}"

    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        request = http.build_request(
            "POST", "/graphql", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = await http.send(request, stream=True)
        try:
            await response.aread()
        finally:
            await response.aclose()
        assert response.status_code == 413
        assert error_of(response)["message"] == "The request body is larger than 1024 bytes."


async def test_chunked_body_within_the_limit_is_served(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": '
        yield b'"{ __typename }"}'

    async with serve(app) as base_url, httpx.AsyncClient(base_url=base_url, headers=issuer.headers()) as http:
        response = await http.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers
        assert response.status_code == 200
        assert response.json() == {"data": {"__typename": "Query"}}


async def test_graphiql_is_served_to_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/graphql", headers={"accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_is_not_served_when_disabled(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(graphiql=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        response = await http.get("/graphql", headers={"accept": "text/html"})
        assert response.status_code == 406
        assert "graphiql" not in response.text.lower()
        browser = await http.get("/graphql", headers={"accept": "text/html,*/*;q=0.8"})
        assert browser.status_code == 400
        assert browser.headers["content-type"] == "application/json; charset=utf-8"
        assert error_of(browser)["message"] == "The query parameter is missing."


LEAKS = (
    "instances",
    "SELECT",
    "no such table",
    "does not exist",
    "Traceback",
    "sqlalchemy",
    "sqlite",
    "asyncpg",
)


async def test_a_database_fault_is_masked(client: httpx.AsyncClient, engine: AsyncEngine) -> None:
    cascade = " CASCADE" if engine.dialect.name == "postgresql" else ""
    async with engine.begin() as connection:
        await connection.execute(text(f"DROP TABLE instances{cascade}"))
    # The alias keeps the field name (which is also the table's) out of the error's path.
    query = "{ vms: instances { edges { node { name } } } }"
    for accept in ("application/json", GRAPHQL_RESPONSE):
        response = await client.post("/graphql", json={"query": query}, headers={"accept": accept})

        assert "Internal server error." in response.text
        for leak in LEAKS:
            assert leak.lower() not in response.text.lower(), response.text
        # A field error with data null is an executed operation: the spec asks for 2xx on both media types.
        assert response.status_code == 200, accept
        body = response.json()
        assert body["data"] is None
        assert [error["message"] for error in body["errors"]] == ["Internal server error."]
        assert body["errors"][0]["path"] == ["vms"]


@strawberry.type
class _Query:
    ping: str = "pong"


async def test_a_fault_outside_execution_is_a_masked_500() -> None:
    async def broken_context(_: Request, __: object) -> object:
        raise RuntimeError("cannot reach postgresql://admin:hunter2@db/prod")

    endpoint = GraphQLHTTP(strawberry.Schema(query=_Query), broken_context, body_limit=4096, graphiql=False)
    app = Starlette(routes=[Route("/graphql", endpoint.handle, methods=["GET", "POST"])])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        response = await http.post(
            "/graphql", json={"query": "{ ping }"}, headers={"accept": GRAPHQL_RESPONSE}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
    assert "hunter2" not in response.text
    assert "RuntimeError" not in response.text
    assert error_of(response) == {
        "message": "Internal server error.",
        "extensions": {"code": "INTERNAL_SERVER_ERROR"},
    }


async def test_graphiql_sends_the_headers_tab_on_websockets_too(client: httpx.AsyncClient) -> None:
    """The gateway authenticates websockets from connection_init; GraphiQL must put the token there."""
    page = (await client.get("/graphql", headers={"accept": "text/html"})).text
    assert 'src="/static/graphiql/graphiql-init.js"' in page
    script = (await client.get("/static/graphiql/graphiql-init.js")).text
    assert "wsConnectionParams: connectionParams" in script
    assert "React.useMemo(() => fetcherFor(headers), [headers])" in script
