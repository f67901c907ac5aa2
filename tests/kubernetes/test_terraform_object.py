"""The Terraform object we build: the agreed shape, valid against the CRD, accepted by the API."""

from __future__ import annotations

import re
import uuid

import jsonschema
import pytest

from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.errors import ClusterInvalid
from services.kubernetes.terraform_object import build_terraform_object, terraform_object_name, with_vars
from tests.kubernetes.support import NAMESPACE, make_spec
from tests.peers.kube_api import TERRAFORMS, KubeApiEmulator, load_terraform_schema


def test_object_has_the_agreed_shape() -> None:
    spec = make_spec(ssh_public_key="ssh-ed25519 AAAA test")
    obj = build_terraform_object(spec)
    assert obj["apiVersion"] == "infra.contrib.fluxcd.io/v1alpha2"
    assert obj["kind"] == "Terraform"
    assert obj["metadata"] == {
        "name": f"inst-{spec.instance_id.hex}",
        "namespace": NAMESPACE,
        "labels": {
            "app.kubernetes.io/managed-by": "opencsp-gateway",
            "opencsp.io/instance-id": str(spec.instance_id),
        },
    }
    body = obj["spec"]
    assert body["approvePlan"] == "auto"
    assert body["destroyResourcesOnDeletion"] is True
    assert body["sourceRef"] == {
        "kind": "GitRepository",
        "name": "opencsp-modules",
        "namespace": "flux-system",
    }
    assert {v["name"]: v["value"] for v in body["vars"]} == {
        "name": "web-1",
        "cores": 2,
        "memory": 4096,
        "disk": 40,
        "template": "debian-12-cloudinit",
        "started": True,  # the module's desired power state: start/stop change it
        "ssh_public_key": "ssh-ed25519 AAAA test",
    }
    assert body["varsFrom"] == [{"kind": "Secret", "name": "proxmox-credentials"}]
    assert body["writeOutputsToSecret"]["name"] == f"inst-{spec.instance_id.hex}-outputs"
    assert body["writeOutputsToSecret"]["outputs"] == ["ip_address", "hostname"]


def test_ssh_key_var_only_when_set() -> None:
    names = [v["name"] for v in build_terraform_object(make_spec())["spec"]["vars"]]
    assert "ssh_public_key" not in names


def test_object_name_is_deterministic_dns_label() -> None:
    instance_id = uuid.UUID("0f8e9d2c-1b3a-4c5d-8e7f-001122334455")
    name = terraform_object_name(instance_id)
    assert name == terraform_object_name(instance_id) == "inst-0f8e9d2c1b3a4c5d8e7f001122334455"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
    assert len(name) <= 63


@pytest.mark.parametrize("source_kind", ["GitRepository", "OCIRepository"])
def test_built_object_validates_against_crd_schema(source_kind: str) -> None:
    schema = load_terraform_schema()
    obj = build_terraform_object(make_spec(source_kind=source_kind, ssh_public_key="ssh-ed25519 AAAA"))
    jsonschema.Draft7Validator(schema).validate(obj)


async def test_api_keeps_every_field_we_send(kube_api: KubeApiEmulator, cluster: TerraformCluster) -> None:
    """Pruning would silently drop a field the CRD does not know; nothing of ours may be dropped."""
    obj = build_terraform_object(make_spec(ssh_public_key="ssh-ed25519 AAAA"))
    created = await cluster.create(obj)
    for key, value in obj["spec"].items():
        assert created["spec"][key] == value
    assert created["status"] == {"observedGeneration": -1}  # the CRD's default, before tofu-controller runs


async def test_api_rejects_an_invalid_object_with_422(
    kube_api: KubeApiEmulator, cluster: TerraformCluster
) -> None:
    obj = build_terraform_object(make_spec())
    obj["spec"]["sourceRef"]["kind"] = "HelmRepository"
    del obj["spec"]["interval"]
    with pytest.raises(ClusterInvalid) as caught:
        await cluster.create(obj)
    assert caught.value.status == 422
    assert kube_api.list(TERRAFORMS, NAMESPACE)["items"] == []


def test_with_vars_changes_named_variables_in_place_and_appends_missing_ones() -> None:
    obj = {"spec": {"vars": [{"name": "name", "value": "web-1"}, {"name": "cores", "value": 2}]}}

    changed = with_vars(obj, {"cores": 4, "started": False})

    assert changed == [
        {"name": "name", "value": "web-1"},
        {"name": "cores", "value": 4},
        {"name": "started", "value": False},  # an object made before the variable existed
    ]
    assert obj["spec"]["vars"][1] == {"name": "cores", "value": 2}  # the input is not changed
