"""The dashboard in a real browser with no route to the internet (tests/node/dashboard-live.mjs).

One headless Chromium runs three sessions against a real uvicorn gateway: a `user` signs in through the
dev role picker, creates an instance and watches its row go PENDING → … → ACTIVE and the counts change
without a reload; a `viewer` pastes a token and sees the instance but no actions and no addresses; a
short-lived token sees the live feed close with a "token expired" message; a fourth signs in with OIDC
(authorization code + PKCE) against a stand-in for ZITADEL's endpoints and signs out there. The
viewer's websocket is then cut and reconnections refused: the page shows it is offline, retries with
growing waits, and once back re-reads the list, so it shows an instance created (and finished) while it
was away. No request outside the loopback may be attempted and the page's CSP may block nothing.

`DASHBOARD_SCREENSHOTS=docs` writes the README's screenshots (docs/dashboard.png, dashboard-phone.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import build_runtime
from gateway.settings import Settings
from services.auth.dev_issuer import DevIssuer
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import PROJECT, Issuer
from tests.peers.oidc_provider import OidcProvider
from tests.support.servers import serve
from tests.test_graphiql_browser import browser as browser  # the Chromium fixture, shared

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "dashboard-live.mjs"
STEP = 0.3  # slow enough for every status to be drawn, fast enough to keep the test short
EXPIRING_TTL = 25  # seconds: the expiring session signs in first and waits while the others run
LIFECYCLE = ["PENDING", "PROVISIONING", "CONFIGURING", "ACTIVE"]
CLIENT_ID = "dashboard-client"


@dataclass
class Live:
    base: str
    tokens: DevIssuer  # signs as the stand-in issuer, with the key the JWKS server publishes
    provider: OidcProvider


@pytest.fixture
async def live(
    settings: Settings, engine: AsyncEngine, issuer: Issuer, tmp_path: Path
) -> AsyncIterator[Live]:
    """The gateway with the dashboard on, OIDC sign-in against a stand-in for ZITADEL's endpoints, tokens
    checked with no leeway, and the dev role picker backed by the same issuer (dev mode's own issuer would
    write its key into the working directory)."""
    provider = OidcProvider(client_id=CLIENT_ID, redirect_uri="", mint=lambda: "")
    async with serve(provider.app(), access_log=False) as provider_url:
        tokens = DevIssuer(directory=tmp_path / "issuer", issuer=provider_url, project_id=PROJECT)
        # Another org, so its instance stays out of the other sessions' counts.
        provider.mint = lambda: tokens.issue("operator", sub="oidc-user", name="Oidc User", org="org-b")
        changed = Settings(
            **{
                **settings.model_dump(),
                "dashboard": True,
                "oidc_issuer": provider_url,
                "oidc_jwks_url": issuer.server.jwks_url,  # the same key, published there
                "oidc_dashboard_client_id": CLIENT_ID,
                "oidc_leeway_seconds": 0,
                "_env_file": None,
            }
        )
        runtime = await build_runtime(
            changed,
            engine=engine,
            cluster=SimulatedCluster(step_delay=STEP),
            runner=SimulatedSemaphore(step_delay=STEP),
        )
        runtime.dev_issuer = tokens
        async with serve(create_app(runtime, own_runtime=True)) as base:
            provider.redirect_uri = f"{base}/dashboard"
            yield Live(base, tokens, provider)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_dashboard_live_in_a_browser(live: Live, browser: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed; `make test` installs the packages in tests/node"
    plan = {  # all of the issuer's default org, as the role picker's and the OIDC sign-in's tokens
        "viewerToken": live.tokens.issue("viewer", sub="viewer-1"),
        "userToken": live.tokens.issue("user", sub="another-user"),
        "expiringToken": live.tokens.issue("user", sub="short-lived", ttl=EXPIRING_TTL),
        "screenshots": str(Path(os.environ.get("DASHBOARD_SCREENSHOTS", tmp_path)).resolve()),
    }
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        live.base,
        json.dumps(plan),
        cwd=NODE_DIR,
        env={**os.environ, "CHROMIUM": browser},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=150)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode() + stdout.decode()
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["blocked"] == [], "the page reached for the internet"
    assert report["csp"] == [], "the page's CSP blocked something it loads"

    user = report["user"]
    # Every status the row showed, in order, in the same document: no reload, no skipped start or end.
    assert user["sameDocument"] is True
    assert user["seen"][0] == "PENDING", user["seen"]
    assert user["seen"][-1] == "ACTIVE", user["seen"]
    assert user["seen"] == [status for status in LIFECYCLE if status in user["seen"]], user["seen"]
    assert len(user["seen"]) >= 3, user["seen"]
    assert (user["activeBefore"], user["activeAfter"], user["total"]) == ("0", "1", "1")
    assert any("Configuring" in line and "Active" in line for line in user["feed"]), user["feed"]
    assert user["deleteButton"] == 1
    assert [line.split("\n")[1] for line in user["timeline"]] == [
        "Pending",
        "Provisioning",
        "Configuring",
        "Active",
    ]
    # Day-2 from the row: Stop and Reboot while running, Start once stopped, each step drawn live.
    assert user["powerButtons"] == ["Stop", "Reboot", "Delete"]
    assert user["stoppedButtons"] == ["Start", "Delete"]
    power = user["power"]
    assert (power[0], power[-1]) == ("Running", "Running"), power
    assert set(power) <= {"Running", "Stopping…", "Stopped", "Starting…"}, power
    assert "Stopped" in power[1:-1], power
    assert any(line.endswith("Active Stopped") for line in user["powerFeed"]), user["powerFeed"]
    assert user["unlabelled"] == []
    assert "lowercase" in user["nameError"]
    assert user["nameInvalid"] == "true"
    assert Path(plan["screenshots"], "dashboard.png").exists()
    assert Path(plan["screenshots"], "dashboard-phone.png").exists()

    viewer = report["viewer"]
    assert viewer["rows"] == 1
    assert viewer["buttons"] == ["Show"]  # the timeline toggle only: no create, delete or retry
    assert viewer["createForm"] == 0
    assert viewer["addressCells"] == 0
    assert "ADDRESS" not in [header.upper() for header in viewer["headers"]]
    # Offline, retried with backoff, live again, and what changed meanwhile is shown.
    assert viewer["missedWhileOffline"] == 0
    waits = [int(s.split()[-2]) for s in viewer["states"] if s.startswith("Offline — retrying in")]
    assert len(waits) >= 2, viewer["states"]
    assert viewer["states"][-1] == "Live"
    assert viewer["afterReconnect"] == "ACTIVE"
    assert viewer["total"] == "2"

    expiry = report["expiry"]
    assert expiry["live"] is True
    assert expiry["pill"] == "Token expired"
    assert "expired" in expiry["notice"]
    assert "live feed stopped" in expiry["notice"]
    assert expiry["signInShown"] is True
    assert expiry["signOutVisible"] is False
    # Before signing in: the three ways in, nothing else (no stray text, no sign-out button).
    assert expiry["signedOut"]["signOutVisible"] is False
    assert "null" not in expiry["signedOut"]["text"]
    assert "Sign in with your organisation" in expiry["signedOut"]["text"]
    assert "Sign in as this role" in expiry["signedOut"]["text"]
    assert "Paste an access token" in expiry["signedOut"]["text"]

    # OIDC: code + PKCE against the stand-in (which checks the S256 of the verifier), then sign-out there.
    oidc = report["oidc"]
    assert oidc["url"] == f"{live.base}/dashboard", "the code and state must leave the address bar"
    assert oidc["who"].startswith("Oidc User")
    assert sorted(oidc["stored"]) == ["opencsp.idToken", "opencsp.token"]
    assert oidc["local"] == 0, "nothing in localStorage"
    assert "opencsp.token" not in oidc["afterSignOut"]
    assert "Failed" in oidc["failedRow"]
    assert "Provisioning the virtual machine failed." in oidc["failedRow"]  # the reason's sentence
    assert oidc["retryAfterActive"] == 0  # offered for FAILED only
    assert oidc["armed"] == "Confirm delete"  # two steps, no modal
    assert oidc["totalAfterDelete"] == "0"
    scope = "openid profile email urn:zitadel:iam:org:projects:roles urn:zitadel:iam:user:resourceowner"
    assert live.provider.seen == [
        f"authorize scope={scope} urn:zitadel:iam:org:project:id:{PROJECT}:aud",
        "token issued",
        "end_session hint=stand-in-id-token",
    ]
