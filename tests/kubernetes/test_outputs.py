"""Outputs as tofu-controller writes them: raw strings, and JSON with a `<name>__type` key otherwise."""

from __future__ import annotations

import base64

import pytest

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.outputs import InstanceOutputs, OutputsError, instance_outputs, parse_outputs
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
