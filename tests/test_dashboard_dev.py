"""`make dev` opens on the dashboard: its URL is the first thing printed, the page is on, and the role
picker's dev-only endpoint mints tokens the gateway accepts (dev mode's own issuer, end to end)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_dev_mode_prints_the_dashboard_first_and_serves_it(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    command = ["dev", "--port", str(port), "--metrics-port", str(metrics_port)]
    process = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import main; main()", *command],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = ""
        while not first.strip():
            first = process.stdout.readline()
            assert first or process.poll() is None, "dev mode exited before printing"
        assert first.strip() == f"OpenCSP Gateway (dev mode) — dashboard: http://localhost:{port}/"
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                page = httpx.get(f"{base}/", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "dev mode did not answer"
                time.sleep(0.1)
        assert page.status_code == 200
        assert 'id="dashboard-config"' in page.text
        minted = httpx.post(f"{base}/dev/token", json={"role": "operator"})
        assert minted.status_code == 200
        me = httpx.post(
            f"{base}/graphql",
            json={"query": "{ me { sub permissions } }"},
            headers={"Authorization": f"Bearer {minted.json()['token']}"},
        ).json()["data"]["me"]
        assert me["sub"] == "dev-operator"
        assert "instance:retry" in me["permissions"]
    finally:
        process.terminate()
        process.communicate(timeout=15)
