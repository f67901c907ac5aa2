"""Trusted documents over HTTP (POST, GET) and websockets, the open/enforce gate, the manifest check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from gateway.documents import ManifestError, load
from gateway.settings import Settings
from schema.build import build_schema
from schema.limits import DocumentLimits
from tests.conftest import AppFactory, Issuer
from tests.support.documents import CREATE
from tests.support.servers import serve
from tests.support.trusted_documents import MANIFEST, dashboard_documents, manifest
from tests.test_cli import run

CATALOG = "query Catalog { catalog { flavors { name cpu memoryMib diskGib } images { name description } } }"
CATALOG_ID = hashlib.sha256(CATALOG.encode()).hexdigest()
CHANGES = next(d for d in dashboard_documents() if d.startswith("subscription Changes") and "ipAddress" in d)
CHANGES_ID = hashlib.sha256(CHANGES.encode()).hexdigest()
UNKNOWN_ID = "0" * 64
ADHOC = "{ catalog { flavors { name } } }"


def test_the_fixture_manifest_holds_every_dashboard_document() -> None:
    """So the dashboard works in enforce mode: regenerate with `python -m tests.support.trusted_documents`."""
    committed = json.loads(MANIFEST.read_text())
    assert committed == manifest(), "tests/fixtures/trusted-documents.json is stale"
    for document in dashboard_documents():
        assert committed[hashlib.sha256(document.encode()).hexdigest()] == document
    assert CATALOG_ID in committed
    assert CHANGES_ID in committed


@pytest.fixture
async def enforcing(make_app: AppFactory) -> Starlette:
    return await make_app(trusted_documents=MANIFEST, documents_mode="enforce")


@pytest.fixture
async def opened(make_app: AppFactory) -> Starlette:
    return await make_app(trusted_documents=MANIFEST, documents_mode="open")


async def post(app: Starlette, headers: dict[str, str], body: dict[str, Any], **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        return await http.post("/graphql", json=body, headers=headers, **kw)


async def get(app: Starlette, headers: dict[str, str], params: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as http:
        return await http.get("/graphql", params=params, headers=headers)


def code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["extensions"]["code"])


async def test_a_document_run_by_id_is_answered_from_its_plan_without_hashing_its_text(
    opened: Starlette, issuer: Issuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first run, a trusted document by id is compiled, keyed by its id: no SHA-256 of the
    text for the plan's key, the metrics label or the gate, and no parse or validation."""
    viewer = issuer.headers("viewer")
    body = {"documentId": f"sha256:{CATALOG_ID}"}
    expected = await post(opened, viewer, body)  # graphql-core validates and runs it, then it is learned

    def refused(*_: object) -> None:
        raise AssertionError("hashed, parsed or validated per request")

    for name in ("gateway.documents.sha256_hex", "schema.compiled.queries.digest"):
        monkeypatch.setattr(name, refused)
    monkeypatch.setattr(opened.state.schema, "execute", refused)  # graphql-core's parse, validate, run
    monkeypatch.setattr("schema.compiled.queries.parse_cached", refused)
    compiled = opened.state.compiled
    before = compiled.compiled
    for _ in range(2):
        again = await post(opened, viewer, body)
        assert (again.status_code, again.content) == (expected.status_code, expected.content)
    assert compiled.compiled == before + 2


async def test_a_document_is_run_by_id_on_post_and_get_both_ways(
    enforcing: Starlette, issuer: Issuer
) -> None:
    viewer = issuer.headers("viewer")
    for response in (
        await post(enforcing, viewer, {"documentId": f"sha256:{CATALOG_ID}"}),
        await post(
            enforcing, viewer, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": CATALOG_ID}}}
        ),
        await get(enforcing, viewer, {"documentId": f"sha256:{CATALOG_ID}"}),
        await get(
            enforcing,
            viewer,
            {"extensions": json.dumps({"persistedQuery": {"version": 1, "sha256Hash": CATALOG_ID}})},
        ),
        await post(enforcing, viewer, {"query": CATALOG}),  # a trusted document's own text is trusted
        await post(enforcing, viewer, {"query": CATALOG, "documentId": f"sha256:{CATALOG_ID}"}),
    ):
        assert response.status_code == 200, response.text
        assert response.json()["data"]["catalog"]["flavors"], response.text


async def test_enforce_refuses_unknown_ids_and_adhoc_text_without_the_permission(
    enforcing: Starlette, issuer: Issuer
) -> None:
    viewer = issuer.headers("viewer")
    unknown = await post(enforcing, viewer, {"documentId": f"sha256:{UNKNOWN_ID}"})
    assert (unknown.status_code, code(unknown)) == (200, "DOCUMENT_NOT_TRUSTED")
    adhoc = await post(enforcing, viewer, {"query": ADHOC})
    assert (adhoc.status_code, code(adhoc)) == (200, "DOCUMENT_NOT_TRUSTED")
    strict = await post(
        enforcing, {**viewer, "Accept": "application/graphql-response+json"}, {"query": ADHOC}
    )
    assert (strict.status_code, code(strict)) == (400, "DOCUMENT_NOT_TRUSTED")
    # An admin holds operations:adhoc.
    admin = await post(enforcing, issuer.headers("admin"), {"query": ADHOC})
    assert admin.status_code == 200, admin.text
    assert admin.json()["data"]["catalog"]["flavors"]


async def test_open_runs_adhoc_text_and_answers_unknown_ids_as_apollo_does(
    opened: Starlette, issuer: Issuer
) -> None:
    viewer = issuer.headers("viewer")
    adhoc = await post(opened, viewer, {"query": ADHOC})
    assert adhoc.status_code == 200, adhoc.text
    assert adhoc.json()["data"]["catalog"]["flavors"]
    unknown = await post(
        opened, viewer, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": UNKNOWN_ID}}}
    )
    assert unknown.json()["errors"][0] == {
        "message": "PersistedQueryNotFound",
        "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
    }


@pytest.mark.parametrize(
    "body",
    [
        {"query": ADHOC, "documentId": f"sha256:{CATALOG_ID}"},  # the text does not hash to the id
        {"documentId": CATALOG_ID},  # no sha256: prefix
        {"documentId": "sha256:XYZ"},
        {"extensions": {"persistedQuery": {"version": 2, "sha256Hash": CATALOG_ID}}},
    ],
)
async def test_a_bad_or_contradicting_id_is_a_400(
    opened: Starlette, issuer: Issuer, body: dict[str, Any]
) -> None:
    response = await post(opened, issuer.headers("viewer"), body)
    assert (response.status_code, code(response)) == (400, "BAD_REQUEST"), response.text


async def test_a_subscription_is_started_by_id_over_websockets(make_app: AppFactory, issuer: Issuer) -> None:
    import websockets

    app = await make_app(trusted_documents=MANIFEST, documents_mode="enforce")
    await app.state.runtime.start(background=False)  # the event hub; make_app closes the runtime
    async with serve(app, lifespan="off") as url:
        ws_url = url.replace("http", "ws") + "/graphql"
        async with websockets.connect(ws_url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
            await socket.send(json.dumps({"type": "connection_init", "payload": issuer.headers("viewer")}))
            assert json.loads(await socket.recv())["type"] == "connection_ack"
            refused = {"query": "subscription { instanceStatusChanges { to } }"}
            await socket.send(json.dumps({"id": "1", "type": "subscribe", "payload": refused}))
            answer = json.loads(await socket.recv())
            assert answer["type"] == "error"
            assert answer["payload"][0]["extensions"]["code"] == "DOCUMENT_NOT_TRUSTED"
            named = {"documentId": f"sha256:{CHANGES_ID}"}
            await socket.send(json.dumps({"id": "2", "type": "subscribe", "payload": named}))
            async with httpx.AsyncClient(base_url=url, headers=issuer.headers("admin")) as http:
                created = await http.post(
                    "/graphql",
                    json={"query": CREATE, "variables": {"name": "ws-doc"}},
                )
                assert created.status_code == 200, created.text
            message = json.loads(await socket.recv())
            while message["type"] == "ping":
                message = json.loads(await socket.recv())
            assert (message["type"], message["id"]) == ("next", "2"), message
            assert message["payload"]["data"]["instanceStatusChanges"]["instance"]["name"] == "ws-doc"


def write_manifest(tmp_path: Path, entries: dict[str, str]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_bytes(orjson.dumps(entries))
    return path


def test_a_hash_mismatch_stops_loading_naming_the_entry(tmp_path: Path) -> None:
    wrong = "f" * 64
    path = write_manifest(tmp_path, {CATALOG_ID: CATALOG, wrong: "query Me { me { sub } }"})
    with pytest.raises(ManifestError, match=f"{wrong[:16]}…: the key is not the sha256"):
        load(path, build_schema(), DocumentLimits(), 5000)


def test_documents_check_passes_the_fixture_and_lists_each_problem(tmp_path: Path) -> None:
    assert run("documents", "check", str(MANIFEST)).returncode == 0
    invalid = "query Bad { nope }"
    costly = "query Costly { instances(first: 100000) { nodes { id terraform { name } } } }"
    path = write_manifest(
        tmp_path,
        {
            hashlib.sha256(invalid.encode()).hexdigest(): invalid,
            hashlib.sha256(costly.encode()).hexdigest(): costly,
            "a" * 64: "query Me { me { sub } }",
        },
    )
    checked = run("documents", "check", str(path))
    assert checked.returncode == 1
    lines = checked.stderr.strip().splitlines()
    assert len(lines) == 3, checked.stderr
    assert any("Cannot query field 'nope'" in line for line in lines)
    assert any("Costly: estimated cost" in line for line in lines)
    assert any("is not the sha256" in line for line in lines)


async def test_the_operation_label_is_the_trusted_name_or_adhoc(
    make_app: AppFactory, settings: Settings, issuer: Issuer
) -> None:
    from tests.test_observability import scrape, value

    app = await make_app(trusted_documents=MANIFEST)
    viewer = issuer.headers("viewer")
    assert (await post(app, viewer, {"documentId": f"sha256:{CATALOG_ID}"})).status_code == 200
    assert (
        await post(app, viewer, {"query": "query Catalog { catalog { images { name } } }"})
    ).status_code == 200
    assert (await post(app, viewer, {"query": "query Random123 { me { sub } }"})).status_code == 200
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.state.metrics_app), base_url="http://m"
    ) as m:
        samples = await scrape(m)
    operations = "opencsp_graphql_operations_total"
    assert value(samples, operations, operation="Catalog", outcome="ok") == 1
    assert value(samples, operations, operation="adhoc", outcome="ok") == 2
    assert not [key for key in samples if ("operation", "Random123") in key[1]]
