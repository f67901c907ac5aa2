"""The GraphQL-over-HTTP conformance audits of graphql-http 1.23.1, run by Node against a real server.

`make test` installs the pinned package into tests/node first (npm ci from the lockfile).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from tests.conftest import Issuer
from tests.support.servers import serve

NODE_DIR = Path(__file__).parent / "node"
SCRIPT = NODE_DIR / "run-audits.mjs"
INSTALLED = NODE_DIR / "node_modules" / ".package-lock.json"
# serverAudits() of graphql-http 1.23.1 (pinned in tests/node/package-lock.json) has exactly this many.
FULL_SUITE = 61


async def run_audits(url: str, authorization: str) -> tuple[int, list[dict[str, Any]], str]:
    node = shutil.which("node")
    assert node, "Node.js is needed for the GraphQL-over-HTTP audits; install it and run `make test`."
    assert INSTALLED.exists(), (
        "graphql-http is not installed; run `make tests/node/node_modules/.package-lock.json`."
    )
    # A subprocess, not subprocess.run: the event loop must keep serving the audits' requests.
    process = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        url,
        cwd=NODE_DIR,
        env={**os.environ, "AUDIT_AUTHORIZATION": authorization},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    results = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    assert process.returncode is not None
    return process.returncode, results, stderr.decode()


async def test_every_graphql_over_http_audit_is_ok(app: Starlette, issuer: Issuer) -> None:
    async with serve(app) as base_url:
        # Some audits ask for `__type`: an operator holds schema:introspect (see test_discovery.py).
        authorization = issuer.headers("operator")["Authorization"]
        returncode, results, stderr = await run_audits(f"{base_url}/graphql", authorization)

    failed = [r for r in results if r["status"] != "ok"]
    report = "\n".join(
        f"{r['id']} [{r['status']}] {r['name']}: {r.get('reason')} "
        f"(HTTP {r.get('responseStatus')}: {r.get('responseBody')})"
        for r in failed
    )
    assert not failed, f"{len(failed)} GraphQL-over-HTTP audits are not ok:\n{report}"
    assert len(results) == FULL_SUITE, f"expected {FULL_SUITE} audits, got {len(results)}; stderr: {stderr}"
    assert len({r["id"] for r in results}) == FULL_SUITE
    assert returncode == 0, stderr
