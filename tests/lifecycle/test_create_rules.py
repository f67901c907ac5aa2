"""What createInstance refuses (as userErrors), quotas under concurrency, and idempotency keys."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

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
