"""`opencsp-gateway serve --workers 2` as an operator runs it: one real process tree on one port, on
PostgreSQL, with the Kubernetes API and JWKS stand-ins over real HTTP. Subscribers land on both workers;
every change, whichever worker commits it, reaches every subscriber exactly once. SQLite is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from migrations.runner import upgrade
from services.db.engine import make_engine
from tests.conftest import PROJECT, Issuer
from tests.peers.kube_api import KubeApiEmulator
from tests.support.databases import postgres_database
from tests.support.documents import CHANGES, CREATE
from tests.test_cli import ROOT, SERVE_ENV, run

PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
SUBSCRIBERS = 16  # opened at once: the chance that all land on one of two workers is negligible


def test_sqlite_with_more_than_one_worker_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "OPENCSP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/gw.db"}
    result = run("serve", "--workers", "2", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("opencsp-gateway: --workers 2 needs PostgreSQL")
    assert len(result.stderr.strip().splitlines()) == 1


def free_ports(count: int) -> int:
    """The first of `count` consecutive free ports (worker i serves /metrics on the first + i)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    held.enter_context(socket.socket()).bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError("no run of free ports")


@contextlib.asynccontextmanager
async def gateway_workers(tmp_path: Path, issuer: Issuer, workers: int) -> AsyncIterator[tuple[str, int]]:
    """`serve --workers N` on a fresh migrated PostgreSQL database: (base URL, first metrics port)."""
    async with postgres_database() as url, KubeApiEmulator() as kube:
        engine = make_engine(url)
        await upgrade(engine)
        await engine.dispose()
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            f"""
apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: gw, user: {{token: test-token}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: gw}}}}]
current-context: emu
"""
        )
        port, metrics = free_ports(1), free_ports(workers)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
        env = {
            **clean,
            **SERVE_ENV,
            "PYTHONPATH": str(ROOT),
            "OPENCSP_DATABASE_URL": url,
            "OPENCSP_OIDC_ISSUER": issuer.server.issuer,
            "OPENCSP_OIDC_JWKS_URL": issuer.server.jwks_url,
            "OPENCSP_OIDC_PROJECT_ID": PROJECT,
            "OPENCSP_KUBECONFIG": str(kubeconfig),
            "OPENCSP_HOST": "127.0.0.1",
            "OPENCSP_PORT": str(port),
            "OPENCSP_METRICS_PORT": str(metrics),
            "OPENCSP_SHARE_SUBSCRIPTIONS": "false",  # each subscription counted on the worker holding it
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "serve", "--workers", str(workers),
            env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient() as http:
                for _ in range(600):
                    ready = await ready_workers(http, metrics, workers)
                    if ready == workers:
                        break
                    if process.returncode is not None:
                        assert process.stderr is not None
                        raise AssertionError((await process.stderr.read()).decode()[-3000:])
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError("the workers did not all come up in 60 s")
            yield base, metrics
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def ready_workers(http: httpx.AsyncClient, metrics: int, workers: int) -> int:
    ready = 0
    for index in range(workers):
        with contextlib.suppress(httpx.TransportError):
            ready += (await http.get(f"http://127.0.0.1:{metrics + index}/metrics")).status_code == 200
    return ready


async def connections(http: httpx.AsyncClient, metrics_port: int) -> float:
    text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    found = re.search(r"^opencsp_websocket_connections (\S+)$", text, re.MULTILINE)
    assert found, text[:2000]
    return float(found.group(1))


async def subscriber(base: str, token: str, protocol: str) -> Any:
    ws = await websockets.connect(
        base.replace("http://", "ws://") + "/graphql",
        subprotocols=[protocol],  # type: ignore[list-item]
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 20)) == {"type": "connection_ack"}
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    await ws.send(json.dumps({"id": "changes", "type": start, "payload": {"query": CHANGES}}))
    return ws


async def changes_until(ws: Any, last: str) -> list[tuple[str, str | None, str]]:
    """(instance id, from, to) of each change, up to and including the creation of instance `last`."""
    seen: list[tuple[str, str | None, str]] = []
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if message["type"] not in ("next", "data"):
            continue
        change = message["payload"]["data"]["instanceStatusChanges"]
        seen.append((change["instance"]["id"], change["from"], change["to"]))
        if change["instance"]["name"] == last:
            return seen


@pytest.mark.postgres
async def test_two_workers_share_the_port_and_every_change_reaches_every_subscriber_once(
    tmp_path: Path, issuer: Issuer
) -> None:
    async with gateway_workers(tmp_path, issuer, workers=2) as (base, metrics):
        viewer = issuer.token("viewer")
        sockets = await asyncio.gather(
            *(subscriber(base, viewer, PROTOCOLS[n % 2]) for n in range(SUBSCRIBERS))
        )
        try:
            async with httpx.AsyncClient(base_url=base, headers=issuer.headers("admin"), timeout=30) as http:
                held = [await connections(http, metrics + index) for index in range(2)]
                assert sum(held) == SUBSCRIBERS
                assert min(held) >= 1, f"every subscriber landed on one worker: {held}"
                created: list[str] = []
                for n in range(3):  # each order is served by whichever worker accepts it
                    body = (
                        await http.post("/graphql", json={"query": CREATE, "variables": {"name": f"vm-{n}"}})
                    ).json()
                    assert body["data"]["createInstance"]["userErrors"] == [], body
                    created.append(body["data"]["createInstance"]["instance"]["id"])
            seen = await asyncio.gather(*(changes_until(ws, "vm-2") for ws in sockets))
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
    for changes in seen:
        assert max(Counter(changes).values()) == 1, f"a change arrived twice: {changes}"
        assert {(id, None, "PENDING") for id in created} <= set(changes), changes
