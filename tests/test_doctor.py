"""`opencsp-gateway doctor` against the stand-in peers over real sockets: all healthy (exit 0), then each
peer broken in turn, and exactly that failure named (exit 1)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.cli import main
from gateway.doctor import diagnose
from gateway.settings import Settings
from migrations.runner import upgrade
from services.db.engine import make_engine
from tests.conftest import Issuer
from tests.peers.kube_api import GIT_REPOSITORIES, OCI_REPOSITORIES, KubeApiEmulator
from tests.peers.semaphore_api import SemaphoreEmulator, running_semaphore

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "opencsp-instances"
SECRET = "x" * 32
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens there


@dataclass
class Peers:
    kube: KubeApiEmulator
    semaphore: SemaphoreEmulator
    issuer: Issuer
    kubeconfig: Path

    def environment(self, database_url: str) -> dict[str, str]:
        """The settings of a gateway that uses these peers, as the OPENCSP_* variables an operator sets."""
        return {
            "OPENCSP_DATABASE_URL": database_url,
            "OPENCSP_OIDC_ISSUER": self.issuer.server.issuer,
            "OPENCSP_OIDC_PROJECT_ID": "opencsp",
            "OPENCSP_KUBECONFIG": str(self.kubeconfig),
            "OPENCSP_TERRAFORM_NAMESPACE": NAMESPACE,
            "OPENCSP_SEMAPHORE_URL": self.semaphore.url,
            "OPENCSP_SEMAPHORE_TOKEN": self.semaphore.token,
            "OPENCSP_SEMAPHORE_PROJECT_ID": "1",
            "OPENCSP_SEMAPHORE_TEMPLATE_ID": "7",
            "OPENCSP_SEMAPHORE_ACTIONS_TEMPLATE_ID": "9",
            "OPENCSP_WEBHOOK_SECRET": SECRET,
        }

    def settings(self, url: str, **overrides: Any) -> Settings:
        values = {key.removeprefix("OPENCSP_").lower(): v for key, v in self.environment(url).items()}
        return Settings(**{**values, **overrides, "_env_file": None})


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{server}"}}}}]
users: [{{name: gw, user: {{token: gateway-token}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: gw}}}}]
current-context: emu
"""
    )
    return path


@pytest.fixture
async def peers(issuer: Issuer, tmp_path: Path) -> AsyncIterator[Peers]:
    async with KubeApiEmulator() as kube, running_semaphore(projects={1: {7, 9}}) as semaphore:
        source = {"apiVersion": GIT_REPOSITORIES.api_version, "kind": "GitRepository"}
        source["metadata"] = {"name": "opencsp-modules"}  # type: ignore[assignment]
        kube.create(GIT_REPOSITORIES, "flux-system", source)
        yield Peers(kube, semaphore, issuer, kubeconfig(tmp_path / "kubeconfig", kube.url))


@pytest.fixture
async def migrated(tmp_path: Path) -> str:
    """A SQLite database at the newest revision (the breakage cases do not need both databases)."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'doctor.db'}"
    engine = make_engine(url)
    await upgrade(engine)
    await engine.dispose()
    return url


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str]:
    """The real command in a process of its own (the peers keep serving in this test's loop)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        *args,
        env={**clean, **env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_all_peers_healthy_pass_and_exit_0(peers: Peers, migrated: str) -> None:
    code, output = await run_cli("doctor", env=peers.environment(migrated))

    assert code == 0, output
    lines = output.strip().splitlines()
    assert lines[-1] == "all checks passed"
    assert [line.split(" ", 1)[0] for line in lines[:-1]] == ["ok"] * (len(lines) - 1)
    for expected in (
        "database: migrated",
        "oidc: issuer matches",
        "oidc: algorithms allowed: RS256",
        "kubernetes: terraform CRD",
        "kubernetes: may create, get, list, watch, patch, delete terraforms in opencsp-instances",
        "kubernetes: may get secrets in opencsp-instances",
        "kubernetes: source exists: GitRepository flux-system/opencsp-modules",
        "semaphore: token accepted, project exists",
        "semaphore: template exists",
        "semaphore: actions template exists",
        "webhook: secret",
    ):
        assert any(expected in line for line in lines), (expected, output)
    reviews = [path for method, path in peers.kube.requests if "selfsubjectaccessreviews" in path]
    assert len(reviews) == 7  # one per verb the gateway uses


async def test_both_databases_pass(peers: Peers, database_url: str, engine: AsyncEngine) -> None:
    report = await diagnose(peers.settings(database_url))

    assert report.ok, report.text()
    assert [c.check for c in report.checks if c.peer == "database"] == ["reachable", "migrated"]


def _set(name: str, value: Any) -> Callable[[Peers], dict[str, Any]]:
    return lambda _: {name: value}


def _do(action: Callable[[Peers], None]) -> Callable[[Peers], dict[str, Any]]:
    def apply(peers: Peers) -> dict[str, Any]:
        action(peers)
        return {}

    return apply


def _issuer_lies(peers: Peers) -> None:
    peers.issuer.server.discovery_issuer = "https://zitadel.example.com"


def _kube_down(peers: Peers) -> dict[str, Any]:
    return {"kubeconfig": str(kubeconfig(peers.kubeconfig.with_name("down"), CLOSED))}


BREAKAGES: dict[str, tuple[Callable[[Peers], dict[str, Any]], str, str]] = {
    "database unreachable": (
        _set("database_url", "postgresql+asyncpg://postgres@127.0.0.1:9/none"),
        "database",
        "reachable",
    ),
    "no sqlite file": (
        _set("database_url", "sqlite+aiosqlite:///nowhere/gateway.db"),
        "database",
        "reachable",
    ),
    "issuer unset": (_set("oidc_issuer", ""), "oidc", "issuer"),
    "discovery missing": (
        _do(lambda p: setattr(p.issuer.server, "discovery", False)),
        "oidc",
        "discovery answers",
    ),
    "issuer mismatch": (_do(_issuer_lies), "oidc", "issuer matches"),
    "key set down": (_do(lambda p: setattr(p.issuer.server, "status", 503)), "oidc", "key set loads"),
    "key set empty": (_do(lambda p: setattr(p.issuer.server, "jwks", {"keys": []})), "oidc", "key set loads"),
    "no allowed algorithm": (_set("oidc_algorithms", ["ES256", "EdDSA"]), "oidc", "algorithms allowed"),
    "cluster down": (_kube_down, "kubernetes", "API answers"),
    "crd version not served": (_do(lambda p: p.kube.served.clear()), "kubernetes", "terraform CRD"),
    "may not patch terraforms": (
        _do(lambda p: p.kube.denied.add(("terraforms", "patch", NAMESPACE))),
        "kubernetes",
        f"may create, get, list, watch, patch, delete terraforms in {NAMESPACE}",
    ),
    "may not read secrets": (
        _do(lambda p: p.kube.denied.add(("secrets", "get", NAMESPACE))),
        "kubernetes",
        f"may get secrets in {NAMESPACE}",
    ),
    "source missing": (_set("terraform_source_kind", "OCIRepository"), "kubernetes", "source exists"),
    "semaphore down": (_set("semaphore_url", CLOSED), "semaphore", "answers"),
    "semaphore token refused": (
        _set("semaphore_token", "stale"),
        "semaphore",
        "token accepted, project exists",
    ),
    "semaphore project missing": (
        _set("semaphore_project_id", 2),
        "semaphore",
        "token accepted, project exists",
    ),
    "semaphore template missing": (_set("semaphore_template_id", 8), "semaphore", "template exists"),
    "semaphore actions template missing": (
        _set("semaphore_actions_template_id", 10),
        "semaphore",
        "actions template exists",
    ),
    "webhook secret unset": (_set("webhook_secret", None), "webhook", "secret"),
    "webhook secret short": (_set("webhook_secret", "x" * 31), "webhook", "secret"),
}


async def test_no_actions_template_is_said_without_failing(peers: Peers, migrated: str) -> None:
    report = await diagnose(peers.settings(migrated, semaphore_actions_template_id=None))

    assert report.ok, report.text()
    assert "ok   semaphore: actions template: not set: rebootInstance is refused" in report.text()
    assert not any("/templates/9" in check.detail for check in report.checks)


@pytest.mark.parametrize("breakage", list(BREAKAGES))
async def test_each_broken_peer_is_named(peers: Peers, migrated: str, breakage: str) -> None:
    break_it, peer, check = BREAKAGES[breakage]

    report = await diagnose(peers.settings(migrated, **break_it(peers)))

    failed = [(c.peer, c.check) for c in report.checks if c.status == "FAIL"]
    assert failed == [(peer, check)], report.text()
    assert not report.ok
    [line] = [line for line in report.text().splitlines() if line.startswith("FAIL")]
    assert line.startswith(f"FAIL {peer}: {check}: ")
    assert report.text().splitlines()[-1] == "1 check(s) failed"


async def run_main(
    *args: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    """`main()` with these OPENCSP_* variables, in a thread (it runs its own event loop; the peers keep
    serving in this one). Cheaper than a process: the import is already done."""
    for key in [k for k in os.environ if k.startswith("OPENCSP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(ROOT)

    def call() -> int:
        try:
            main(list(args))
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    code = await asyncio.to_thread(call)
    return code, capsys.readouterr().out


async def test_an_unmigrated_database_fails_and_the_cli_exits_1_with_json(
    peers: Peers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty.db").touch()  # there, but never migrated
    empty = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"

    code, output = await run_main(
        "doctor", "--json", env=peers.environment(empty), monkeypatch=monkeypatch, capsys=capsys
    )

    assert code == 1, output
    report = json.loads(output)
    assert report["ok"] is False
    failed = [(c["peer"], c["check"]) for c in report["checks"] if c["status"] == "FAIL"]
    assert failed == [("database", "migrated")]
    [detail] = [c["detail"] for c in report["checks"] if c["status"] == "FAIL"]
    assert "opencsp-gateway migrate" in detail


async def test_an_oci_source_is_looked_up_as_one(peers: Peers, migrated: str) -> None:
    source = {"apiVersion": OCI_REPOSITORIES.api_version, "kind": "OCIRepository"}
    source["metadata"] = {"name": "opencsp-modules"}  # type: ignore[assignment]
    peers.kube.create(OCI_REPOSITORIES, "flux-system", source)

    report = await diagnose(peers.settings(migrated, terraform_source_kind="OCIRepository"))

    assert report.ok, report.text()


async def test_dev_mode_says_which_peers_are_simulated(migrated: str) -> None:
    settings = Settings(dev_mode=True, database_url=migrated, _env_file=None)  # type: ignore[call-arg]

    report = await diagnose(settings)

    assert report.ok, report.text()
    simulated = {c.peer for c in report.checks if c.check == "simulated"}
    assert simulated == {"oidc", "kubernetes", "semaphore", "webhook"}
    assert [c.check for c in report.checks if c.peer == "database"] == ["reachable", "migrated"]


async def test_migrate_prints_the_report_but_a_down_peer_does_not_fail_it(
    peers: Peers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    env = peers.environment(empty) | {"OPENCSP_SEMAPHORE_URL": CLOSED}

    code, output = await run_main(
        "migrate", "--doctor", "--skip", "kubernetes", env=env, monkeypatch=monkeypatch, capsys=capsys
    )

    assert code == 0, output
    assert "database is at the newest revision" in output
    assert "ok   database: migrated" in output
    assert "FAIL semaphore: answers" in output
    assert "skip kubernetes: skipped" in output
