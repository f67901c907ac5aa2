"""The instance playbook: syntax, ansible-lint (production profile, offline), and its last step.

The last step is run for real: ansible-playbook runs the gateway_notify role on this machine
against a small HTTP server, and the gateway's own verifier checks the signature it receives, with and
without the Lynis summary. The whole playbook runs on a booted host in tests/deploy_live.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from services.semaphore.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_hint
from tests.deploy.tools import DEPLOY, run_tool

PLAYBOOK_DIR = DEPLOY / "modules" / "ansible"
SECRET = "s3cr3t-for-tests"


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
        "ANSIBLE_CONFIG": str(PLAYBOOK_DIR / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
    }


@pytest.mark.parametrize("playbook", ["instance.yml", "actions.yml"])
def test_playbook_syntax(tmp_path: Path, playbook: str) -> None:
    result = run_tool(
        "ansible-playbook", "--syntax-check", playbook, cwd=PLAYBOOK_DIR, env=ansible_env(tmp_path)
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile_offline(tmp_path: Path) -> None:
    result = run_tool("ansible-lint", "--offline", "--nocolor", cwd=PLAYBOOK_DIR, env=ansible_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_playbook_takes_the_gateways_extra_vars_and_always_notifies() -> None:
    plays = yaml.safe_load((PLAYBOOK_DIR / "instance.yml").read_text())
    text = (PLAYBOOK_DIR / "instance.yml").read_text()
    for var in ("instance_id", "ip_address", "hostname", "name"):
        assert f"{var} is defined" in text
    add_host = plays[0]["tasks"][1]["ansible.builtin.add_host"]
    assert add_host["ansible_host"] == "{{ ip_address }}"
    (block,) = plays[1]["tasks"]
    assert {"block", "rescue", "always"} <= set(block)
    assert block["always"][0]["ansible.builtin.include_role"]["name"] == "gateway_notify"
    assert "ansible.builtin.fail" in block["always"][-1]


def test_the_actions_playbook_reboots_and_always_notifies() -> None:
    plays = yaml.safe_load((PLAYBOOK_DIR / "actions.yml").read_text())
    text = (PLAYBOOK_DIR / "actions.yml").read_text()
    for var in ("action", "instance_id", "ip_address", "hostname", "name"):
        assert f"{var} is defined" in text
    (block,) = plays[1]["tasks"]
    reboot = block["block"][0]
    assert "ansible.builtin.reboot" in reboot
    assert reboot["when"] == "action == 'reboot'"
    assert block["always"][0]["ansible.builtin.include_role"]["name"] == "gateway_notify"
    assert "ansible.builtin.fail" in block["always"][-1]


class Recorder(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        # Header names are case-insensitive (urllib sends X-opencsp-timestamp): keep them lowercase.
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, dict[str, str], bytes]]]]:
    received: list[tuple[str, dict[str, str], bytes]] = []
    handler = type("Handler", (Recorder,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_notify(tmp_path: Path, extra_vars: dict[str, object], env: dict[str, str] | None = None) -> str:
    playbook = tmp_path / "notify.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Notify",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "roles": ["gateway_notify"],
                }
            ]
        )
    )
    (tmp_path / "vars.json").write_text(json.dumps(extra_vars))
    environment = {**ansible_env(tmp_path), "ANSIBLE_ROLES_PATH": str(PLAYBOOK_DIR / "roles"), **(env or {})}
    result = run_tool(
        "ansible-playbook",
        "-i",
        "localhost,",
        "-e",
        f"@{tmp_path / 'vars.json'}",
        str(playbook),
        cwd=tmp_path,
        env=environment,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_hint_is_signed_as_the_gateway_verifies_it(
    tmp_path: Path, gateway: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, received = gateway
    run_notify(
        tmp_path,
        {"gateway_url": url, "webhook_secret": SECRET, "semaphore_vars": {"task_details": {"id": 4242}}},
    )
    ((path, headers, body),) = received
    assert path == "/webhooks/semaphore"
    hint = verify_hint(
        SECRET, body, headers.get(TIMESTAMP_HEADER.lower()), headers.get(SIGNATURE_HEADER.lower())
    )
    assert hint.task_id == 4242
    assert json.loads(body) == {"task_id": 4242}


def test_the_task_id_falls_back_to_the_environment(
    tmp_path: Path, gateway: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, received = gateway
    run_notify(
        tmp_path,
        {"gateway_url": url},
        env={"SEMAPHORE_TASK_ID": "77", "OPENCSP_WEBHOOK_SECRET": SECRET},
    )
    ((_, headers, body),) = received
    assert (
        verify_hint(
            SECRET, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
        ).task_id
        == 77
    )


def test_an_unreachable_gateway_does_not_fail_the_play(tmp_path: Path) -> None:
    # Port 9 on loopback (discard) has no listener here: the hint is lost, the poller covers it.
    output = run_notify(
        tmp_path, {"gateway_url": "http://127.0.0.1:9", "webhook_secret": SECRET, "semaphore_task_id": 5}
    )
    assert "gateway unreachable" in output
    assert SECRET not in output


# Scanned a minute ago: the gateway refuses a summary older than a week (services/semaphore/webhook.py).
SECURITY = {"hardening_index": 64, "warnings": 2, "scanned_at": int(time.time()) - 60}


def test_the_lynis_summary_travels_signed_in_the_hint(
    tmp_path: Path, gateway: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, received = gateway
    run_notify(
        tmp_path,
        {
            "gateway_url": url,
            "webhook_secret": SECRET,
            "semaphore_task_id": 9,
            "security_scripts_summary": SECURITY,
        },
    )
    ((_, headers, body),) = received
    hint = verify_hint(SECRET, body, headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()])
    assert hint.task_id == 9
    assert json.loads(body) == {"task_id": 9, "security": SECURITY}


def notify_script() -> ModuleType:
    path = PLAYBOOK_DIR / "roles" / "gateway_notify" / "files" / "notify_gateway.py"
    spec = importlib.util.spec_from_file_location("notify_gateway", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "security",
    [
        {**SECURITY, "hardening_index": 101},
        {**SECURITY, "warnings": -1},
        {**SECURITY, "scanned_at": "yesterday"},
        {**SECURITY, "warnings": True},
        {"hardening_index": 50, "warnings": 0},
        {**SECURITY, "note": "x" * 5000},
        [1, 2, 3],
    ],
    ids=["index-over-100", "negative-warnings", "text-time", "bool", "missing-field", "extra-field", "list"],
)
def test_a_malformed_summary_is_refused(security: object) -> None:
    script = notify_script()
    with pytest.raises(script.InvalidSecurity):
        script.security_summary(json.dumps(security))
    assert script.security_summary("") is None
    assert script.security_summary(json.dumps(SECURITY)) == SECURITY


def test_a_malformed_summary_is_left_out_and_the_hint_still_goes(
    tmp_path: Path, gateway: tuple[str, list[tuple[str, dict[str, str], bytes]]]
) -> None:
    url, received = gateway
    output = run_notify(
        tmp_path,
        {
            "gateway_url": url,
            "webhook_secret": SECRET,
            "semaphore_task_id": 9,
            "security_scripts_summary": {**SECURITY, "hardening_index": 101},
        },
    )
    ((_, _, body),) = received
    assert json.loads(body) == {"task_id": 9}
    assert "security summary left out of the hint" in output


def test_the_seed_order_collector_then_security_scripts_then_hardening() -> None:
    plays = yaml.safe_load((PLAYBOOK_DIR / "instance.yml").read_text())
    (block,) = plays[1]["tasks"]
    roles = [
        task["ansible.builtin.include_role"]["name"]
        for task in block["block"]
        if "ansible.builtin.include_role" in task
    ]
    assert roles == ["otel_collector", "security_scripts", "hardening"]
