"""Sign-out reaches the API, over real sockets: logout tokens posted over HTTP to a uvicorn-served gateway,
websockets of both protocols closed with 4401 "signed out", an admin's lockout, a restarted gateway.

One gateway per module and database (starting one costs more than most tests here); every test uses
subjects of its own, so what one revokes never touches another.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
import websockets
from sqlalchemy import func, select
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.authn import REVOKED_CHALLENGE
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.auth.dev_issuer import DevIssuer
from services.db.engine import make_engine
from services.db.models import SessionRevocation
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import DATABASES, ORG, PROJECT
from tests.peers.jwks_server import JwksServer
from tests.support.databases import database
from tests.support.servers import serve

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONSOLE = "console-client-1"
LOGOUT = "/auth/backchannel-logout"
ME = {"query": "{ me { sub } }"}
PROTOCOLS = ["graphql-transport-ws", "graphql-ws"]
REVOKE = "mutation($sub: String!) { revokeSessions(sub: $sub) { sub orgId revokedAt userErrors { code } } }"


@dataclass
class Gateway:
    base: str
    runtime: Runtime
    settings: Settings
    issuer: DevIssuer
    directory: Path

    def earlier(self, seconds: int) -> DevIssuer:
        """The same issuer (same key) with a clock `seconds` behind: tokens issued before a logout."""
        return DevIssuer(
            directory=self.directory,
            issuer=self.issuer.issuer,
            project_id=PROJECT,
            clock=lambda: time.time() - seconds,
        )

    def token(self, sub: str, *, org: str = ORG, role: str = "viewer", before: int = 0) -> str:
        issuer = self.earlier(before) if before else self.issuer
        return issuer.issue(role, sub=sub, org=org)

    def logout_claims(self, sub: str | None, *, before: int = 0, **changes: Any) -> dict[str, Any]:
        claims = self.issuer.logout_claims(audience=CONSOLE, sub=sub, issued_at=time.time() - before)
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    async def post_logout(self, body: Any, **kw: Any) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await http.post(LOGOUT, content=body, **kw)

    async def logout(self, token: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await http.post(LOGOUT, data={"logout_token": token})

    async def me(self, token: str) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base) as http:
            return await http.post("/graphql", json=ME, headers={"Authorization": f"Bearer {token}"})

    async def rows(self, sub: str) -> int:
        async with self.runtime.engine.connect() as connection:
            query = select(func.count()).select_from(SessionRevocation).where(SessionRevocation.sub == sub)
            return int((await connection.execute(query)).scalar_one())


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=DATABASES)
async def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Gateway]:
    directory = tmp_path_factory.mktemp("logout")
    async with database(request.param, directory) as url, JwksServer() as server:
        issuer = DevIssuer(directory=directory / "issuer", issuer=server.issuer, project_id=PROJECT)
        server.jwks = issuer.jwks()
        settings = Settings(  # type: ignore[call-arg]
            database_url=url,
            oidc_issuer=server.issuer,
            oidc_project_id=PROJECT,
            oidc_jwks_url=server.jwks_url,
            oidc_admin_org_id=ORG,
            oidc_logout_client_ids=[CONSOLE],
            websocket_keep_alive_seconds=60,
            _env_file=None,
        )
        engine = make_engine(url)
        await upgrade(engine)
        runtime = await build_runtime(
            settings, engine=engine, cluster=SimulatedCluster(step_delay=0.01), runner=SimulatedSemaphore()
        )
        async with serve(create_app(runtime, own_runtime=True)) as base:
            yield Gateway(base, runtime, settings, issuer, directory / "issuer")


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


async def connect(base: str, protocol: str) -> Any:
    return await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=[Subprotocol(protocol)],
    )


async def open_socket(base: str, token: str, protocol: str) -> Any:
    ws = await connect(base, protocol)
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "connection_ack"}
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    query = "subscription { instanceStatusChanges { to } }"
    await ws.send(json.dumps({"id": "1", "type": start, "payload": {"query": query}}))
    return ws


async def closed_with(ws: Any) -> tuple[int | None, str | None]:
    """The close code and reason, waiting a few seconds at most (keep-alives are skipped)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    except websockets.ConnectionClosed as closed:
        frame = closed.rcvd
    return (frame.code, frame.reason) if frame is not None else (None, None)


async def still_open(ws: Any, protocol: str) -> bool:
    if protocol == "graphql-transport-ws":
        await ws.send(json.dumps({"type": "ping"}))
        return bool(json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"})
    await ws.ping()
    return True


# -- attacks: each 400 invalid_request, and nothing revoked -----------------------------------------------


def _attacks(g: Gateway, sub: str) -> dict[str, tuple[bytes | str, dict[str, str]]]:
    form = {"content-type": "application/x-www-form-urlencoded"}

    def posted(token: str) -> tuple[bytes | str, dict[str, str]]:
        return str(httpx.QueryParams({"logout_token": token})), form

    other = DevIssuer(
        directory=g.directory.parent / "other-issuer", issuer=g.issuer.issuer, project_id=PROJECT
    )
    forged = other.sign(g.logout_claims(sub))
    header, payload, _ = g.issuer.sign(g.logout_claims(sub)).split(".")
    _, _, foreign_signature = forged.split(".")
    return {
        # Same kid, another key: the signature does not verify.
        "bad signature": posted(f"{header}.{payload}.{foreign_signature}"),
        "wrong aud": posted(g.issuer.sign(g.logout_claims(sub, aud=["another-app"]))),
        "missing events": posted(g.issuer.sign(g.logout_claims(sub, events=None))),
        "wrong event": posted(g.issuer.sign(g.logout_claims(sub, events={"urn:other": {}}))),
        "nonce present": posted(g.issuer.sign(g.logout_claims(sub, nonce="n-1"))),
        "expired": posted(g.issuer.sign(g.logout_claims(sub, before=600))),
        "no sub nor sid": posted(g.issuer.sign(g.logout_claims(None))),
        "an access token": posted(g.token(sub)),
        "huge": ("logout_token=" + "a" * 20_000, form),
        "not form-encoded": (
            json.dumps({"logout_token": g.issuer.sign(g.logout_claims(sub))}),
            {"content-type": "application/json"},
        ),
        "two tokens": (
            f"logout_token={g.issuer.sign(g.logout_claims(sub))}&logout_token={g.issuer.sign(g.logout_claims(sub))}",
            form,
        ),
    }


ATTACKS = [
    "bad signature",
    "wrong aud",
    "missing events",
    "wrong event",
    "nonce present",
    "expired",
    "no sub nor sid",
    "an access token",
    "huge",
    "not form-encoded",
    "two tokens",
]


@pytest.mark.parametrize("attack", ATTACKS)
async def test_a_bad_logout_token_is_400_and_revokes_nothing(gateway: Gateway, attack: str) -> None:
    sub = fresh("victim")
    token = gateway.token(sub, before=30)
    body, headers = _attacks(gateway, sub)[attack]
    response = await gateway.post_logout(body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == "invalid_request"

    assert (await gateway.rows(sub)) == 0
    assert (await gateway.me(token)).status_code == 200


async def test_a_replayed_jti_is_400_and_records_nothing_more(gateway: Gateway) -> None:
    sub = fresh("replayed")
    logout = gateway.issuer.sign(gateway.logout_claims(sub))
    assert (await gateway.logout(logout)).status_code == 200
    replay = await gateway.logout(logout)
    assert replay.status_code == 400
    assert replay.json() == {
        "error": "invalid_request",
        "error_description": "invalid logout token: replayed jti",
    }
    assert (await gateway.rows(sub)) == 1


# -- a valid logout -----------------------------------------------------------------------------------------


async def test_logout_revokes_by_sub_and_time_and_closes_both_protocols(gateway: Gateway) -> None:
    sub, bystander = fresh("leaving"), fresh("staying")
    old = gateway.token(sub, before=30)
    assert (await gateway.me(old)).status_code == 200  # verified, so now cached too
    sockets = {protocol: await open_socket(gateway.base, old, protocol) for protocol in PROTOCOLS}
    others = {
        protocol: await open_socket(gateway.base, gateway.token(bystander), protocol)
        for protocol in PROTOCOLS
    }

    started = time.monotonic()
    response = await gateway.logout(gateway.issuer.sign(gateway.logout_claims(sub, before=10)))
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"

    for protocol, ws in sockets.items():
        assert await closed_with(ws) == (4401, "signed out"), protocol
    print(f"sockets closed {1000 * (time.monotonic() - started):.0f} ms after the logout was posted")
    refused = await gateway.me(old)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == REVOKED_CHALLENGE
    assert "token revoked" in refused.text
    # A token issued after the logout (a new sign-in) works, and so do other users' sockets.
    assert (await gateway.me(gateway.token(sub))).status_code == 200
    for protocol, ws in others.items():
        assert await still_open(ws, protocol), protocol
        await ws.close()
    # A socket opened with the old token now is refused at connection_init.
    ws = await connect(gateway.base, "graphql-transport-ws")
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {old}"}}))
    assert await closed_with(ws) == (4403, "invalid token: token revoked")


async def test_a_sid_only_logout_revokes_the_tokens_that_carried_that_sid(gateway: Gateway) -> None:
    sub = fresh("sessions")
    with_sid = gateway.issuer.sign({**claims_of(gateway.token(sub, before=30)), "sid": "sid-1-" + sub})
    without_sid = gateway.token(sub, before=30)
    logout = gateway.logout_claims(None, before=10, sid="sid-1-" + sub)
    assert (await gateway.logout(gateway.issuer.sign(logout))).status_code == 200
    assert (await gateway.me(with_sid)).status_code == 401
    assert (await gateway.me(without_sid)).status_code == 200


async def test_a_restarted_gateway_still_refuses_the_old_token(gateway: Gateway) -> None:
    sub = fresh("restart")
    old = gateway.token(sub, before=30)
    assert (
        await gateway.logout(gateway.issuer.sign(gateway.logout_claims(sub, before=10)))
    ).status_code == 200
    # A new process: its own engine and runtime, nothing in memory from the first one.
    runtime = await build_runtime(
        gateway.settings,
        engine=make_engine(gateway.settings.database_url),
        cluster=SimulatedCluster(step_delay=0.01),
        runner=SimulatedSemaphore(),
    )
    async with serve(create_app(runtime, own_runtime=True)) as base, httpx.AsyncClient(base_url=base) as http:
        refused = await http.post("/graphql", json=ME, headers={"Authorization": f"Bearer {old}"})
        fresh_token = gateway.token(sub)
        accepted = await http.post("/graphql", json=ME, headers={"Authorization": f"Bearer {fresh_token}"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == REVOKED_CHALLENGE
    assert accepted.status_code == 200


# -- an admin's lockout -----------------------------------------------------------------------------------


async def mutate(gateway: Gateway, token: str, sub: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.base) as http:
        response = await http.post(
            "/graphql",
            json={"query": REVOKE, "variables": {"sub": sub}},
            headers={"Authorization": f"Bearer {token}"},
        )
    body: dict[str, Any] = response.json()
    return body


async def test_an_org_admin_locks_out_their_own_orgs_user_only(gateway: Gateway) -> None:
    sub = fresh("deactivated")
    in_b = gateway.token(sub, org="org-b", before=5)
    # The same subject carried by a token of another org (not ZITADEL's shape, but a forged-org probe).
    in_c = gateway.token(sub, org="org-c", before=5)
    ws = await open_socket(gateway.base, in_b, "graphql-transport-ws")
    admin_b = gateway.token(fresh("admin"), org="org-b", role="admin")

    body = await mutate(gateway, admin_b, sub)
    assert body["data"]["revokeSessions"]["orgId"] == "org-b", body
    assert body["data"]["revokeSessions"]["userErrors"] == []
    assert await closed_with(ws) == (4401, "signed out")
    assert (await gateway.me(in_b)).status_code == 401
    assert (await gateway.me(in_c)).status_code == 200  # org-b's admin cannot reach org-c's sessions


async def test_a_cross_org_admin_locks_out_everywhere(gateway: Gateway) -> None:
    sub = fresh("deactivated")
    in_b = gateway.token(sub, org="org-b", before=5)
    platform_admin = gateway.token(fresh("root"), org=ORG, role="admin")
    body = await mutate(gateway, platform_admin, sub)
    assert body["data"]["revokeSessions"]["orgId"] is None, body
    assert (await gateway.me(in_b)).status_code == 401


async def test_lockout_needs_admin_revoke(gateway: Gateway) -> None:
    sub = fresh("target")
    victim = gateway.token(sub, before=5)
    body = await mutate(gateway, gateway.token(fresh("operator"), role="operator"), sub)
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "FORBIDDEN", "permission": "admin:revoke"}
    assert (await gateway.rows(sub)) == 0
    assert (await gateway.me(victim)).status_code == 200


async def test_a_lockout_of_an_impossible_sub_is_a_user_error(gateway: Gateway) -> None:
    body = await mutate(gateway, gateway.token(fresh("root"), role="admin"), "x" * 300)
    assert body["data"]["revokeSessions"]["userErrors"] == [{"code": "INVALID_SUB"}]
    assert body["data"]["revokeSessions"]["revokedAt"] is None


# -- access tokens only -----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["nonce", "at_hash", "c_hash"])
async def test_an_id_token_is_not_an_api_credential(gateway: Gateway, claim: str) -> None:
    claims = {**claims_of(gateway.token(fresh("idtoken"))), claim: "x"}
    response = await gateway.me(gateway.issuer.sign(claims))
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"] == "invalid token: an ID token is not an access token"


def claims_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return claims
