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
import pytest
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType, GraphQLOutputType, GraphQLSchema
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette

from schema.compiled import CompiledQueries
from schema.permissions import DEFINITION
from schema.types import COMPUTED_FROM_RECORD, COPIED_FROM_RECORD, Instance, narrow_view
from services.instances.reading import InstanceReader
from services.instances.records import InstanceRecord
from services.instances.states import InstanceStatus, InstanceTask, PowerState
from tests.conftest import AppFactory, Issuer
from tests.support.factories import BASE_TIME, insert_instances, instance_row
from tests.support.trusted_documents import MANIFEST, dashboard_documents

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


def narrow_documents(schema: GraphQLSchema) -> list[tuple[str, dict[str, Any], bool]]:
    """(document, variables, answered from a narrow page) for the Instance fields a narrow page holds:
    each alone, all together (and each aliased beside itself), the permission-guarded ones in every
    combination, through fragments and switches, with page info, cursors, orders and filters; and
    selections beside them that need full Instances (edges, a computed field, a resolver)."""
    instance = schema.get_type("Instance")
    assert isinstance(instance, GraphQLObjectType)
    narrow = COPIED_FROM_RECORD | COMPUTED_FROM_RECORD.keys()
    copied = [
        name
        for name, field in instance.fields.items()
        if (field.extensions or {})[DEFINITION].python_name in narrow
    ]
    assert len(copied) == len(narrow)
    guarded = ["ipAddress", "hostname", "node", "statusDetail"]
    every = " ".join(copied)
    page_info = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }"
    docs: list[tuple[str, dict[str, Any], bool]] = [
        (f"{{ instances(first: 4) {{ nodes {{ {name} }} }} }}", {}, True) for name in copied
    ]
    docs += [
        (f"{{ instances {{ nodes {{ id {' '.join(combination)} }} }} }}", {}, True)
        for size in range(2, len(guarded) + 1)
        for combination in itertools.combinations(guarded, size)
    ]
    aliased = " ".join(f"a_{name}: {name} {name}" for name in copied)
    parts = (
        "query Parts($a: Boolean!) { instances(first: 3) { nodes { ...Head"
        " ... on Instance @include(if: $a) { ipAddress node } hostname @skip(if: $a) } } }"
        " fragment Head on Instance { id name status }"
    )
    docs += [
        (
            f"{{ instances(first: 5) {{ __typename {page_info} nodes {{ __typename {aliased} }} }} }}",
            {},
            True,
        ),
        (
            "query Page($after: String, $order: InstanceOrder, $f: InstanceFilter) {"
            " instances(first: 2, after: $after, orderBy: $order, filter: $f) {"
            f" {page_info} nodes {{ {every} }} }} }}",
            {},
            True,
        ),
        (parts, {"a": True}, True),
        (parts, {"a": False}, True),
        # Two pages in one document, each narrow with its own columns.
        (
            "{ a: instances(first: 2) { nodes { id cpu } }"
            " b: instances(first: 3, orderBy: {field: NAME, direction: ASC}) { nodes { name hostname } } }",
            {},
            True,
        ),
        # A computed field's columns under another field's name: statusDetail reads the status_message
        # column, statusMessage is computed from status_reason.
        ("{ instances(first: 6) { nodes { statusDetail } } }", {}, True),
        ("{ instances(first: 6) { nodes { statusMessage statusDetail powerState status } } }", {}, True),
        # Full Instances: edges, a resolver field.
        (f"{{ instances(first: 3) {{ edges {{ cursor node {{ {every} }} }} }} }}", {}, False),
        ("{ instances(first: 3) { nodes { id labels { key value } } } }", {}, False),
    ]
    # The dashboard's own list documents.
    docs += [
        (document, {"first": 5}, True)
        for document in dashboard_documents()
        if document.startswith("query Instances(")
    ]
    assert sum(document.startswith("query Instances(") for document, _, _ in docs) == 2
    return docs


async def test_narrow_pages_send_the_same_bytes(
    make_app: AppFactory, issuer: Issuer, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages read with only the columns a plan reads answer as full Instances do, for every role."""
    await insert_instances(
        engine,
        [
            instance_row(
                i,
                org_id="org-a" if i % 4 else "org-b",
                owner_sub="user-1" if i % 3 else "someone-else",
                status=(InstanceStatus.ACTIVE, InstanceStatus.FAILED, InstanceStatus.DELETED)[i % 3],
                node=f"node-{i}" if i % 2 else None,
                ip_address=None if i == 5 else f"10.0.0.{i}",
                hostname=None if i == 6 else f"vm-{i}.internal",
                description=f"the {i}th",
                status_reason=("TerraformFailed", "NotAReasonWeKnow", None)[i % 3],
                status_message=f"peer said {i}" if i % 2 else None,
                task=InstanceTask.REBOOTING if i == 2 else None,
                power_state=PowerState.STOPPED if i == 3 else PowerState.RUNNING,
                active_at=BASE_TIME if i % 2 else None,
                deleted_at=BASE_TIME if i % 3 == 2 else None,
                version=i + 1,
            )
            for i in range(9)
        ],
    )
    narrow = 0
    narrow_page = InstanceReader.narrow_page

    async def counted(self: InstanceReader, *args: Any, **kwargs: Any) -> Any:
        nonlocal narrow
        narrow += 1
        return await narrow_page(self, *args, **kwargs)

    monkeypatch.setattr(InstanceReader, "narrow_page", counted)
    fast, slow = await make_app(), await make_app(compiled_execution=False)
    compiled = _compiled(fast)
    tokens = {role: issuer.token(role) for role in ROLES}
    tokens["admin-org-b"] = issuer.token("admin", org="org-b")
    # Both orgs' instances in sight, the guarded fields allowed in one of them only: per row, per org.
    tokens["operator-a-viewer-b"] = issuer.token(
        sub="mixed-1", grants={"org-a": ["operator"], "org-b": ["viewer"]}
    )
    tokens["viewer-a-user-b"] = issuer.token(
        sub="mixed-2", grants={"org-a": ["viewer"], "org-b": ["viewer", "user"]}
    )
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://gateway") as fast_client,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://gateway") as slow_client,
    ):
        cases = narrow_documents(fast.state.schema._schema)
        # The second page of each order and filter, after the first page's end cursor.
        page = next(document for document, _, _ in cases if document.startswith("query Page"))
        for order, instance_filter in [
            (None, None),
            ({"field": "NAME", "direction": "ASC"}, None),
            ({"field": "CREATED_AT", "direction": "ASC"}, {"status": ["ACTIVE", "FAILED"]}),
            (None, {"nameContains": "vm-000", "includeDeleted": False}),
        ]:
            first = await slow_client.post(
                "/graphql",
                json={"query": page, "variables": {"order": order, "f": instance_filter}},
                headers={"Authorization": f"Bearer {tokens['admin']}"},
            )
            after = first.json()["data"]["instances"]["pageInfo"]["endCursor"]
            cases.append((page, {"order": order, "f": instance_filter, "after": after}, True))
        for (document, variables, is_narrow), role in itertools.product(cases, tokens):
            await _post(fast_client, document, variables, tokens[role])  # validated, then learned
            expected = await _post(slow_client, document, variables, tokens[role])
            before, narrow_before = compiled.compiled, narrow
            again = await _post(fast_client, document, variables, tokens[role])
            assert _same(again, expected), (role, document, variables, _around(again, expected))
            assert compiled.compiled == before + 1, (role, document)
            assert (narrow > narrow_before) == is_narrow, (role, document)


def test_what_a_narrow_page_holds_is_what_from_record_copies() -> None:
    """COPIED_FROM_RECORD: each is the record's attribute as is (`id`: as the ID scalar writes it)."""
    fields: dict[str, Any] = {
        **instance_row(7, node="node-7", active_at=BASE_TIME, deleted_at=BASE_TIME, description="d"),
        "ssh_public_key": None,
        "status_reason": "TerraformFailed",
        "status_message": "detail",
        "terraform_name": "tf",
        "terraform_namespace": "ns",
        "semaphore_task_id": 3,
        "task": InstanceTask.REBOOTING,
    }
    record = InstanceRecord(**fields)
    instance = Instance.from_record(record)
    for name in COPIED_FROM_RECORD - {"id"}:
        assert getattr(instance, name) is getattr(record, name), name
    assert instance.id == str(record.id)
    for name, (columns, _) in COMPUTED_FROM_RECORD.items():
        names = tuple(sorted({*columns, "id"}))
        row = tuple.__new__(narrow_view(names), [getattr(record, column) for column in names])
        assert getattr(row, name) == getattr(instance, name), name
    # A column named like a computed field never answers for it without the field's own columns.
    with pytest.raises(AttributeError):
        narrow_view(("id", "status_message")).status_message.fget(("x", "raw"))  # type: ignore[attr-defined]


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
