"""Writes need an active token when RFC 7662 introspection is configured: a uvicorn-served gateway asks a
stand-in issuer (a small Starlette app over real HTTP) that answers active, inactive, or is down."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import pytest_asyncio
import websockets
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.bootstrap import build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.auth.dev_issuer import DevIssuer
from services.db.engine import make_engine
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import DATABASES, ORG, PROJECT
from tests.peers.jwks_server import JwksServer
from tests.support.databases import database
from tests.support.servers import serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

CLIENT, SECRET = "gateway-api", "s3cret"
SYNC = {"query": "mutation { syncInstances { transitions } }"}
ME = {"query": "{ me { sub } }"}


class StandInIssuer:
    """RFC 7662 at /oauth/v2/introspect with client_secret_basic; `mode` is active, inactive or down."""

    def __init__(self) -> None:
        self.mode = "active"
        self.requests: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.app = Starlette(routes=[Route("/oauth/v2/introspect", self.introspect, methods=["POST"])])

    async def introspect(self, request: Request) -> Response:
        expected = "Basic " + base64.b64encode(f"{CLIENT}:{SECRET}".encode()).decode()
        if request.headers.get("authorization") != expected:
            return JSONResponse({"error": "invalid_client"}, 401)
        form = parse_qs((await request.body()).decode())
        assert form["token_type_hint"] == ["access_token"]
        [token] = form["token"]
        self.requests[token] += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "down":
            return Response(status_code=503)
        return JSONResponse({"active": self.mode == "active"})


@dataclass
class Setup:
    base: str
    issuer: DevIssuer
    introspection: StandInIssuer

    def token(self, role: str = "admin") -> str:
        return self.issuer.issue(role, sub=f"{role}-{uuid.uuid4().hex[:8]}", org=ORG)

    async def post(self, token: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await http.post("/graphql", json=body, headers={"Authorization": f"Bearer {token}"})


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DATABASES)
async def setup(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Setup]:
    directory = tmp_path_factory.mktemp("introspection")
    stand_in = StandInIssuer()
    async with (
        database(request.param, directory) as url,
        JwksServer() as server,
        serve(stand_in.app, lifespan="off") as introspection_base,
    ):
        issuer = DevIssuer(directory=directory / "issuer", issuer=server.issuer, project_id=PROJECT)
        server.jwks = issuer.jwks()
        settings = Settings(  # type: ignore[call-arg]
            database_url=url,
            oidc_issuer=server.issuer,
            oidc_project_id=PROJECT,
            oidc_jwks_url=server.jwks_url,
            oidc_admin_org_id=ORG,
            oidc_introspection_url=f"{introspection_base}/oauth/v2/introspect",
            oidc_introspection_client_id=CLIENT,
            oidc_introspection_client_secret=SecretStr(SECRET),
            _env_file=None,
        )
        engine = make_engine(url)
        await upgrade(engine)
        runtime = await build_runtime(
            settings, engine=engine, cluster=SimulatedCluster(step_delay=0.01), runner=SimulatedSemaphore()
        )
        async with serve(create_app(runtime, own_runtime=True)) as base:
            yield Setup(base, issuer, stand_in)


@pytest.fixture(autouse=True)
def healthy(setup: Setup) -> None:
    setup.introspection.mode = "active"
    setup.introspection.gate = None


async def test_an_active_token_writes_and_the_answer_is_kept(setup: Setup) -> None:
    token = setup.token()
    for _ in range(3):
        response = await setup.post(token, SYNC)
        assert response.status_code == 200, response.text
        assert "errors" not in response.json()
    assert setup.introspection.requests[token] == 1


async def test_concurrent_writes_share_one_introspection(setup: Setup) -> None:
    token = setup.token()
    setup.introspection.gate = gate = asyncio.Event()
    writes = [asyncio.create_task(setup.post(token, SYNC)) for _ in range(5)]
    for _ in range(500):
        if setup.introspection.requests[token]:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # the other four arrive while the first request is held
    gate.set()
    assert [response.status_code for response in await asyncio.gather(*writes)] == [200] * 5
    assert setup.introspection.requests[token] == 1


async def test_an_inactive_token_cannot_write_but_reads(setup: Setup) -> None:
    setup.introspection.mode = "inactive"
    token = setup.token()
    refused = await setup.post(token, SYNC)
    assert refused.status_code == 401
    assert (
        refused.headers["www-authenticate"]
        == 'Bearer error="invalid_token", error_description="token not active"'
    )
    assert refused.json()["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    read = await setup.post(token, ME)
    assert read.status_code == 200
    assert read.json()["data"]["me"]["sub"].startswith("admin-")
    assert setup.introspection.requests[token] == 1  # the read never asked


async def test_the_issuer_down_refuses_writes_with_503_and_reads_go_on(setup: Setup) -> None:
    setup.introspection.mode = "down"
    token = setup.token()
    refused = await setup.post(token, SYNC)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE"}
    assert (await setup.post(token, ME)).status_code == 200
    # Not cached as an answer: once the issuer is back, the same token writes.
    setup.introspection.mode = "active"
    assert (await setup.post(token, SYNC)).status_code == 200


async def test_a_mutation_over_a_websocket_is_checked_too(setup: Setup) -> None:
    setup.introspection.mode = "inactive"
    token = setup.token()
    async with websockets.connect(
        setup.base.replace("http://", "ws://") + "/graphql",
        subprotocols=[Subprotocol("graphql-transport-ws")],
    ) as ws:
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": SYNC}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
    errors = answer["payload"] if answer["type"] == "error" else answer["payload"]["errors"]
    assert errors[0]["extensions"] == {"code": "UNAUTHENTICATED"}, answer
    assert setup.introspection.requests[token] == 1
