"""The OpenTofu module the Terraform objects point at parses and has the agreed interface.

The gateway sets `vars` {name, cores, memory, disk, template, ssh_public_key}; the provider settings
come from the `varsFrom` Secret (keys `proxmox_*`); the outputs Secret carries ip_address and hostname.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.tools import DEPLOY

hcl2 = pytest.importorskip("hcl2", reason="python-hcl2 (==8.1.4) is needed in the test venv")

MODULE = DEPLOY / "modules" / "proxmox-vm"
INSTANCE_VARIABLES = {
    "name": "string",
    "cores": "number",
    "memory": "number",
    "disk": "number",
    "template": "string",
    "ssh_public_key": "string",
    "started": "bool",
}


def unquote(label: str) -> str:
    return label.strip('"')


def blocks(kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(MODULE.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle)
        for block in parsed.get(kind, []):
            for label, body in block.items():
                found[unquote(label)] = body
    return found


def test_every_file_parses() -> None:
    files = sorted(MODULE.glob("*.tf"))
    assert {f.name for f in files} >= {"main.tf", "variables.tf", "outputs.tf", "versions.tf"}
    for path in files:
        with path.open() as handle:
            assert hcl2.load(handle), path.name


def test_variables_are_the_agreed_ones() -> None:
    variables = blocks("variable")
    instance = {
        name: unquote(body["type"]) for name, body in variables.items() if not name.startswith("proxmox_")
    }
    assert instance == INSTANCE_VARIABLES
    assert unquote(variables["ssh_public_key"]["default"]) == ""
    assert variables["started"]["default"] is True  # objects made before power control keep running
    required = {name for name, body in variables.items() if "default" not in body}
    assert required == {
        *("name", "cores", "memory", "disk", "template"),
        *("proxmox_endpoint", "proxmox_api_token", "proxmox_node"),
    }
    assert variables["proxmox_api_token"]["sensitive"] is True


def test_outputs_are_ip_address_and_hostname() -> None:
    assert set(blocks("output")) == {"ip_address", "hostname"}


def test_provider_is_bpg_proxmox_and_the_vm_is_a_clone() -> None:
    with (MODULE / "versions.tf").open() as handle:
        (terraform,) = hcl2.load(handle)["terraform"]
    (providers,) = terraform["required_providers"]
    assert unquote(providers["proxmox"]["source"]) == "bpg/proxmox"
    (vm,) = blocks("resource")["proxmox_virtual_environment_vm"].values()
    assert vm["clone"][0]["full"] is True
    assert vm["cpu"][0]["cores"] == "${var.cores}"
    assert vm["memory"][0]["dedicated"] == "${var.memory}"
    assert vm["disk"][0]["size"] == "${var.disk}"
    assert vm["name"] == "${var.name}"


def test_the_vm_runs_as_the_started_variable_says() -> None:
    (vm,) = blocks("resource")["proxmox_virtual_environment_vm"].values()
    assert vm["started"] == "${var.started}"
    assert vm["on_boot"] == "${var.started}"  # a stopped VM stays off when its node reboots
