"""Schema discovery is a permission (`schema:introspect`): introspection and "Did you mean …" hints.

Over HTTP (POST and GET, httpx against the app) and over both websocket protocols (a real uvicorn):
viewer and user get no introspection and no suggestion, their error text identical to an unknown
field's; operator and admin get both; a deployment that made introspection public serves it to
everyone. Dev mode, which grants it to every role, is tested on the real process in `test_dev.py`.
One document is sent by callers on both sides of the permission in turn, so a validation cache that
mixed them up would show.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import websockets
from graphql import build_schema, parse, validate
from graphql.validation import specified_rules
from starlette.applications import Starlette

from gateway.bootstrap import policy_of
from gateway.settings import Settings
from schema.discovery import HideSuggestions, may_discover, strip_suggestion
from services.auth.permissions import DEFAULT_POLICY, OPERATIONS_ADHOC, SCHEMA_INTROSPECT
from services.auth.principal import Principal
from tests.conftest import AppFactory, Issuer
from tests.support.servers import serve

HOLDERS = ["operator", "admin"]
OTHERS = ["viewer", "user"]
WAIT = 15.0  # an upper bound on waiting for the server, never an expectation of speed

SCHEMA = "{ __schema { queryType { name } } }"
SCHEMA_DATA = {"__schema": {"queryType": {"name": "Query"}}}
# case → (document, the introspection field it selects, what a holder gets)
INTROSPECTION: dict[str, tuple[str, str, dict[str, Any]]] = {
    "__schema": (SCHEMA, "__schema", SCHEMA_DATA),
    "__type": (
        '{ __type(name: "Instance") { name kind } }',
        "__type",
        {"__type": {"name": "Instance", "kind": "OBJECT"}},
    ),
    "fragment": (
        "query { ...F } fragment F on Query { __schema { queryType { name } } }",
        "__schema",
        SCHEMA_DATA,
    ),
}
# The introspection fields' stand-ins that do not exist, to compare the answers with.
UNKNOWN = {"__schema": "noSchema", "__type": "noType"}
# Each of graphql-core's "Did you mean" hints a request can provoke:
# (query, variables, part of the hint a holder reads, the whole message everyone else reads).
SUGGESTIONS: dict[str, tuple[str, dict[str, Any] | None, str, str]] = {
    "field": (
        "{ instancs { nodes { name } } }",
        None,
        " Did you mean 'instance' or 'instances'?",
        "Cannot query field 'instancs' on type 'Query'.",
    ),
    "argument": (
        "{ instances(frist: 1) { nodes { name } } }",
        None,
        " Did you mean 'first'?",
        "Unknown argument 'frist' on field 'Query.instances'.",
    ),
    "type": (
        "query($f: InstanceFiltr) { instances(filter: $f) { nodes { name } } }",
        None,
        " Did you mean 'InstanceFilter', ",
        "Unknown type 'InstanceFiltr'.",
    ),
    "enum literal": (
        "{ instances(filter: {status: [ACTIV]}) { nodes { name } } }",
        None,
        " Did you mean the enum value 'ACTIVE'?",
        "Value 'ACTIV' does not exist in 'InstanceStatus' enum.",
    ),
    "input field": (
        "{ instances(filter: {statuz: [ACTIVE]}) { nodes { name } } }",
        None,
        " Did you mean 'status'?",
        "Expected value of type 'InstanceFilter' not to include unknown field 'statuz', "
        "found: { statuz: [ACTIVE] }.",
    ),
    "enum variable": (
        "query($f: InstanceFilter) { instances(filter: $f) { nodes { name } } }",
        {"f": {"status": ["ACTIV"]}},
        " Did you mean the enum value 'ACTIVE'?",
        "Variable '$f' has invalid value at .status[0]: "
        "Value 'ACTIV' does not exist in 'InstanceStatus' enum.",
    ),
    "input variable": (
        "query($f: InstanceFilter) { instances(filter: $f) { nodes { name } } }",
        {"f": {"nameContain": "x"}},
        " Did you mean 'nameContains'?",
        "Variable '$f' has invalid value: Expected value of type 'InstanceFilter' not to include unknown "
        "field 'nameContain', found: {'nameContain': 'x'}.",
    ),
    "selection": (  # the one hint graphql-core does not hide itself: stripped
        "{ instances }",
        None,
        " Did you mean 'instances { ... }'?",
        "Field 'instances' of type 'InstanceConnection!' must have a selection of subfields.",
    ),
}


# -- the pure rule ---------------------------------------------------------------------------------


def principal(*roles: str, policy: Any = DEFAULT_POLICY) -> Principal:
    return Principal.from_roles(
        sub="u",
        org_id="org-a",
        roles={"org-a": frozenset(roles)},
        policy=policy,
        expires_at=datetime.now(UTC),
    )


def test_who_may_discover_the_schema() -> None:
    assert [role for role in DEFAULT_POLICY if SCHEMA_INTROSPECT in DEFAULT_POLICY[role]] == HOLDERS
    for role in HOLDERS:
        assert may_discover(principal(role))
    for role in OTHERS:
        assert not may_discover(principal(role))
        assert may_discover(principal(role), schema_public=True)  # the deployment published it
    assert not may_discover(principal())
    assert not may_discover(None)
    assert may_discover(None, schema_public=True)
    # A grant from another org does not count: the check is in the caller's own org.
    foreign = Principal.from_roles(
        sub="u",
        org_id="org-a",
        roles={"org-b": frozenset({"operator"})},
        policy=DEFAULT_POLICY,
        expires_at=principal().expires_at,
    )
    assert not may_discover(foreign)
    # Dev mode grants it to every role of whatever policy applies.
    dev = policy_of(Settings(dev_mode=True, _env_file=None))  # type: ignore[call-arg]
    assert all(SCHEMA_INTROSPECT in permissions for permissions in dev.values())
    custom = Settings(dev_mode=True, rbac_policy='{"auditor": ["instance:read"]}', _env_file=None)  # type: ignore[call-arg,arg-type]
    assert policy_of(custom) == {"auditor": frozenset({"instance:read", SCHEMA_INTROSPECT, OPERATIONS_ADHOC})}
    assert SCHEMA_INTROSPECT not in policy_of(Settings(_env_file=None))["viewer"]  # type: ignore[call-arg]


def test_hide_suggestions_switches_on_graphql_cores_own_flag() -> None:
    """Breaks if graphql-core renames what `HideSuggestions` sets; the stripping would still hold."""
    schema = build_schema("type Query { instances: Int instance: Int }")
    document = parse("{ instancs }")
    shown = validate(schema, document, specified_rules)
    hidden = validate(schema, document, (*specified_rules, HideSuggestions))
    assert [e.message for e in shown] == [
        "Cannot query field 'instancs' on type 'Query'. Did you mean 'instance' or 'instances'?"
    ]
    assert [e.message for e in hidden] == ["Cannot query field 'instancs' on type 'Query'."]


def test_strip_suggestion_cuts_at_the_first_hint() -> None:
    assert strip_suggestion("Unknown type 'X'. Did you mean 'Y'?") == "Unknown type 'X'."
    assert strip_suggestion("no hint here") == "no hint here"
    # Not always last: graphql-core's unknown input field names the value after its hint.
    assert (
        strip_suggestion(
            "Expected value not to include unknown field 'x'. Did you mean 'y' or 'z'? Found: 1."
        )
        == "Expected value not to include unknown field 'x'. Found: 1."
    )
    assert strip_suggestion(
        "Field 'f' of type 'T' must have a selection of subfields. Did you mean 'f { ... }'?"
    ) == ("Field 'f' of type 'T' must have a selection of subfields.")


# -- HTTP --------------------------------------------------------------------------------------------


async def ask(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    method: str = "POST",
) -> dict[str, Any]:
    if method == "GET":
        params = {"query": query, **({"variables": orjson.dumps(variables).decode()} if variables else {})}
        response = await client.get("/graphql", params=params, headers=headers)
    else:
        response = await client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
    body: dict[str, Any] = response.json()
    return body


def messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors", [])]


def as_unknown_field(query: str) -> str:
    """The document with the introspection fields renamed to fields that do not exist."""
    for field, stand_in in UNKNOWN.items():
        query = query.replace(field, stand_in)
    return query


def as_introspection(body: dict[str, Any]) -> dict[str, Any]:
    """An answer to `as_unknown_field(document)`, with the names put back."""
    text = json.dumps(body)
    for field, stand_in in UNKNOWN.items():
        text = text.replace(f"'{stand_in}'", f"'{field}'")
    answer: dict[str, Any] = json.loads(text)
    return answer


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        yield client


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_introspection_needs_the_permission(
    client: httpx.AsyncClient, issuer: Issuer, method: str
) -> None:
    for name, (query, field, data) in INTROSPECTION.items():
        # Holders and others alternate on the same document: a shared validation result would show.
        for role in [*HOLDERS, *OTHERS, *HOLDERS]:
            body = await ask(client, issuer.headers(role), query, method=method)
            if role in HOLDERS:
                assert body == {"data": data}, (name, role)
                continue
            unknown = await ask(client, issuer.headers(role), as_unknown_field(query), method=method)
            assert body == as_introspection(unknown), (name, role)
            assert "data" not in body, (name, role, body)
            [error] = body["errors"]
            assert error["message"] == f"Cannot query field '{field}' on type 'Query'."
    # __typename is no schema discovery: clients need it, and it names what the caller selected.
    assert (await ask(client, issuer.headers("viewer"), "{ __typename }", method=method)) == {
        "data": {"__typename": "Query"}
    }


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_suggestions_need_the_permission(
    client: httpx.AsyncClient, issuer: Issuer, method: str
) -> None:
    for name, (query, variables, hint, hidden) in SUGGESTIONS.items():
        # Others and holders alternate on the same document: a shared validation result would show.
        for role in [*OTHERS, *HOLDERS, *OTHERS]:
            body = await ask(client, issuer.headers(role), query, variables, method=method)
            [message] = messages(body)
            if role in HOLDERS:
                assert hint in message, (name, role, message)
            else:
                assert message == hidden, (name, role)
                assert "did you mean" not in json.dumps(body).lower(), (name, role)


async def test_me_lists_the_permission(client: httpx.AsyncClient, issuer: Issuer) -> None:
    for role in [*HOLDERS, *OTHERS]:
        body = await ask(client, issuer.headers(role), "{ me { permissions } }")
        assert (SCHEMA_INTROSPECT in body["data"]["me"]["permissions"]) is (role in HOLDERS), role


async def test_a_policy_can_grant_it_to_viewers(make_app: AppFactory, issuer: Issuer) -> None:
    policy = {role: sorted(permissions) for role, permissions in DEFAULT_POLICY.items()}
    policy["viewer"].append(SCHEMA_INTROSPECT)
    app = await make_app(rbac_policy=policy)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        body = await ask(client, issuer.headers("viewer"), SCHEMA)
        assert body == {"data": SCHEMA_DATA}
        query, _, hint, hidden = SUGGESTIONS["field"]
        assert messages(await ask(client, issuer.headers("viewer"), query)) == [hidden + hint]
        # The user role still has not got it.
        assert messages(await ask(client, issuer.headers("user"), query)) == [hidden]


async def test_public_introspection_still_serves_everyone(make_app: AppFactory, issuer: Issuer) -> None:
    app = await make_app(public_introspection=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
        for headers in ({}, issuer.headers("viewer")):
            body = await ask(client, headers, SCHEMA)
            assert body == {"data": SCHEMA_DATA}
        # A published schema hides nothing from a typo either.
        query, _, hint, hidden = SUGGESTIONS["field"]
        assert messages(await ask(client, issuer.headers("viewer"), query)) == [hidden + hint]
        # Anything but introspection still needs a token.
        anonymous = await client.post("/graphql", json={"query": "{ me { sub } }"})
        assert anonymous.status_code == 401


# -- websockets ------------------------------------------------------------------------------------

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"
TYPO_SUBSCRIPTION = "subscription { instanceStatusChange { to } }"
SUBSCRIPTION_HINT = " Did you mean 'instanceStatusChanged' or 'instanceStatusChanges'?"


async def receive(socket: Any) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(await asyncio.wait_for(socket.recv(), WAIT))
        if message["type"] not in ("ka", "ping", "pong"):
            return message


async def answer(url: str, protocol: str, token: str, query: str) -> dict[str, Any]:
    """The first answer to `query` on a fresh, authenticated socket."""
    async with websockets.connect(url, subprotocols=[protocol]) as socket:  # type: ignore[list-item]
        await socket.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert await receive(socket) == {"type": "connection_ack"}
        kind = "subscribe" if protocol == TRANSPORT else "start"
        await socket.send(json.dumps({"id": "1", "type": kind, "payload": {"query": query}}))
        return await receive(socket)


def errors_in(message: dict[str, Any]) -> list[str]:
    payload = message["payload"]
    if message["type"] == "error" and isinstance(payload, list):  # graphql-transport-ws
        return [error["message"] for error in payload]
    return [error["message"] for error in payload.get("errors", [payload])]  # legacy: data or error


@pytest.fixture
async def ws_url(app: Starlette) -> AsyncIterator[str]:
    async with serve(app) as base:
        yield base.replace("http://", "ws://") + "/graphql"


async def test_websockets_follow_the_same_rule(ws_url: str, issuer: Issuer) -> None:
    for role in [*OTHERS, *HOLDERS, *OTHERS]:
        token = issuer.token(role)
        # graphql-transport-ws runs queries: introspection, and the unknown field it must look like.
        introspected = await answer(ws_url, TRANSPORT, token, SCHEMA)
        if role in HOLDERS:
            assert introspected["type"] == "next", role
            assert introspected["payload"] == {"data": SCHEMA_DATA}
        else:
            unknown = await answer(ws_url, TRANSPORT, token, as_unknown_field(SCHEMA))
            assert introspected == as_introspection(unknown), role
            assert errors_in(introspected) == ["Cannot query field '__schema' on type 'Query'."]
        # Both protocols: a subscription with a typo.
        for protocol in (TRANSPORT, LEGACY):
            [message] = errors_in(await answer(ws_url, protocol, token, TYPO_SUBSCRIPTION))
            base = "Cannot query field 'instanceStatusChange' on type 'Subscription'."
            assert message == (base + SUBSCRIPTION_HINT if role in HOLDERS else base), (protocol, role)
