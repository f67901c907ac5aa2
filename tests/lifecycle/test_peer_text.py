"""What tofu-controller and Semaphore write reaches only readers with `instance:read:internals`.

Real failure text travels the real way: a Ready=False condition written into the Kubernetes API
stand-in (read by the gateway's kubernetes_asyncio watch), an error body from the Semaphore stand-in
(read by its httpx client), a Status body from the API server refusing the Terraform object. Viewers and
users then read the instance over HTTP and receive its changes over a websocket: they get the reason's
fixed sentence and never a byte of the peer's text; operators read it on the internals fields.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import websockets

from services.instances import reasons
from tests.lifecycle.conftest import NAMESPACE, Gateway, Peers
from tests.peers.kube_api import TERRAFORMS, KubeApiEmulator

# What a real tofu-controller condition carries when Proxmox refuses a clone.
CONDITION_MESSAGE = (
    "error: creating the VM on node pve-3 failed: storage local-lvm full (user root@pam, template 9001); "
    "module source git::ssh://git@git.internal/infra/modules.git//proxmox-vm?ref=v3, main.tf line 42"
)
# A reason is peer text too: the CRD allows any CamelCase-ish word up to 1024 characters.
ODD_REASON = "ProxmoxNode_pve3:storage_local_lvm_" + "A" * 120
SEMAPHORE_BODY = "template 7 inventory pve-3 root@pam: vault password file /etc/semaphore/vault missing"
KUBE_BODY = 'admission webhook "tf.internal" denied: node pve-3 quota for root@pam on local-lvm'
LEAKS = ("pve-3", "pve3", "local-lvm", "local_lvm", "root@pam", "git::ssh", "9001", "vault")

PUBLIC = "id status statusReason statusMessage events(last: 50) { reason message }"
INTERNAL = "id status statusReason statusMessage statusDetail events(last: 50) { reason message detail }"
SUBSCRIBE = "subscription {{ instanceStatusChanges {{ from to reason instance {{ {fields} }} }} }}"


def assert_no_peer_text(text: str, where: str) -> None:
    leaked = [word for word in LEAKS if word in text]
    assert leaked == [], f"{where} carries peer text {leaked}: {text}"


async def post(gateway: Gateway, role: str, query: str, variables: dict[str, Any] | None = None) -> str:
    """The raw response body, so a leak anywhere in it (data, errors, extensions) is seen."""
    response = await gateway.http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=gateway.headers(role)
    )
    assert response.status_code == 200, response.text
    return response.text


async def read_as(gateway: Gateway, role: str, instance_id: str, fields: str) -> tuple[str, dict[str, Any]]:
    text = await post(gateway, role, f'{{ instance(id: "{instance_id}") {{ {fields} }} }}')
    body: dict[str, Any] = json.loads(text)
    return text, body


class Subscriber:
    """One graphql-transport-ws socket subscribed to every status change; keeps each raw frame."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.frames: list[str] = []

    async def failed(self, *instance_ids: str) -> dict[str, dict[str, Any]]:
        """Frames until each instance has changed into FAILED; those changes, by instance id."""
        reached: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(15):
                while reached.keys() != set(instance_ids):
                    frame = await self.socket.recv()
                    message = json.loads(frame)
                    if message["type"] in ("ping", "pong"):
                        continue
                    self.frames.append(frame)
                    assert message["type"] == "next", message
                    change: dict[str, Any] = message["payload"]["data"]["instanceStatusChanges"]
                    if change["instance"]["id"] in instance_ids and change["to"] == "FAILED":
                        reached[change["instance"]["id"]] = change
        except TimeoutError:
            # Say what did arrive, so a change that never came can be told from one that came late.
            raise AssertionError(
                f"waited for {instance_ids}, reached {list(reached)}; frames {self.frames}"
            ) from None
        return reached


@asynccontextmanager
async def subscribed(gateway: Gateway, role: str, fields: str) -> AsyncIterator[Subscriber]:
    token = gateway.headers(role)["Authorization"]
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as socket:  # type: ignore[list-item]
        await socket.send(json.dumps({"type": "connection_init", "payload": {"authorization": token}}))
        assert json.loads(await socket.recv()) == {"type": "connection_ack"}
        query = SUBSCRIBE.format(fields=fields)
        hub, before = gateway.runtime.services.hub, gateway.runtime.services.hub.subscribers
        await socket.send(json.dumps({"id": "s", "type": "subscribe", "payload": {"query": query}}))
        async with asyncio.timeout(5):  # registered before anything changes
            while hub.subscribers <= before:
                await asyncio.sleep(0.01)
        yield Subscriber(socket)


async def test_a_provisioning_failure_shows_viewers_a_sentence_and_operators_the_condition(
    gateway: Gateway, peers: Peers
) -> None:
    peers.controller.behave("leaky", outcome="fail", reason="TFExecApplyFailed", message=CONDITION_MESSAGE)
    peers.controller.behave("odd", outcome="fail", reason=ODD_REASON, message=CONDITION_MESSAGE)
    async with (
        subscribed(gateway, "viewer", PUBLIC) as viewer,
        subscribed(gateway, "operator", INTERNAL) as operator,
    ):
        leaky = await gateway.create_ok("leaky")
        odd = await gateway.create_ok("odd")
        await viewer.failed(leaky["id"], odd["id"])
        assert len(viewer.frames) >= 4  # the whole way: PENDING, PROVISIONING, FAILED of each
        for frame in viewer.frames:
            assert_no_peer_text(frame, "a viewer's subscription frame")
        seen = await operator.failed(leaky["id"], odd["id"])

    assert seen[leaky["id"]]["instance"]["statusDetail"] == CONDITION_MESSAGE
    assert seen[leaky["id"]]["instance"]["events"][-1]["detail"] == CONDITION_MESSAGE
    assert seen[odd["id"]]["reason"] == reasons.TERRAFORM_FAILED
    assert seen[odd["id"]]["instance"]["statusDetail"] == f"{ODD_REASON}: {CONDITION_MESSAGE}"

    for role in ("viewer", "user"):
        for instance, reason in ((leaky, "TFExecApplyFailed"), (odd, reasons.TERRAFORM_FAILED)):
            text, body = await read_as(gateway, role, instance["id"], PUBLIC)
            assert_no_peer_text(text, f"{role}'s instance query")
            found = body["data"]["instance"]
            assert (found["statusReason"], found["statusMessage"]) == (
                reason,
                "Provisioning the virtual machine failed.",
            )
            assert found["events"][-1] == {"reason": reason, "message": found["statusMessage"]}
        listed = await post(gateway, role, f"{{ instances {{ nodes {{ {PUBLIC} }} }} }}")
        assert_no_peer_text(listed, f"{role}'s instance list")
        # Asking for the raw fields is refused at their path, and the refusal carries no text either.
        text, body = await read_as(gateway, role, leaky["id"], INTERNAL)
        assert_no_peer_text(text, f"{role}'s refused internals")
        assert body["data"]["instance"]["statusDetail"] is None
        assert {e["extensions"]["code"] for e in body["errors"]} == {"FORBIDDEN"}

    _, body = await read_as(gateway, "operator", leaky["id"], INTERNAL + " terraform { reason message }")
    found = body["data"]["instance"]
    assert found["statusDetail"] == CONDITION_MESSAGE
    assert found["events"][-1]["detail"] == CONDITION_MESSAGE
    assert found["terraform"] == {"reason": "TFExecApplyFailed", "message": CONDITION_MESSAGE}


async def test_a_semaphore_error_body_reaches_only_operators(gateway: Gateway, peers: Peers) -> None:
    peers.semaphore.fail_next(1, status=400, route="start", message=SEMAPHORE_BODY)
    async with subscribed(gateway, "viewer", PUBLIC) as viewer:
        created = await gateway.create_ok("refused")
        await viewer.failed(created["id"])

    for frame in viewer.frames:
        assert_no_peer_text(frame, "a viewer's subscription frame")
    for role in ("viewer", "user"):
        text, body = await read_as(gateway, role, created["id"], PUBLIC)
        assert_no_peer_text(text, f"{role}'s instance query")
        found = body["data"]["instance"]
        assert (found["statusReason"], found["statusMessage"]) == (
            reasons.CONFIGURATION_REJECTED,
            "The configuration service refused to configure the virtual machine.",
        )
    _, body = await read_as(gateway, "operator", created["id"], INTERNAL)
    assert SEMAPHORE_BODY in body["data"]["instance"]["statusDetail"]


async def test_a_kubernetes_api_refusal_leaves_its_body_out_of_the_mutation(
    gateway: Gateway, peers: Peers
) -> None:
    path = KubeApiEmulator.collection_path(TERRAFORMS, NAMESPACE)
    peers.kube.fail_next(1, path=path, method="POST", code=422, message=KUBE_BODY)

    text = await post(
        gateway,
        "user",
        f"""mutation {{ createInstance(input: {{name: "rejected", flavor: "small", image: "debian-12"}}) {{
              instance {{ {PUBLIC} }} userErrors {{ field message code }} }} }}""",
    )

    assert_no_peer_text(text, "the createInstance payload")
    payload = json.loads(text)["data"]["createInstance"]
    assert payload["userErrors"] == []
    assert (payload["instance"]["status"], payload["instance"]["statusReason"]) == (
        "FAILED",
        reasons.TERRAFORM_OBJECT_REJECTED,
    )
    assert payload["instance"]["statusMessage"] == reasons.sentence(reasons.TERRAFORM_OBJECT_REJECTED)


async def test_outputs_that_are_not_an_address_and_a_host_name_never_reach_users(
    gateway: Gateway, peers: Peers
) -> None:
    outputs = {"ip_address": "10.20.0.99", "hostname": "vm-on-pve-3 root@pam local-lvm"}
    peers.controller.behave("smuggler", outputs=outputs)
    created = await gateway.create_ok("smuggler")
    await gateway.wait_for_status(created["id"], "FAILED")

    text, body = await read_as(gateway, "user", created["id"], PUBLIC + " ipAddress hostname")

    assert_no_peer_text(text, "the user's instance query")
    found = body["data"]["instance"]
    assert (found["statusReason"], found["ipAddress"], found["hostname"]) == (
        reasons.INVALID_OUTPUTS,
        None,
        None,
    )
    _, body = await read_as(gateway, "operator", created["id"], INTERNAL)
    assert "vm-on-pve-3 root@pam" in body["data"]["instance"]["statusDetail"]
