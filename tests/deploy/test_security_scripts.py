"""The security_scripts role's pieces that run without a host: the Lynis report summary and the
example scripts (run here on crafted account files and a scratch tree; tests/deploy_live runs them
on a booted host)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.tools import DEPLOY

ANSIBLE = DEPLOY / "modules" / "ansible"
SUMMARY = ANSIBLE / "roles" / "security_scripts" / "files" / "lynis_summary.py"
SCRIPTS = ANSIBLE / "security-scripts"


def summary_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lynis_summary", SUMMARY)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPORT = """# Lynis Report
report_version_major=1
hardening_index=67
warning[]=SSH-7408|Root can log in|-|-|
suggestion[]=FILE-7524|Tighten cron|-|-|
warning[]=PKGS-7392|Vulnerable packages|-|-|
os=Linux
"""


def test_the_summary_counts_warnings_and_takes_the_index_and_the_report_time(tmp_path: Path) -> None:
    report = tmp_path / "lynis-report.dat"
    report.write_text(REPORT)
    os.utime(report, (1_790_000_000, 1_790_000_000))
    result = subprocess.run(
        [sys.executable, str(SUMMARY), str(report)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"hardening_index": 67, "warnings": 2, "scanned_at": 1_790_000_000}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("warning[]=X|y|-|-|\n", "no hardening_index"),
        ("hardening_index=abc\n", "not a number"),
        ("hardening_index=140\n", "not a number from 0 to 100"),
    ],
    ids=["unfinished", "not-a-number", "over-100"],
)
def test_a_report_without_a_valid_index_is_an_error(text: str, error: str) -> None:
    module = summary_module()
    with pytest.raises(module.ReportError, match=error):
        module.summarise(text, 0.0)


def test_a_missing_report_fails_with_its_path(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SUMMARY), str(tmp_path / "none.dat")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "none.dat" in result.stderr


def run_script(name: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPTS / name)], capture_output=True, text=True, check=False, env={**os.environ, **env}
    )


def test_the_examples_are_executable() -> None:
    names = sorted(p.name for p in SCRIPTS.iterdir() if p.is_file() and os.access(p, os.X_OK))
    assert names == ["10-check-accounts", "20-tighten-permissions"]


def test_check_accounts_fails_on_a_second_uid_0_and_an_empty_password(tmp_path: Path) -> None:
    passwd, shadow = tmp_path / "passwd", tmp_path / "shadow"
    passwd.write_text("root:x:0:0::/root:/bin/sh\nopencsp:x:1000:1000::/home/opencsp:/bin/sh\n")
    shadow.write_text("root:*:1::::::\nopencsp:!:1::::::\n")
    env = {"OPENCSP_PASSWD_FILE": str(passwd), "OPENCSP_SHADOW_FILE": str(shadow)}
    assert run_script("10-check-accounts", env).returncode == 0
    passwd.write_text(passwd.read_text() + "toor:x:0:0::/root:/bin/sh\n")
    shadow.write_text(shadow.read_text() + "guest::1::::::\n")
    failed = run_script("10-check-accounts", env)
    assert failed.returncode == 1
    assert "UID 0 besides root: toor" in failed.stdout
    assert "empty password: guest" in failed.stdout


def test_tighten_permissions_narrows_once_then_reports_nothing(tmp_path: Path) -> None:
    (tmp_path / "etc" / "cron.d").mkdir(parents=True)
    (tmp_path / "etc" / "ssh").mkdir()
    crontab = tmp_path / "etc" / "crontab"
    crontab.write_text("")
    crontab.chmod(0o644)
    (tmp_path / "etc" / "cron.d").chmod(0o755)
    key = tmp_path / "etc" / "ssh" / "ssh_host_ed25519_key"
    key.write_text("")
    key.chmod(0o640)
    env = {"OPENCSP_ROOT": str(tmp_path)}
    first = run_script("20-tighten-permissions", env)
    assert first.returncode == 2, first.stdout + first.stderr
    assert "/etc/crontab: mode 644 -> 600" in first.stdout
    assert stat.S_IMODE(crontab.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc" / "cron.d").stat().st_mode) == 0o700
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    second = run_script("20-tighten-permissions", env)
    assert second.returncode == 0, second.stdout + second.stderr
