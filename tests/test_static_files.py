"""The pages' files ship in the package and are served from it: pinned bytes, SRI, CSP, cache headers.

Over HTTP against the real app (no browser: tests/test_dashboard_browser.py and
tests/test_graphiql_browser.py load the pages in Chromium). Also: the dashboard's switch and the dev-only
token endpoint of its role picker.
"""

from __future__ import annotations

import glob
import json
import os
import re
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from gateway.static_files import STATIC_DIR, sri
from services.auth.dev_issuer import DevIssuer
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore
from tests.conftest import Issuer
from tests.support.databases import database

ROOT = Path(__file__).resolve().parents[1]
NODE_MODULES = ROOT / "tests" / "node" / "node_modules"
VENDOR = STATIC_DIR / "vendor"

Client = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    """SQLite only: nothing here depends on the database, which the app merely needs to start."""
    async with database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
async def client_for(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Client]:
    """A client of the real app built with some settings changed, optionally with a dev issuer."""
    runtimes: list[Runtime] = []
    clients: list[httpx.AsyncClient] = []

    async def factory(*, dev_issuer: DevIssuer | None = None, **overrides: Any) -> httpx.AsyncClient:
        changed = Settings(**{**settings.model_dump(), **overrides, "_env_file": None})
        runtime = await build_runtime(
            changed, engine=engine, cluster=SimulatedCluster(), runner=SimulatedSemaphore()
        )
        runtime.dev_issuer = dev_issuer
        runtimes.append(runtime)
        transport = httpx.ASGITransport(app=create_app(runtime, own_runtime=False))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()
    for runtime in runtimes:
        await runtime.aclose()


def vendored() -> list[Path]:
    return sorted(path for path in VENDOR.rglob("*") if path.is_file() and path.suffix in (".js", ".css"))


def test_vendored_files_are_the_pinned_npm_files_byte_for_byte() -> None:
    """vendor/<package>@<version>/<path> must be exactly <path> of that package version from npm (the
    lockfile of tests/node pins it; `npm ci` installs it with its registry integrity checked)."""
    if not NODE_MODULES.is_dir():
        # `make test` runs `npm ci` first; only a bare `pytest` on a developer's machine gets here. CI fails.
        if os.environ.get("CI"):
            pytest.fail("tests/node/node_modules is missing: `make test` runs `npm ci` there")
        pytest.skip("tests/node/node_modules is missing: `make test` runs `npm ci` there")
    lock = json.loads((ROOT / "tests" / "node" / "package-lock.json").read_text())["packages"]
    assert vendored(), "no vendored files"
    for path in vendored():
        parts = path.relative_to(VENDOR).parts
        scoped = parts[0].startswith("@")
        spec, inner = ("/".join(parts[:2]), parts[2:]) if scoped else (parts[0], parts[1:])
        name, _, version = spec.rpartition("@")
        assert lock[f"node_modules/{name}"]["version"] == version, f"{path}: lockfile pins another version"
        assert path.read_bytes() == NODE_MODULES.joinpath(name, *inner).read_bytes(), (
            f"{path} differs from npm's"
        )


def test_package_data_carries_every_static_file() -> None:
    """The wheel must carry the pages' files: pyproject's package-data globs match every one."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    carried = {
        Path(match).as_posix()
        for pattern in patterns["gateway"]
        for match in glob.glob(pattern, root_dir=ROOT / "gateway", recursive=True)
    }
    files = {p.relative_to(ROOT / "gateway").as_posix() for p in STATIC_DIR.rglob("*") if p.is_file()}
    assert files, "no static files"
    assert files <= carried, sorted(files - carried)


def _assets(page: str) -> list[tuple[str, str]]:
    """(url, integrity) of every script and stylesheet a page loads."""
    tags = re.findall(r"<(?:script|link)\b[^>]*>", page)
    found = []
    for tag in tags:
        url = re.search(r'(?:src|href)="([^"]+)"', tag)
        if url is None:
            continue
        integrity = re.search(r'integrity="([^"]+)"', tag)
        found.append((url.group(1), integrity.group(1) if integrity else ""))
    return found


@pytest.mark.parametrize("path", ["/graphql", "/dashboard"])
async def test_pages_load_only_the_gateway_s_own_files_each_with_its_integrity(
    client_for: Client, path: str
) -> None:
    client = await client_for(dashboard=True)
    page = await client.get(path, headers={"accept": "text/html"})
    assert page.status_code == 200
    assets = _assets(page.text)
    assert len(assets) >= 3
    for url, integrity in assets:
        assert url.startswith("/static/"), f"{url} is not served by the gateway"
        served = await client.get(url)
        assert served.status_code == 200, url
        assert integrity == sri(served.content), f"{url}: the page's integrity does not match its bytes"
    assert "unpkg" not in page.text
    assert "https://" not in page.text


@pytest.mark.parametrize("path", ["/graphql", "/dashboard"])
async def test_pages_carry_a_strict_content_security_policy(client_for: Client, path: str) -> None:
    client = await client_for(dashboard=True)
    page = await client.get(path, headers={"accept": "text/html"})
    policy = dict(
        ([*part.split(" ", 1), ""])[:2] for part in page.headers["content-security-policy"].split("; ")
    )
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'"
    # Only GraphiQL's page lets scripts insert <style> elements (its dialogs need it): docs/SECURITY.md.
    assert policy.get("style-src-elem") == ("'self' 'unsafe-inline'" if path == "/graphql" else None)
    assert "<script>" not in page.text  # no inline script at all
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_static_files_have_their_type_and_cache_lifetime(client_for: Client) -> None:
    client = await client_for()
    vendor = await client.get("/static/vendor/graphql-ws@6.4.2/umd/graphql-ws.min.js")
    assert vendor.headers["content-type"] == "text/javascript; charset=utf-8"
    assert vendor.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert vendor.headers["x-content-type-options"] == "nosniff"
    own = await client.get("/static/dashboard/dashboard.css")
    assert own.headers["content-type"] == "text/css; charset=utf-8"
    assert own.headers["cache-control"] == "no-cache"
    again = await client.get(
        "/static/dashboard/dashboard.css", headers={"if-none-match": own.headers["etag"]}
    )
    assert again.status_code == 304
    assert again.content == b""


@pytest.mark.parametrize(
    "path",
    [
        "/static/../settings.py",
        "/static/%2e%2e/app.py",
        "/static/dashboard/../../app.py",
        "/static/dashboard/",
        "/static/vendor/graphiql@3.8.3/graphiql.min.js.map",
        "/static/../../pyproject.toml",
    ],
)
async def test_static_serves_nothing_outside_its_files(client_for: Client, path: str) -> None:
    client = await client_for()
    response = await client.get(path)
    assert response.status_code == 404
    assert b"import" not in response.content


def test_dashboard_is_on_in_dev_mode_and_off_otherwise_unless_set() -> None:
    assert Settings(_env_file=None).dashboard_on is False  # type: ignore[call-arg]
    assert Settings(dev_mode=True, _env_file=None).dashboard_on is True  # type: ignore[call-arg]
    assert Settings(dev_mode=True, dashboard=False, _env_file=None).dashboard_on is False  # type: ignore[call-arg]
    assert Settings(dashboard=True, _env_file=None).dashboard_on is True  # type: ignore[call-arg]


def test_the_production_overlay_turns_the_dashboard_off() -> None:
    import yaml

    for overlay in ("base", "overlays/prod"):
        data = yaml.safe_load((ROOT / "deploy/kubernetes" / overlay / "configmap.yaml").read_text())["data"]
        assert data["OPENCSP_DASHBOARD"] == "false", overlay


@pytest.mark.parametrize("path", ["/", "/dashboard"])
async def test_dashboard_is_not_served_when_off(client_for: Client, path: str) -> None:
    client = await client_for()
    assert (await client.get(path)).status_code == 404


def _config(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="dashboard-config">(.*?)</script>', page)
    assert match, "the page carries no configuration"
    loaded: dict[str, Any] = json.loads(match.group(1))
    return loaded


async def test_dashboard_offers_oidc_sign_in_when_a_client_id_is_set(client_for: Client) -> None:
    client = await client_for(dashboard=True, oidc_dashboard_client_id="dash-client-1")
    page = await client.get("/")
    oidc = _config(page.text)["oidc"]
    assert oidc["clientId"] == "dash-client-1"
    assert oidc["authorize"].endswith("/oauth/v2/authorize")
    assert oidc["token"].endswith("/oauth/v2/token")
    assert oidc["endSession"].endswith("/oidc/v1/end_session")
    scopes = oidc["scope"].split()
    assert "urn:zitadel:iam:org:project:id:project-1:aud" in scopes  # the gateway's audience
    assert "urn:zitadel:iam:user:resourceowner" in scopes  # the org claim every token needs
    assert "urn:zitadel:iam:org:projects:roles" in scopes
    # The token endpoint is a CORS fetch to the issuer: its origin, and only it, joins connect-src.
    origin = oidc["token"].split("/oauth/")[0]
    assert f"connect-src 'self' {origin};" in page.headers["content-security-policy"]
    assert _config((await (await client_for(dashboard=True)).get("/")).text)["oidc"] is None


async def test_dev_token_endpoint_exists_only_with_the_dev_issuer(client_for: Client, issuer: Issuer) -> None:
    production = await client_for(dashboard=True)
    refused = await production.post("/dev/token", json={"role": "admin"})
    assert refused.status_code in (404, 405)
    assert _config((await production.get("/")).text)["devRoles"] is None

    dev = await client_for(dashboard=True, dev_issuer=issuer.dev)
    assert _config((await dev.get("/")).text)["devRoles"] == ["viewer", "user", "operator", "admin"]
    minted = await dev.post("/dev/token", json={"role": "viewer"})
    assert minted.status_code == 200
    assert minted.headers["cache-control"] == "no-store"
    token = minted.json()["token"]
    me = await dev.post(
        "/graphql", json={"query": "{ me { sub permissions } }"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert me.json()["data"]["me"]["sub"] == "dev-viewer"
    assert "instance:create" not in me.json()["data"]["me"]["permissions"]


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"role": "root"}', "application/json", 400),
        (b'["admin"]', "application/json", 400),
        (b"role=admin", "application/x-www-form-urlencoded", 415),  # a cross-site form cannot mint
        (b'{"role": "admin"}', "text/plain", 415),  # nor a no-preflight fetch
        (b"{", "application/json", 400),
        (b'{"role": "' + b"a" * 2000 + b'"}', "application/json", 413),
        (b"\xff\xfe", "application/json", 400),
    ],
)
async def test_dev_token_endpoint_refuses_bad_requests(
    client_for: Client, issuer: Issuer, body: bytes, content_type: str, status: int
) -> None:
    dev = await client_for(dashboard=True, dev_issuer=issuer.dev)
    response = await dev.post("/dev/token", content=body, headers={"content-type": content_type})
    assert response.status_code == status
    assert "token" not in response.json()
