"""deploy/Dockerfile built with buildah on a Debian base made here, and run with podman as its
non-root user on a read-only root file system: `migrate` (SQLite, PostgreSQL), `/healthz`, the image's
own HEALTHCHECK, and a GraphQL query to `opencsp-gateway dev`.

The base is bookworm's Python 3.11 (python3, python3-venv, python-is-python3) from mmdebstrap, since
no image registry is reachable; the Python packages come from PyPI during the build. The machine's
TLS-intercepting proxy signs PyPI's certificate with a CA only the host trusts, so the build's RUN
steps get the host's CA bundle and a pip.conf naming it as build-time volumes (not in any layer).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from migrations.runner import head_revision
from tests.deploy_live.support import CACHE, REPO, Engine, debian_root, locked
from tests.support.databases import postgres_database

BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3")
# A container base: no documentation, manual pages or translations.
BASE_OPTIONS = (
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
IMAGE = "localhost/opencsp-gateway:deploy-test"
USER = "10001:10001"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(CACHE / "containers")


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    """The gateway image, built now from the worktree on the cached Debian base."""
    tarball = debian_root("image-base", BASE_PACKAGES, tar=True, options=BASE_OPTIONS)
    base = f"localhost/opencsp-test-base:{tarball.stem.rsplit('-', 1)[-1]}"
    with locked("containers"):
        if not engine.image_exists(base):
            container = engine.buildah("from", "scratch").stdout.strip()
            engine.buildah("add", container, tarball, "/")
            engine.buildah("commit", "--rm", container, base)
        engine.podman("rmi", "--force", IMAGE, check=False)
        engine.podman("image", "prune", "--force", check=False)
        pip_conf = engine.root / "pip.conf"
        pip_conf.write_text("[global]\ncert = /etc/ssl/certs/build-host-ca.crt\n")
        engine.buildah(
            "bud",
            "--format", "docker",  # keeps HEALTHCHECK, which the OCI format has no field for
            "--isolation", "chroot",
            "--layers=false",
            "--volume", f"{HOST_CA}:/etc/ssl/certs/build-host-ca.crt:ro",
            "--volume", f"{pip_conf}:/etc/pip.conf:ro",
            "--build-arg", f"BASE_IMAGE={base}",
            "--file", REPO / "deploy" / "Dockerfile",
            "--tag", IMAGE,
            REPO,
            timeout=1200,
        )  # fmt: skip
    return IMAGE


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """The only writable place the container gets, owned by its user."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, 10001, 10001)
    return data


def test_the_image_size_is_reported(
    engine: Engine, image: str, record_property: Callable[[str, object], None]
) -> None:
    (info,) = json.loads(engine.podman("image", "inspect", image).stdout)
    size = int(info["Size"])
    assert info["Config"]["User"] == USER
    assert info["Config"]["Entrypoint"] == ["opencsp-gateway"]
    assert info["Healthcheck"]["Test"][0] == "CMD"
    record_property(
        "note", f"image {image} on the mmdebstrap bookworm base: {size / 1e6:.0f} MB ({size} bytes)"
    )


def test_migrate_runs_as_the_non_root_user_on_a_read_only_root(
    engine: Engine, image: str, data_dir: Path
) -> None:
    result = engine.podman(
        "run", "--rm", "--read-only", "--network", "none", "--user", USER,
        "--volume", f"{data_dir}:/data",
        "--env", "OPENCSP_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db",
        image, "migrate",
    )  # fmt: skip
    assert "database is at the newest revision" in result.stdout
    with sqlite3.connect(data_dir / "gateway.db") as db:
        ((revision,),) = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert revision == head_revision()


@pytest.mark.postgres
async def test_migrate_runs_against_postgresql_on_the_host(engine: Engine, image: str) -> None:
    """The production path: asyncpg's wheel inside the image, over TCP to the host's PostgreSQL."""
    async with postgres_database() as url:
        result = engine.podman(
            "run", "--rm", "--read-only", "--network", "host", "--user", USER,
            "--env", f"OPENCSP_DATABASE_URL={url}",
            image, "migrate",
        )  # fmt: skip
        assert "database is at the newest revision" in result.stdout
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            revision = await connection.fetchval("SELECT version_num FROM alembic_version")
        finally:
            await connection.close()
    assert revision == head_revision()


@pytest.fixture
def dev_server(engine: Engine, image: str, data_dir: Path) -> Iterator[tuple[str, int]]:
    """`opencsp-gateway dev` in the image, on the host's network at a free port (its SQLite file and
    token keys in the data volume, the working directory)."""
    port, metrics = free_port(), free_port()
    name = f"opencsp-deploy-test-{port}"
    engine.podman(
        "run", "--detach", "--name", name, "--read-only", "--network", "host", "--user", USER,
        "--volume", f"{data_dir}:/data", "--workdir", "/data",
        "--env", f"OPENCSP_PORT={port}",
        image, "dev", "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                    assert response.status == 200
                    break
            except (urllib.error.URLError, OSError):
                state = engine.podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
                if state != "running" or time.monotonic() > deadline:
                    logs = engine.podman("logs", name, check=False)
                    pytest.fail(f"dev server not answering ({state}):\n{logs.stdout}{logs.stderr}")
                time.sleep(1)
        yield name, port
    finally:
        engine.podman("rm", "--force", name, check=False)


def test_dev_serves_healthz_and_a_graphql_query(engine: Engine, dev_server: tuple[str, int]) -> None:
    name, port = dev_server
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ok"}
    # The image's own HEALTHCHECK command, run by podman inside the container.
    assert engine.podman("healthcheck", "run", name, check=False).returncode == 0
    token = engine.podman("exec", "--workdir", "/data", name, "opencsp-gateway", "token", "--role", "admin")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": "{ me { sub permissions } instances { nodes { id } } }"}).encode(),
        headers={"Authorization": f"Bearer {token.stdout.strip()}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (an http URL built here)
        answer = json.loads(response.read())
    assert "errors" not in answer, answer
    assert answer["data"]["me"]["sub"] == "dev-admin"
    assert answer["data"]["instances"]["nodes"] == []


def test_the_process_is_non_root_and_cannot_write_its_root(
    engine: Engine, dev_server: tuple[str, int]
) -> None:
    name, _ = dev_server
    assert engine.podman("exec", name, "id", "-u").stdout.strip() == "10001"
    denied = engine.podman("exec", name, "touch", "/opt/venv/written", check=False)
    assert denied.returncode != 0
    assert "Read-only file system" in denied.stderr
