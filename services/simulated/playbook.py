"""The log a run of `deploy/modules/ansible/instance.yml` writes, for the simulated Semaphore.

Task names follow the playbook and its roles (hardening, otel_collector, gateway_notify), so what a dev
user reads in an instance's task log looks like production's. A failing run fails where the real one
most often does, downloading the collector package, then posts the hint and fails the task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

OTEL_VERSION: Final = "0.128.0"
_PACKAGE_URL: Final = (
    "https://github.com/open-telemetry/opentelemetry-collector-releases/releases/download/"
    f"v{OTEL_VERSION}/otelcol-contrib_{OTEL_VERSION}_linux_amd64.deb"
)
_DOWNLOAD_ERROR: Final = "Request failed: <urlopen error [Errno -3] Temporary failure in name resolution>"


def _task(name: str) -> str:
    return f"TASK [{name}] " + "*" * max(3, 72 - len(name))


def _play(name: str) -> str:
    return f"PLAY [{name}] " + "*" * max(3, 72 - len(name))


def run_log(task_id: int, environment: Mapping[str, str], *, fails: bool) -> list[list[str]]:
    """The log in chunks: at `starting`, twice while `running`, and with the final status."""
    host = environment.get("hostname") or environment.get("name") or "instance"
    preparing = [
        f"Task {task_id} added to queue",
        f"Started: {task_id}",
        "Run TaskRunner with template: Configure instance",
        f"Preparing: {task_id}",
        "Updating Repository opencsp-deploy",
        "installing static inventory",
        "No collections/requirements.yml file found. Skip galaxy install process.",
        "No roles/requirements.yml file found. Skip galaxy install process.",
    ]
    hardening = [
        _play("Add the new instance to the inventory"),
        _task("Check the extra vars from the gateway"),
        'ok: [localhost] => {"changed": false, "msg": "All assertions passed"}',
        _task("Add the instance as a host"),
        f"changed: [localhost] => {json.dumps({'add_host': {'host_name': host}})}",
        _play("Configure the instance"),
        _task("Wait for SSH and cloud-init"),
        f"ok: [{host}]",
        _task("Wait for cloud-init to finish"),
        f"ok: [{host}]",
        _task("Gather facts"),
        f"ok: [{host}]",
        _task("hardening : Install the hardening packages"),
        f"changed: [{host}]",
        _task("hardening : Enable unattended security upgrades (Debian family)"),
        f"changed: [{host}]",
        _task("hardening : Harden sshd (keys only, no root, few tries)"),
        f"changed: [{host}]",
        _task("hardening : Write the nftables ruleset (default drop inbound)"),
        f"changed: [{host}]",
        _task("hardening : Enable nftables at boot"),
        f"changed: [{host}]",
        _task("hardening : Install the audit rules"),
        f"changed: [{host}]",
        _task("hardening : Enable auditd"),
        f"ok: [{host}]",
        _task("hardening : Create the drop-in directories"),
        f"changed: [{host}] => (item=otelcol-contrib.service)",
        _task("hardening : Install the sandboxing drop-ins"),
        f"changed: [{host}] => (item=otelcol-contrib.service)",
    ]
    collector = [_task("otel_collector : Download the collector package")]
    if fails:
        failure = {"changed": False, "dest": "/var/tmp/otelcol-contrib.deb", "msg": _DOWNLOAD_ERROR}  # noqa: S108 - log text
        collector += [
            f"fatal: [{host}]: FAILED! => {json.dumps(failure | {'url': _PACKAGE_URL})}",
            _task("Remember the failure, to fail the task after the hint"),
            f"ok: [{host}]",
        ]
    else:
        collector += [
            f"changed: [{host}]",
            _task("otel_collector : Install the collector (Debian family)"),
            f"changed: [{host}]",
            _task("otel_collector : Let the collector read the journal"),
            f"changed: [{host}]",
            _task("otel_collector : Write the collector configuration"),
            f"changed: [{host}]",
            _task("otel_collector : Enable the collector"),
            f"changed: [{host}]",
            "RUNNING HANDLER [hardening : Reload sshd] " + "*" * 40,
            f"changed: [{host}]",
            "RUNNING HANDLER [hardening : Reload nftables] " + "*" * 36,
            f"changed: [{host}]",
            "RUNNING HANDLER [hardening : Reload systemd] " + "*" * 37,
            f"ok: [{host}]",
            "RUNNING HANDLER [otel_collector : Restart otelcol-contrib] " + "*" * 24,
            f"changed: [{host}]",
        ]
    notify = [
        _task("gateway_notify : Post the signed task hint to the gateway"),
        f"ok: [{host} -> localhost]",
        _task("gateway_notify : Report the hint's outcome"),
        f'ok: [{host}] => {{"msg": "gateway hint for task {task_id}: 204"}}',
    ]
    if fails:
        message = f"otel_collector : Download the collector package: {_DOWNLOAD_ERROR}"
        notify += [
            _task("Fail the Semaphore task when the configuration failed"),
            f"fatal: [{host}]: FAILED! => {json.dumps({'changed': False, 'msg': message})}",
        ]
    recap = (
        "ok=17 changed=12 unreachable=0 failed=1 skipped=2 rescued=1 ignored=0"
        if fails
        else ("ok=28 changed=21 unreachable=0 failed=0 skipped=2 rescued=0 ignored=0")
    )
    notify += [
        "PLAY RECAP " + "*" * 69,
        f"{host:<32}: {recap}",
        f"{'localhost':<32}: ok=2 changed=1 unreachable=0 failed=0 skipped=0 rescued=0 ignored=0",
    ]
    return [preparing, hardening, collector, notify]
