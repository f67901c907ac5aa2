"""`opencsp-gateway dev` as a new user runs it: a fresh folder, one command, GraphiQL answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def dev_token(cwd: Path, role: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import main; main()", "token", "--role", role],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    process = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", "dev", "--port", str(port)],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"dev mode exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
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
