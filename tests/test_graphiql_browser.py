"""`make dev`'s promise, in a real browser: GraphiQL with a pasted token shows a live subscription update.

Headless Chromium (Debian's `chromium`, driven by playwright-core from tests/node) loads the GraphiQL page
the gateway serves, with the token in its Headers tab, runs `instanceStatusChanges`, and must show the
instance an HTTP mutation then orders reaching ACTIVE, by itself. The browser has no route to the
internet: every script and style must come from the gateway (no request elsewhere is even attempted),
and the page's Content-Security-Policy must block nothing it needs. CI installs Chromium (.ci/run); on a
developer's machine without it the test says how to get it and skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.bootstrap import Runtime
from tests.conftest import Issuer
from tests.support.servers import serve

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "graphiql-live.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CREATE = """
mutation {
  createInstance(input: {name: "dash-1", flavor: "small", image: "debian-12"}) { userErrors { code } }
}
"""


@pytest.fixture
def browser() -> str:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is needed at {CHROMIUM}: .ci/run installs Debian's chromium package")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); CI runs this test")
    return CHROMIUM


@pytest.fixture
async def live(runtime: Runtime) -> AsyncIterator[str]:
    async with serve(create_app(runtime, own_runtime=True)) as base:
        yield base


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_graphiql_shows_a_live_subscription(
    live: str, issuer: Issuer, browser: str, tmp_path: Path
) -> None:
    node = shutil.which("node")
    assert node, "Node.js is needed; `make test` installs the packages in tests/node"
    # GraphiQL loads the schema by introspection, which needs schema:introspect (operator, admin).
    token = issuer.token("operator")
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        live,
        token,
        str(tmp_path / "graphiql.png"),
        cwd=NODE_DIR,
        env={**os.environ, "CHROMIUM": browser},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert line.decode().strip() == "subscribed", line
        await asyncio.sleep(1)  # the page's websocket subscribes after the click
        async with httpx.AsyncClient(base_url=live, headers=issuer.headers("user")) as http:
            created = (await http.post("/graphql", json={"query": CREATE})).json()
        assert created == {"data": {"createInstance": {"userErrors": []}}}
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    # The pane is GraphiQL's editor: its text is the pretty-printed JSON (with folding gutters).
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["blocked"] == [], "the page reached for the internet"
    assert report["csp"] == [], "the page's CSP blocked something it loads"
    shown = " ".join(report["result"].split())
    assert '"to": "ACTIVE"' in shown, shown
    assert '"name": "dash-1"' in shown, shown
    assert (tmp_path / "graphiql.png").exists()
