"""The CLI as an operator meets it: real processes, one clear line for every bad setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from gateway.settings import Settings
from gateway.startup import cross_org_warning
from schema.build import schema_sdl

ROOT = Path(__file__).resolve().parents[1]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd or ROOT,
        timeout=60,
        check=False,
    )


def test_schema_snapshot_is_current() -> None:
    committed = (ROOT / "schema" / "schema.graphql").read_text()
    assert schema_sdl() == committed, "schema/schema.graphql drifted: run `make schema` and commit it"
    printed = run("schema")
    assert printed.returncode == 0
    assert printed.stdout == committed


@pytest.mark.parametrize("command", ["serve", "migrate", "dev", "schema", "token", "logout"])
def test_every_command_has_help(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: opencsp-gateway {command}")


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OPENCSP_PORT", "eighty", "OPENCSP_PORT: Input should be a valid integer"),
        ("OPENCSP_PORT", "70000", "OPENCSP_PORT: Input should be less than or equal to 65535"),
        ("OPENCSP_DATABASE_URL", "mysql://x", "OPENCSP_DATABASE_URL: must start with sqlite+aiosqlite://"),
        ("OPENCSP_FLAVORS", "[{", "OPENCSP_FLAVORS: not valid JSON"),
        (
            "OPENCSP_FLAVORS",
            '[{"name": "tiny", "cpu": 0}]',
            "OPENCSP_FLAVORS[0.cpu]: Input should be greater than 0",
        ),
        (
            "OPENCSP_MAX_QUERY_DEPTH",
            "1",
            "OPENCSP_MAX_QUERY_DEPTH: Input should be greater than or equal to 2",
        ),
        (
            "OPENCSP_INSTANCE_NETWORKS",
            "10.20.0.0/16, 10.30.0.1/16",
            "OPENCSP_INSTANCE_NETWORKS: '10.30.0.1/16' is not a network in CIDR notation",
        ),
    ],
)
def test_a_bad_setting_stops_start_up_with_one_line(
    variable: str, value: str, message: str, tmp_path: Path
) -> None:
    result = run("serve", env={variable: value}, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"opencsp-gateway: {message}")
    assert "Traceback" not in result.stderr


SERVE_ENV = {
    "OPENCSP_OIDC_ISSUER": "https://issuer.example",
    "OPENCSP_OIDC_PROJECT_ID": "project-1",
    "OPENCSP_SEMAPHORE_URL": "http://127.0.0.1:1",
    "OPENCSP_SEMAPHORE_TOKEN": "t",
    "OPENCSP_SEMAPHORE_PROJECT_ID": "1",
    "OPENCSP_SEMAPHORE_TEMPLATE_ID": "1",
    "OPENCSP_WEBHOOK_SECRET": "s",
}


def test_serve_names_every_missing_required_setting(tmp_path: Path) -> None:
    result = run("serve", env={"OPENCSP_OIDC_ISSUER": "https://issuer.example"}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "opencsp-gateway: OPENCSP_OIDC_PROJECT_ID, OPENCSP_SEMAPHORE_URL, OPENCSP_SEMAPHORE_TOKEN, "
        "OPENCSP_SEMAPHORE_PROJECT_ID, OPENCSP_SEMAPHORE_TEMPLATE_ID, OPENCSP_WEBHOOK_SECRET: "
        "required to serve (or run `opencsp-gateway dev`)"
    )


def test_serve_refuses_an_unmigrated_database_and_migrate_fixes_it(tmp_path: Path) -> None:
    env = {**SERVE_ENV, "OPENCSP_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/gw.db", "OPENCSP_PORT": "1"}
    refused = run("serve", env=env, cwd=tmp_path)
    assert refused.returncode == 2
    assert "run `opencsp-gateway migrate` first" in refused.stderr
    migrated = run("migrate", env=env, cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert "newest revision" in migrated.stdout


@pytest.mark.parametrize(("extra", "warns"), [({}, True), ({"OPENCSP_OIDC_ADMIN_ORG_ID": "platform"}, False)])
def test_serve_warns_once_when_admin_all_orgs_has_no_admin_org(
    tmp_path: Path, extra: dict[str, str], warns: bool
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path}/gw.db"
    # A kubeconfig that does not exist: serve stops where it reaches for the cluster, after start-up.
    kubeconfig = str(tmp_path / "none")
    env = {**SERVE_ENV, "OPENCSP_DATABASE_URL": database, "OPENCSP_KUBECONFIG": kubeconfig, **extra}
    assert run("migrate", env=env, cwd=tmp_path).returncode == 0
    result = run("serve", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot load Kubernetes configuration" in result.stderr
    lines = [line for line in result.stderr.splitlines() if "OPENCSP_OIDC_ADMIN_ORG_ID" in line]
    if not warns:
        assert lines == []
        return
    assert len(lines) == 1
    record = orjson.loads(lines[0])
    assert (record["level"], record["logger"]) == ("WARNING", "gateway.startup")
    assert "grants admin:all-orgs but OPENCSP_OIDC_ADMIN_ORG_ID is unset" in record["message"]


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    result = run(
        "migrate", env={"OPENCSP_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/x"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("opencsp-gateway: cannot reach the database")
    assert len(result.stderr.strip().splitlines()) == 1


def test_dev_mode_refuses_an_external_issuer(tmp_path: Path) -> None:
    result = run("dev", env={"OPENCSP_OIDC_ISSUER": "https://zitadel.example"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "dev mode trusts only its local token issuer" in result.stderr


def test_token_prints_a_dev_token_for_the_role(tmp_path: Path) -> None:
    result = run(
        "token", "--role", "operator", "--sub", "alice", "--org", "acme", "--ttl", "60", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2
    assert (tmp_path / ".opencsp" / "dev-issuer-key.json").exists()
    refused = run("token", "--ttl", "0", cwd=tmp_path)
    assert refused.returncode == 2
    assert "--ttl must be a positive number of seconds" in refused.stderr


def test_dev_mode_refuses_postgresql(tmp_path: Path) -> None:
    result = run(
        "dev", env={"OPENCSP_DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1/postgres"}, cwd=tmp_path
    )
    assert result.returncode == 2
    assert "dev mode runs on its own SQLite file" in result.stderr


def test_the_cross_org_warning_names_every_role_that_grants_it() -> None:
    base = {"oidc_issuer": "https://issuer.example", "_env_file": None}
    assert cross_org_warning(Settings(**base)) is not None  # type: ignore[arg-type]
    assert cross_org_warning(Settings(**base, oidc_admin_org_id="platform")) is None  # type: ignore[arg-type]
    quiet = Settings(**base, rbac_policy='{"admin": ["instance:read", "admin:sync"]}')  # type: ignore[arg-type]
    assert cross_org_warning(quiet) is None
    loud = Settings(**base, rbac_policy='{"root": ["admin:all-orgs"], "ops": ["admin:all-orgs"], "v": []}')  # type: ignore[arg-type]
    assert (cross_org_warning(loud) or "").startswith("role ops, root grants admin:all-orgs")
    # Dev mode makes its issuer's org the admin org, so its admin token still crosses orgs.
    assert cross_org_warning(Settings(dev_mode=True, _env_file=None)) is None  # type: ignore[call-arg]
