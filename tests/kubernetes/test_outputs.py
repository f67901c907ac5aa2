"""Outputs as tofu-controller writes them: raw strings, and JSON with a `<name>__type` key otherwise."""

from __future__ import annotations

import base64
import ipaddress

import pytest

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.outputs import (
    InstanceOutputs,
    InvalidOutputs,
    OutputsError,
    checked_outputs,
    instance_outputs,
    parse_outputs,
)
from services.kubernetes.terraform_object import build_terraform_object
from tests.kubernetes.support import NAMESPACE, make_spec
from tests.peers.kube_api import SECRETS, KubeApiEmulator


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_read_outputs_written_by_tofu_controller(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    spec = make_spec()
    await cluster.create(build_terraform_object(spec))
    assert await cluster.read_outputs(NAMESPACE, spec.outputs_secret) is None  # not written yet
    kube_api.write_outputs(NAMESPACE, spec.object_name, {"ip_address": "10.0.0.7", "hostname": "web-1.lab"})
    outputs = await cluster.read_outputs(NAMESPACE, spec.outputs_secret)
    assert outputs == {"ip_address": "10.0.0.7", "hostname": "web-1.lab"}
    assert instance_outputs(outputs) == InstanceOutputs(ip_address="10.0.0.7", hostname="web-1.lab")
    secret = kube_api.object(SECRETS, NAMESPACE, spec.outputs_secret)
    assert secret is not None
    assert secret["metadata"]["labels"]["opencsp.io/instance-id"] == str(spec.instance_id)
    # The Secret is owned by the Terraform object: deleting that collects it.
    await cluster.delete(NAMESPACE, spec.object_name)
    assert await cluster.read_outputs(NAMESPACE, spec.outputs_secret) is None


async def test_typed_outputs_are_json(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    obj = build_terraform_object(make_spec())
    obj["spec"]["writeOutputsToSecret"]["outputs"] = []  # all outputs
    await cluster.create(obj)
    values = {
        "hostname": "db",
        "ip_address": ["10.0.0.8", "fd00::8"],
        "cores": 4,
        "ok": True,
        "tags": {"a": "b"},
    }
    kube_api.write_outputs(NAMESPACE, obj["metadata"]["name"], values)
    secret = kube_api.object(SECRETS, NAMESPACE, obj["spec"]["writeOutputsToSecret"]["name"])
    assert secret is not None
    assert base64.b64decode(secret["data"]["cores__type"]) == b'"number"'
    assert "hostname__type" not in secret["data"]
    outputs = await cluster.read_outputs(NAMESPACE, obj["spec"]["writeOutputsToSecret"]["name"])
    assert outputs == values
    with pytest.raises(OutputsError):
        instance_outputs(outputs)  # a list is not an address


def test_parse_outputs_table() -> None:
    data = {
        "hostname": b64("web-1"),
        "port": b64("8080"),  # a string output that looks like a number stays a string
        "count": b64("3"),
        "count__type": b64('"number"'),
        "name__type": b64('"string"'),  # a stray type key without its value is kept as it is
    }
    assert parse_outputs(data) == {"hostname": "web-1", "port": "8080", "count": 3, "name__type": '"string"'}
    assert parse_outputs(None) == {}
    assert instance_outputs({"ip_address": "10.0.0.1"}) is None
    assert instance_outputs({"ip_address": "", "hostname": "h"}) is None


@pytest.mark.parametrize(
    "data",
    [{"ip_address": "not base64!"}, {"x": b64("{nope"), "x__type": b64('["object",{}]')}],
)
def test_parse_outputs_rejects_garbage(data: dict[str, str]) -> None:
    with pytest.raises(OutputsError):
        parse_outputs(data)


NETWORKS = (ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("fd00:20::/64"))


@pytest.mark.parametrize(
    ("address", "hostname", "expected"),
    [
        ("10.20.0.9", "web-1.lab.internal", ("10.20.0.9", "web-1.lab.internal")),
        ("FD00:20::0009", "web-1", ("fd00:20::9", "web-1")),
        ("10.20.255.254", "Web-1.Lab.", ("10.20.255.254", "Web-1.Lab")),
        ("10.20.0.9", "a" * 63 + "." + "b" * 63, ("10.20.0.9", "a" * 63 + "." + "b" * 63)),
    ],
)
def test_checked_outputs_are_canonical(address: str, hostname: str, expected: tuple[str, str]) -> None:
    checked = checked_outputs(address, hostname, NETWORKS)
    assert (checked.ip_address, checked.hostname) == expected


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("10.20.0.9 -o ProxyCommand=id {{ lookup('pipe', 'id') }}", "is not an IP address"),
        ("10.20.0.9\n", "is not an IP address"),
        (" 10.20.0.9", "is not an IP address"),
        ("010.20.0.9", "is not an IP address"),
        ("10.20.0.0/24", "is not an IP address"),
        ("vm.example", "is not an IP address"),
        ("fd00:20::9%eth0", "IPv6 zone"),
        ("fd00:20::9% -oProxyCommand=id", "IPv6 zone"),
        ("192.168.1.5", "outside the instance networks (10.20.0.0/16, fd00:20::/64)"),
        ("::ffff:10.20.0.9", "outside the instance networks"),
        ("fd00:99::9", "outside the instance networks"),
        ("127.0.0.1", "not a machine's address"),
        ("0.0.0.0", "not a machine's address"),  # noqa: S104 (a refused output, not a bind)
        ("224.0.0.1", "not a machine's address"),
    ],
)
def test_addresses_that_are_not_a_vm_in_the_networks_are_refused(address: str, says: str) -> None:
    with pytest.raises(InvalidOutputs) as refused:
        checked_outputs(address, "web-1.lab", NETWORKS)
    assert says in str(refused.value)
    assert "\n" not in str(refused.value)


def test_without_networks_any_routable_address_is_taken() -> None:
    assert checked_outputs("192.168.1.5", "web").ip_address == "192.168.1.5"
    with pytest.raises(InvalidOutputs):
        checked_outputs("127.0.0.1", "web")


@pytest.mark.parametrize(
    "hostname",
    [
        "web 1.lab",
        "web-1.lab\nansible_host: evil",
        "web;id",
        "$(id)",
        "{{ lookup('pipe', 'id') }}",
        "-web.lab",
        "web-.lab",
        "web..lab",
        ".",
        "a" * 64,
        ".".join(["a" * 63] * 4),  # 255 characters
        "wéb.lab",
        "web_1.lab",
    ],
)
def test_hostnames_that_are_not_dns_names_are_refused(hostname: str) -> None:
    with pytest.raises(InvalidOutputs) as refused:
        checked_outputs("10.20.0.9", hostname, NETWORKS)
    assert "is not a DNS name" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_instance_outputs_checks_what_it_returns() -> None:
    with pytest.raises(InvalidOutputs):
        instance_outputs({"ip_address": "10.0.0.1 -o x", "hostname": "h"})
    found = instance_outputs({"ip_address": "10.20.0.1", "hostname": "h"}, NETWORKS)
    assert found is not None
    assert (found.ip_address, found.hostname) == ("10.20.0.1", "h")


@pytest.mark.parametrize(
    "outputs",
    [
        {"ip_address": "node pve-3 root@pam", "hostname": "web-1"},
        {"ip_address": "10.0.0.1; storage local-lvm", "hostname": "web-1"},
        {"ip_address": "10.0.0.1", "hostname": "web-1 (on pve-3, root@pam)"},
        {"ip_address": "10.0.0.1", "hostname": "-web"},
        {"ip_address": "10.0.0.1", "hostname": "web-1.lab\nroot@pam"},
        {"ip_address": "10.0.0.1", "hostname": "a" * 64},
    ],
)
def test_outputs_must_be_an_address_and_a_host_name(outputs: dict[str, str]) -> None:
    """Both are peer-written and shown to every reader with instance:read:network: nothing else fits."""
    with pytest.raises(OutputsError):
        instance_outputs(outputs)


def test_addresses_and_host_names_pass() -> None:
    for ip_address, hostname in (
        ("10.0.0.1", "web-1"),
        ("fd00::7", "web-1.lab.internal"),
        ("10.0.0.1", "W1"),
    ):
        assert instance_outputs({"ip_address": ip_address, "hostname": hostname}) == InstanceOutputs(
            ip_address, hostname
        )
