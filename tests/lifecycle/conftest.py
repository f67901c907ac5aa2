"""The lifecycle end to end: the gateway served by uvicorn, wired through its REAL clients to protocol peers.

`peers` starts the Kubernetes API emulator, a test-side tofu-controller that drives the Terraform objects
the gateway creates, and the Semaphore emulator. `start_gateway(**settings)` builds a runtime with
`build_runtime` (TerraformCluster and SemaphoreClient pointed at the peers, its own engine on the test
database), serves `create_app(runtime)` with its lifespan on (start-up reconcile, watch, periodic
reconcile), and waits until the watch has listed. Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from services.db.engine import make_engine
from services.kubernetes.cluster import TerraformCluster
from services.kubernetes.terraform_object import RECONCILE_ANNOTATION, outputs_secret_name
from services.semaphore.client import SemaphoreClient
from tests.conftest import ORG, Issuer
from tests.peers.kube_api import SECRETS, TERRAFORMS, TF_FINALIZER, ApiError, KubeApiEmulator
from tests.peers.semaphore_api import SemaphoreEmulator
from tests.support.servers import serve

NAMESPACE = "opencsp-instances"
PROJECT_ID = 1
TEMPLATE_ID = 7
ACTIONS_TEMPLATE_ID = 8  # deploy/modules/ansible/actions.yml: day-2 actions (reboot)
WEBHOOK_SECRET = "lifecycle-hint-secret"
USER = "user-1"

INSTANCE_FIELDS = """
    id name status statusReason statusMessage ipAddress hostname version deletedAt activeAt
    powerState task flavor cpu memoryMib diskGib
    events(last: 50) { fromStatus toStatus reason message actor }
"""
# What an admin polls: the public fields and the peer's raw text (internals).
ADMIN_FIELDS = INSTANCE_FIELDS + " statusDetail"


# -- the test-side tofu-controller -------------------------------------------------------------------


@dataclass
class Behaviour:
    """What the controller does with one VM's Terraform object."""

    outcome: Literal["ready", "fail"] = "ready"
    reason: str = "TFExecApplyFailed"
    message: str = "error: creating the VM failed: 500 Internal Server Error"
    outputs: dict[str, Any] | None = None  # None: an address and a hostname made up per VM
    json_strings: bool = False  # write string outputs JSON-encoded with a `__type` key too
    stop_before: int | None = None  # 0: do not touch the object; 1: only mark it Progressing
    finalizer: bool = False  # add tofu-controller's finalizer when the object appears
    release: bool = True  # remove the finalizers of an object being deleted (the VM is destroyed)
    fail_generations: set[int] = field(default_factory=set)  # reconciles of these generations fail


@dataclass
class _Run:
    token: str | None
    generation: int = 1
    stage: int = 0
    next_at: float = 0.0


class TofuController:
    """Reacts to Terraform objects in the emulator as tofu-controller would, one stage per step:
    Ready Unknown/Progressing, then the outputs Secret and Ready True/TerraformOutputsWritten (or
    Ready False with the failure's reason). A new reconcile annotation or a new generation (a spec
    change: `started`, the sizes) starts over; `fail_generations` fails those generations; deletion removes
    the finalizers. Behaviour is chosen per VM name (the object's `name` var), else `default`."""

    def __init__(self, kube: KubeApiEmulator, namespace: str = NAMESPACE, step: float = 0.02) -> None:
        self.kube = kube
        self.namespace = namespace
        self.step = step
        self.default = Behaviour()
        self.behaviours: dict[str, Behaviour] = {}
        self._runs: dict[str, _Run] = {}
        self._addresses: dict[str, str] = {}

    def behave(self, vm_name: str, **changes: Any) -> Behaviour:
        behaviour = self.behaviours.setdefault(vm_name, Behaviour())
        for key, value in changes.items():
            setattr(behaviour, key, value)
        return behaviour

    def outputs_for(self, vm_name: str) -> dict[str, Any]:
        behaviour = self.behaviours.get(vm_name, self.default)
        if behaviour.outputs is not None:
            return behaviour.outputs
        address = self._addresses.setdefault(vm_name, f"10.20.0.{len(self._addresses) + 10}")
        return {"ip_address": address, "hostname": f"{vm_name}.lab.internal"}

    async def run(self) -> None:
        while True:
            for obj in self.kube.list(TERRAFORMS, self.namespace)["items"]:
                with contextlib.suppress(ApiError):  # gone or changed meanwhile: the next pass sees it
                    self._step(obj)
            await asyncio.sleep(0.005)

    def _step(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta["name"]
        vm = vm_name_of(obj)
        behaviour = self.behaviours.get(vm, self.default)
        if meta.get("deletionTimestamp"):
            if behaviour.release and meta.get("finalizers"):
                self.kube.remove_finalizers(self.namespace, name)
            return
        token = (meta.get("annotations") or {}).get(RECONCILE_ANNOTATION)
        generation = meta["generation"]
        run = self._runs.get(meta["uid"])
        if run is None or run.token != token or run.generation != generation:
            run = self._runs[meta["uid"]] = _Run(token, generation)
        now = time.monotonic()
        if run.stage >= 2 or now < run.next_at:
            return
        if behaviour.stop_before is not None and run.stage >= behaviour.stop_before:
            return
        if run.stage == 0:
            if behaviour.finalizer and TF_FINALIZER not in meta.get("finalizers", []):
                self.kube.add_finalizer(self.namespace, name)
            self.kube.set_ready(self.namespace, name, "Unknown", "Progressing", "Reconciliation in progress")
        elif behaviour.outcome == "fail" or generation in behaviour.fail_generations:
            self.kube.set_ready(self.namespace, name, "False", behaviour.reason, behaviour.message)
        else:
            self._write_outputs(obj, self.outputs_for(vm), behaviour.json_strings)
            self.kube.set_ready(self.namespace, name, "True", "TerraformOutputsWritten", "Outputs written")
        if run.stage == 1 and token is not None:  # as tofu-controller records it when a reconcile ends
            patch = json.dumps({"status": {"lastHandledReconcileAt": token}}).encode()
            self.kube.patch(TERRAFORMS, self.namespace, name, patch, "application/merge-patch+json", "status")
        run.stage += 1
        run.next_at = now + self.step

    def _write_outputs(self, obj: dict[str, Any], outputs: dict[str, Any], json_strings: bool) -> None:
        name = obj["metadata"]["name"]
        if not json_strings:
            self.kube.write_outputs(self.namespace, name, outputs)
            return
        data: dict[str, str] = {}
        for key, value in outputs.items():
            data[key] = _b64(json.dumps(value))
            data[f"{key}__type"] = _b64(json.dumps("string" if isinstance(value, str) else "dynamic"))
        secret = obj["spec"]["writeOutputsToSecret"]["name"]
        owner = {"apiVersion": TERRAFORMS.api_version, "kind": TERRAFORMS.kind, "name": name}
        owner |= {"uid": obj["metadata"]["uid"], "controller": True}
        meta = {"name": secret, "namespace": self.namespace, "ownerReferences": [owner]}
        body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}
        self.kube.create(SECRETS, self.namespace, body)


def vm_name_of(obj: dict[str, Any]) -> str:
    variables = (obj.get("spec") or {}).get("vars") or []
    return str(next((v["value"] for v in variables if v.get("name") == "name"), ""))


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Peers:
    kube: KubeApiEmulator
    semaphore: SemaphoreEmulator
    controller: TofuController

    def terraform(self, instance_id: str) -> dict[str, Any] | None:
        return self.kube.object(TERRAFORMS, NAMESPACE, f"inst-{instance_id.replace('-', '')}")

    def secret_name(self, instance_id: str) -> str:
        return outputs_secret_name(uuid.UUID(instance_id))


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    kube = KubeApiEmulator()
    semaphore = SemaphoreEmulator(projects={PROJECT_ID: {TEMPLATE_ID, ACTIONS_TEMPLATE_ID}})
    await asyncio.gather(kube.__aenter__(), semaphore.start())
    semaphore.auto(("starting", "running", "success"), delay=0.01)
    controller = TofuController(kube)
    task = asyncio.create_task(controller.run(), name="tofu-controller")
    try:
        yield Peers(kube, semaphore, controller)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await asyncio.gather(kube.__aexit__(None, None, None), semaphore.stop())  # both at once: faster


# -- the gateway -----------------------------------------------------------------------------------


class GraphQLFailed(AssertionError):
    pass


@dataclass
class Gateway:
    """One served gateway process and a GraphQL client to it."""

    runtime: Runtime
    url: str
    http: httpx.AsyncClient
    issuer: Issuer
    stop: Callable[[], Awaitable[None]]
    _tokens: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def headers(self, role: str = "user", *, sub: str = USER, org: str = ORG) -> dict[str, str]:
        key = (role, sub, org)
        if key not in self._tokens:
            self._tokens[key] = self.issuer.token(role, sub=sub, org=org)
        return {"Authorization": f"Bearer {self._tokens[key]}"}

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        role: str = "user",
        sub: str = USER,
        org: str = ORG,
    ) -> dict[str, Any]:
        """`data` of a request that must have no GraphQL errors."""
        response = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=self.headers(role, sub=sub, org=org),
        )
        body = response.json()
        if response.status_code != 200 or body.get("errors"):
            raise GraphQLFailed(f"{response.status_code}: {body}")
        data: dict[str, Any] = body["data"]
        return data

    async def create(self, name: str, *, sub: str = USER, org: str = ORG, **fields: Any) -> dict[str, Any]:
        """The createInstance payload: `instance` (or null) and `userErrors`."""
        values = {"name": name, "flavor": "small", "image": "debian-12", **fields}
        data = await self.gql(
            f"""mutation($input: CreateInstanceInput!) {{
                  createInstance(input: $input) {{
                    instance {{ {INSTANCE_FIELDS} }}
                    userErrors {{ field message code }}
                  }}
                }}""",
            {"input": values},
            sub=sub,
            org=org,
        )
        payload: dict[str, Any] = data["createInstance"]
        return payload

    async def create_ok(self, name: str, **fields: Any) -> dict[str, Any]:
        payload = await self.create(name, **fields)
        assert payload["userErrors"] == [], payload
        instance: dict[str, Any] = payload["instance"]
        return instance

    async def mutate(self, mutation: str, instance_id: str, *, role: str = "user") -> dict[str, Any]:
        data = await self.gql(
            f"""mutation($id: ID!) {{
                  {mutation}(id: $id) {{
                    instance {{ {INSTANCE_FIELDS} }}
                    userErrors {{ field message code }}
                  }}
                }}""",
            {"id": instance_id},
            role=role,
        )
        payload: dict[str, Any] = data[mutation]
        return payload

    async def delete(self, instance_id: str) -> dict[str, Any]:
        return await self.mutate("deleteInstance", instance_id)

    async def retry(self, instance_id: str) -> dict[str, Any]:
        return await self.mutate("retryInstance", instance_id, role="operator")

    async def instance(self, instance_id: str, fields: str = ADMIN_FIELDS) -> dict[str, Any] | None:
        data = await self.gql(
            f"query($id: ID!) {{ instance(id: $id) {{ {fields} }} }}", {"id": instance_id}, role="admin"
        )
        found: dict[str, Any] | None = data["instance"]
        return found

    async def wait_for_status(self, instance_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Poll over GraphQL until the instance is in `status`; fail with the last state seen."""
        return await self.wait_for(
            instance_id, ADMIN_FIELDS, lambda i: i["status"] == status, timeout, f"reach {status}"
        )

    async def wait_for(
        self,
        instance_id: str,
        fields: str,
        predicate: Callable[[dict[str, Any]], bool],
        timeout: float = 10.0,
        what: str = "satisfy the condition",
    ) -> dict[str, Any]:
        """Poll `fields` of the instance (as an admin) until `predicate` holds; fail with the last seen."""
        last: dict[str, Any] | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await self.instance(instance_id, fields)
                    if last is not None and predicate(last):
                        return last
                    await asyncio.sleep(0.02)
        except TimeoutError:
            pass
        raise AssertionError(f"instance {instance_id} did not {what} in {timeout}s; last: {last}")


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_gateway(
    settings: Settings, engine: AsyncEngine, issuer: Issuer, peers: Peers
) -> AsyncIterator[GatewayFactory]:
    """Start a gateway process (call again for a replica). Settings overrides as keyword arguments;
    `semaphore_timeout` sets the client's per-request timeout, `background=False` runs no watch."""
    stack = contextlib.AsyncExitStack()

    async def factory(
        *, semaphore_timeout: float = 1.0, background: bool = True, **overrides: Any
    ) -> Gateway:
        values = {
            "terraform_namespace": NAMESPACE,
            "webhook_secret": WEBHOOK_SECRET,
            "configuration_timeout_seconds": 20.0,
            "reconcile_interval_seconds": 0.3,
            "semaphore_actions_template_id": ACTIONS_TEMPLATE_ID,
            **overrides,
        }
        changed = Settings(**{**settings.model_dump(), **values, "_env_file": None})
        runner = SemaphoreClient(
            peers.semaphore.url,
            peers.semaphore.token,
            project_id=PROJECT_ID,
            template_id=TEMPLATE_ID,
            timeout=semaphore_timeout,
            attempts=3,
            backoff_base=0.01,
            backoff_max=0.05,
        )
        runtime = await build_runtime(
            changed,
            engine=make_engine(changed.database_url),  # a process of its own, like a replica
            cluster=TerraformCluster.for_host(peers.kube.url),
            runner=runner,
        )
        app = create_app(runtime, own_runtime=True, background=background)
        served = contextlib.AsyncExitStack()
        url = await served.enter_async_context(serve(app))
        http = await served.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30))
        stopped = False

        async def stop() -> None:
            nonlocal stopped
            if not stopped:
                stopped = True
                await served.aclose()

        stack.push_async_callback(stop)
        if background:
            async with asyncio.timeout(10):
                while not runtime.watch_health.connected:
                    await asyncio.sleep(0.01)
        return Gateway(runtime=runtime, url=url, http=http, issuer=issuer, stop=stop)

    async with stack:
        yield factory


@pytest.fixture
async def gateway(start_gateway: GatewayFactory) -> Gateway:
    """One gateway with the default test settings."""
    return await start_gateway()


async def eventually(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait until `predicate()` holds; the timeout only guards against a hang."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"{what} did not hold within {timeout}s") from None


@pytest.fixture(scope="session")
def ssh_key() -> str:
    """A valid OpenSSH public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " user@example"
