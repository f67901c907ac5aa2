"""`opencsp-gateway dev` as a new user runs it: a fresh folder, one command, GraphiQL answers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.bootstrap import dev_issuer
from gateway.settings import DEV_DIR
from tests.support.documents import CREATE
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dev_token(cwd: Path, role: str, org: str | None = None) -> str:
    """What `opencsp-gateway token --role R [--org O]` prints in `cwd` (the command itself: test_cli.py),
    minted in this process with the same key file, so a test needs no interpreter start per token."""
    return dev_issuer(cwd / DEV_DIR).issue(role, sub=f"dev-{role}", org=org)


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def dev_server(tmp_path: Path, metrics_port: int) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    command = ["dev", "--port", str(port), "--metrics-port", str(metrics_port)]
    process = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", *command],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "OPENCSP_DEV_STEP_SECONDS": "0.05"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # generous: a busy CI machine starts Python slowly
        while True:
            if process.poll() is not None:
                raise AssertionError(f"dev mode exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise AssertionError("dev mode did not answer /healthz within 90 s") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
        print(output)
    assert (tmp_path / ".opencsp" / "gateway.db").exists()


def test_dev_serves_graphiql_and_answers_the_catalog(dev_server: str, tmp_path: Path) -> None:
    page = httpx.get(f"{dev_server}/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "graphiql" in page.text.lower()
    refused = httpx.post(f"{dev_server}/graphql", json={"query": "{ catalog { flavors { name } } }"})
    assert refused.status_code == 401
    token = dev_token(tmp_path, "viewer")
    answer = httpx.post(
        f"{dev_server}/graphql",
        json={"query": "{ catalog { flavors { name } } }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "data": {"catalog": {"flavors": [{"name": n} for n in ("small", "medium", "large", "xlarge")]}}
    }
    assert httpx.get(f"{dev_server}/readyz").json()["status"] == "ready"

    # `logout --sub` posts a logout token of the dev issuer, as ZITADEL would: the old token is refused.
    signed_out = cli(tmp_path, "logout", "--sub", "dev-viewer", "--url", dev_server)
    assert signed_out.returncode == 0, signed_out.stderr
    assert signed_out.stdout.startswith("dev-viewer is signed out")
    refused = httpx.post(
        f"{dev_server}/graphql",
        json={"query": "{ catalog { flavors { name } } }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401
    assert "token revoked" in refused.headers["www-authenticate"]
    nobody = cli(tmp_path, "logout", "--sub", "dev-viewer", "--url", "http://127.0.0.1:9")
    assert nobody.returncode == 2
    assert "did not answer" in nobody.stderr


def test_dev_serves_metrics_on_their_own_port(dev_server: str, metrics_port: int) -> None:
    assert httpx.get(f"{dev_server}/metrics").status_code == 404
    scrape = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert "opencsp_http_requests_total" in scrape.text


def graphql(base: str, token: str, query: str, **variables: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    data: dict[str, Any] = body["data"]
    return data


def wait_for(base: str, token: str, instance_id: str, status: str) -> dict[str, Any]:
    query = "query($id: ID!) { instance(id: $id) { status statusReason ipAddress } }"
    deadline = time.monotonic() + 90  # generous: CI machines are shared; the wait ends at the state
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = graphql(base, token, query, id=instance_id)["instance"]
        if seen["status"] == status:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"instance {instance_id} never reached {status}; last seen {seen}")


def test_dev_runs_an_instance_to_active_and_deletes_it(dev_server: str, tmp_path: Path) -> None:
    token = dev_token(tmp_path, "operator")
    created = graphql(dev_server, token, CREATE, name="web-1")["createInstance"]
    assert created["userErrors"] == []
    instance_id = created["instance"]["id"]
    active = wait_for(dev_server, token, instance_id, "ACTIVE")
    assert active["ipAddress"].startswith("10.42.")
    deletion = "mutation($id: ID!) { deleteInstance(id: $id) { instance { status } userErrors { code } } }"
    assert graphql(dev_server, token, deletion, id=instance_id)["deleteInstance"]["userErrors"] == []
    wait_for(dev_server, token, instance_id, "DELETED")


def test_dev_shows_failure_and_retry(dev_server: str, tmp_path: Path) -> None:
    token = dev_token(tmp_path, "operator")
    retry = "mutation($id: ID!) { retryInstance(id: $id) { instance { status } userErrors { code } } }"
    for name, reason in (("fail-prov-1", "TFExecApplyFailed"), ("fail-conf-1", "ConfigurationFailed")):
        instance_id = graphql(dev_server, token, CREATE, name=name)["createInstance"]["instance"]["id"]
        failed = wait_for(dev_server, token, instance_id, "FAILED")
        assert failed["statusReason"] == reason
        assert graphql(dev_server, token, retry, id=instance_id)["retryInstance"]["userErrors"] == []
        wait_for(dev_server, token, instance_id, "ACTIVE")


def test_dev_lets_every_role_discover_the_schema_and_its_admin_cross_orgs(
    dev_server: str, tmp_path: Path
) -> None:
    me = "{ me { orgId permissions } }"
    for role in ("viewer", "user", "operator", "admin"):
        token = dev_token(tmp_path, role)
        assert "schema:introspect" in graphql(dev_server, token, me)["me"]["permissions"], role
        schema = graphql(dev_server, token, "{ __schema { queryType { name } } }")
        assert schema == {"__schema": {"queryType": {"name": "Query"}}}, role
    # Dev mode's own org is its admin org: the printed admin token crosses orgs, another org's does not.
    admin = graphql(dev_server, dev_token(tmp_path, "admin"), me)["me"]
    assert admin["orgId"] == "dev-org"
    assert "admin:all-orgs" in admin["permissions"]
    elsewhere = graphql(dev_server, dev_token(tmp_path, "admin", org="elsewhere"), me)["me"]
    assert elsewhere["orgId"] == "elsewhere"
    assert "admin:all-orgs" not in elsewhere["permissions"]


DEV_WIRING = """
import asyncio, os, sys
import gateway.cli, gateway.dev
from gateway.app import create_app
from gateway.bootstrap import build_runtime
from gateway.settings import DEV_DIR
from gateway.startup import migrate

async def main():
    os.makedirs(DEV_DIR, exist_ok=True)
    settings = gateway.dev.dev_settings()
    await migrate(settings)
    runtime = await build_runtime(settings)
    create_app(runtime)
    await runtime.start(background=False)
    await runtime.aclose()

asyncio.run(main())
print(sorted(name for name in sys.modules if name.startswith(("kubernetes", "services.kubernetes"))))
"""


def test_dev_mode_does_not_load_the_kubernetes_client(tmp_path: Path) -> None:
    """Dev mode wires the simulated cluster: the Kubernetes client is never imported, as `dev` runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    result = subprocess.run(
        [sys.executable, "-c", DEV_WIRING],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = result.stdout.strip().splitlines()[-1]
    assert "services.kubernetes.errors" in loaded  # the wiring did load the cluster side of the domain
    assert "kubernetes_asyncio" not in loaded
    assert "services.kubernetes.cluster" not in loaded
