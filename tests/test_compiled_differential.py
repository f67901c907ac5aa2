"""The compiled path answers byte for byte what graphql-core answers.

Documents are generated from the built schema (every field reachable from the query root within a depth,
aliases, one field under aliases with different arguments, fields selected twice and merged, inline and
named fragments and fragments spreading fragments from the root, `@include`/`@skip` with literal and
variable conditions, `__typename`), plus hand-picked ones, and each is sent as every role to two apps over
one seeded database: one with compiled execution, one without. The compiled app answers a document the
second time it sees it from its plan (the first run validates it), and must send the same bytes as
graphql-core did. The front end's own documents (the fixture manifest, tests/fixtures/trusted-documents.json)
are sent the same way, by trusted id, with the variables the dashboard sends.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import orjson
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, GraphQLSchema
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from schema.compiled import CompiledQueries
from services.instances.states import InstanceStatus
from tests.conftest import AppFactory, Issuer
from tests.support.factories import insert_instances, instance_row
from tests.support.trusted_documents import MANIFEST

ROLES = ("viewer", "user", "operator", "admin")
# Arguments for fields that need them; everything else is selected without arguments.
ARGUMENTS = {"instance": "(id: $id)", "instances": "(first: 3)", "events": "(last: 2)"}


def _named(type_: GraphQLOutputType) -> GraphQLOutputType:
    while isinstance(type_, GraphQLNonNull | GraphQLList):
        type_ = type_.of_type
    return type_


def selection(type_: GraphQLObjectType, depth: int) -> list[str]:
    """Every field of `type_` with its sub-selection, down to `depth` levels of objects."""
    fields: list[str] = []
    for name, field in type_.fields.items():
        inner = _named(field.type)
        if any(arg.type.__class__ is GraphQLNonNull for arg in field.args.values()) and name not in ARGUMENTS:
            continue
        arguments = ARGUMENTS.get(name, "")
        if isinstance(inner, GraphQLObjectType):
            if depth == 0:
                continue
            below = selection(inner, depth - 1)
            if below:
                fields.append(f"{name}{arguments} {{ __typename {' '.join(below)} }}")
        else:
            fields.append(f"{name}{arguments}")
    return fields


def documents(schema: GraphQLSchema) -> list[tuple[str, dict[str, Any]]]:
    """(document, variables) pairs within a budget of a few dozen."""
    query = schema.query_type
    assert query is not None
    instance = schema.get_type("Instance")
    assert isinstance(instance, GraphQLObjectType)
    every = selection(instance, 2)
    docs: list[tuple[str, dict[str, Any]]] = []
    whole = " ".join(selection(query, 4))
    docs.append((f"query Whole($id: ID!) {{ {whole} }}", {}))
    # Every field aliased beside its own name: leaves all in one document, object fields one at a time.
    aliased = [f"a_{field.split('(')[0].split(' ')[0]}: {field} {field}" for field in every]
    leaves = [pair for pair in aliased if "{" not in pair]
    for group in [leaves, *([pair] for pair in aliased if "{" in pair)]:
        body = " ".join(group)
        docs.append(
            (
                f"query($id: ID!) {{ instance(id: $id) {{ {body} }}"
                f" q: instances(first: 2) {{ nodes {{ {body} }} }} }}",
                {},
            )
        )
    half = len(every) // 2
    docs.append(
        (
            "query Fragments($id: ID!) { instance(id: $id) { ...Head ... on Instance { __typename "
            + " ".join(every[half:])
            + " } } instances(first: 3) { edges { cursor node { ...Head } } } }"
            " fragment Head on Instance { " + " ".join(every[:half]) + " }",
            {},
        )
    )
    # Directives: literal conditions and every combination of two variable ones.
    directive_doc = (
        "query Switches($id: ID!, $a: Boolean!, $b: Boolean!) { instances(first: 3) { nodes {"
        " id ipAddress @include(if: $a) hostname @skip(if: $b) node @skip(if: true) name @include(if: false)"
        " ... on Instance @include(if: $b) { statusDetail events { detail @skip(if: $a) toStatus } }"
        " ...More @skip(if: $a) } } instance(id: $id) @include(if: $a) { name } }"
        " fragment More on Instance { cpu status createdAt }"
    )
    for a, b in itertools.product((True, False), repeat=2):
        docs.append((directive_doc, {"a": a, "b": b}))
    docs.append(("{ catalog { flavors { name cpu memoryMib diskGib } images { name description } } }", {}))
    docs.append(("{ me { sub name email orgId roles { orgId roles } permissions tokenExpiresAt } }", {}))
    docs.append(
        (
            "query($f: InstanceFilter) { instances(filter: $f) { nodes { name status } } }",
            {"f": {"status": ["FAILED", "DELETED"]}},
        )
    )
    docs.append(("{ instances(first: -1) { nodes { id } } }", {}))  # BAD_USER_INPUT: graphql-core answers
    docs.append(("query($id: ID!) { instance(id: $id) { events(first: 99) { at } } }", {}))
    # One field under several aliases with different arguments; a field selected twice, merged.
    docs.append(
        (
            "query($id: ID!) { one: instances(first: 1) { nodes { id name } pageInfo { hasNextPage } }"
            " two: instances(first: 2) { edges { cursor node { name t: __typename } }"
            " pageInfo { hasNextPage hasPreviousPage startCursor endCursor } }"
            " instance(id: $id) { name } instance(id: $id) { status events(last: 1) { at toStatus } } }",
            {},
        )
    )
    # Fragments spreading fragments, from the root down, one of them under a variable directive.
    nested = (
        "query Nested($id: ID!, $c: Boolean!) { ...Root } fragment Root on Query {"
        " me { ...Who } instance(id: $id) { ...Card ...Times @include(if: $c) } }"
        " fragment Who on Me { sub orgId } fragment Card on Instance { id name ...Times }"
        " fragment Times on Instance { createdAt events(last: 2) { at } }"
    )
    docs += [(nested, {"c": True}), (nested, {"c": False})]
    return docs


async def _post(client: httpx.AsyncClient, document: str, variables: dict[str, Any], token: str) -> bytes:
    response = await client.post(
        "/graphql",
        json={"query": document, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.content + f" {response.status_code}".encode()


def _compiled(app: Starlette) -> CompiledQueries:
    compiled = app.state.compiled
    assert isinstance(compiled, CompiledQueries)
    return compiled


async def test_compiled_and_graphql_core_send_the_same_bytes(
    make_app: AppFactory, issuer: Issuer, engine: AsyncEngine
) -> None:
    rows = await insert_instances(
        engine,
        [
            instance_row(
                i,
                status=InstanceStatus.FAILED if i % 3 == 0 else InstanceStatus.ACTIVE,
                node=f"node-{i}",
                status_reason="TerraformFailed",
                status_message=f"detail {i}",
            )
            for i in range(6)
        ],
    )
    fast, slow = await make_app(), await make_app(compiled_execution=False)
    compiled = _compiled(fast)
    instance_id = str(rows[0]["id"])
    cases = documents(fast.state.schema._schema)
    tokens = {role: issuer.token(role) for role in ROLES}
    checked = 0
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://gateway") as fast_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://gateway") as slow_client,
    ):
        for (document, variables), role in itertools.product(cases, ROLES):
            variables = {"id": instance_id, **variables} if "$id" in document else variables
            first = await _post(fast_client, document, variables, tokens[role])
            expected = await _post(slow_client, document, variables, tokens[role])
            before = compiled.compiled
            again = await _post(fast_client, document, variables, tokens[role])
            assert _same(first, expected), (role, document, _around(first, expected))
            assert _same(again, expected), (role, document, _around(again, expected))
            checked += compiled.compiled - before
    # Most of them must really have run compiled, or this compares graphql-core with itself.
    assert checked >= len(cases) * len(ROLES) * 3 // 4, (checked, len(cases) * len(ROLES))


async def _post_id(
    client: httpx.AsyncClient, document_id: str, variables: dict[str, Any], token: str
) -> bytes:
    response = await client.post(
        "/graphql",
        json={"documentId": f"sha256:{document_id}", "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
    )
    return response.content + f" {response.status_code}".encode()


def _variables(document: str, instance_id: str) -> list[dict[str, Any]]:
    """Realistic variables for a front-end document: an existing instance, pages the dashboard asks for,
    an instance that does not exist (for the mutations: they answer NOT_FOUND and change nothing)."""
    if "$first" in document:
        return [{"first": 3}, {"first": 50}]
    if "$input" in document:  # an unknown flavor: refused with a user error, nothing created
        return [{"input": {"name": "never", "flavor": "no-such-flavor", "image": "debian-12"}}]
    if "$name" in document:
        return [{"name": "never made"}]  # not a DNS label: refused with a user error, nothing created
    if "$id" in document:
        missing = {"id": "00000000-0000-0000-0000-000000000000"}
        return [missing] if document.lstrip().startswith("mutation") else [{"id": instance_id}, missing]
    return [{}]


async def test_the_front_ends_trusted_documents_send_the_same_bytes_both_ways(
    make_app: AppFactory, issuer: Issuer, engine: AsyncEngine
) -> None:
    """Every document of the fixture manifest, sent by id as the dashboard sends it, as every role.

    Queries must run compiled (the second time) and answer the very bytes graphql-core answers. Mutations
    are never compiled (`CompiledQueries.learn` keeps only queries: a mutation's extensions act per
    execution); they are sent with variables that change nothing (an unknown id, an unknown flavor), so
    both apps over one database must still answer the same bytes, and the compiled counter must not move.
    Subscriptions are not served over HTTP: both apps refuse them alike."""
    rows = await insert_instances(
        engine,
        [
            instance_row(i, status=InstanceStatus.FAILED if i % 2 else InstanceStatus.ACTIVE, node=f"n-{i}")
            for i in range(4)
        ],
    )
    instance_id = str(rows[0]["id"])
    manifest: dict[str, str] = orjson.loads(MANIFEST.read_bytes())
    fast = await make_app(trusted_documents=MANIFEST)
    slow = await make_app(trusted_documents=MANIFEST, compiled_execution=False)
    compiled = _compiled(fast)
    tokens = {role: issuer.token(role) for role in ROLES}
    queries = compiled_queries = 0
    kinds: dict[str, int] = {}
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://gateway") as fast_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://gateway") as slow_client,
    ):
        for (document_id, document), role in itertools.product(sorted(manifest.items()), ROLES):
            kind = document.lstrip().split(" ", 1)[0].split("(", 1)[0]
            for variables in _variables(document, instance_id):
                kinds[kind] = kinds.get(kind, 0) + 1
                first = await _post_id(fast_client, document_id, variables, tokens[role])
                expected = await _post_id(slow_client, document_id, variables, tokens[role])
                before = compiled.compiled
                again = await _post_id(fast_client, document_id, variables, tokens[role])
                ran_compiled = compiled.compiled - before
                assert _same(first, expected), (role, document, variables, _around(first, expected))
                assert _same(again, expected), (role, document, variables, _around(again, expected))
                if kind == "query":
                    queries += 1
                    compiled_queries += ran_compiled
                else:
                    assert ran_compiled == 0, (kind, document)
    assert kinds.keys() == {"query", "mutation", "subscription"}, kinds
    # Most of them must really have run compiled, or this compares graphql-core with itself.
    assert compiled_queries >= queries * 3 // 4, (compiled_queries, queries)


def _same(answer: bytes, expected: bytes) -> bool:
    """Byte-identical; or, where graphql-core itself is not deterministic, identical up to that.

    graphql-core appends an error when the awaitable that raised it settles: with two root fields that
    read the database concurrently (`instance` and `instances`), which settles first is up to the
    database thread, so two graphql-core runs of one document may order their errors differently. Then
    `data` must still be identical bytes and the errors the same set of identical (serialized) errors."""
    if answer == expected:
        return True
    body, status = answer.rsplit(b" ", 1)
    expected_body, expected_status = expected.rsplit(b" ", 1)
    mine, theirs = orjson.loads(body), orjson.loads(expected_body)
    if status != expected_status or mine.keys() != theirs.keys() or len(mine.get("data") or {}) < 2:
        return False
    return orjson.dumps(mine["data"]) == orjson.dumps(theirs["data"]) and sorted(
        map(orjson.dumps, mine.get("errors", []))
    ) == sorted(map(orjson.dumps, theirs.get("errors", [])))


def _around(answer: bytes, expected: bytes) -> tuple[bytes, bytes]:
    at = next((i for i, (x, y) in enumerate(zip(answer, expected, strict=False)) if x != y), 0)
    return answer[max(0, at - 200) : at + 200], expected[max(0, at - 200) : at + 200]
