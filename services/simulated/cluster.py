"""A cluster in memory with a simulated tofu-controller: dev mode's `Cluster`, no Kubernetes needed.

It keeps what the gateway relies on from the API server: one cluster-wide resourceVersion (Secrets
advance it too), `uid`, `generation` and `creationTimestamp`, the API's name, label and label-selector
rules (shared with the tests' API stand-in in `services.kubernetes.object_rules`), list then watch
from the list's resourceVersion, `410 Gone` for a resourceVersion older than the kept history, and
deletion through the finalizer (deletionTimestamp first, DELETED once the finalizer is gone). Errors are
the classes of `services.kubernetes.errors` the real adapter would raise, with the same HTTP status.

The "controller" is one asyncio task per object, re-run by `request_reconcile`; it writes the Ready
sequence tofu-controller writes for an auto-approved plan: Unknown/Progressing → Unknown/
TerraformPlannedWithChanges → Unknown/TerraformAppliedSucceed → outputs Secret → True/
TerraformOutputsWritten, `step_delay` seconds apart. A VM whose name starts with
`fail_provisioning_prefix` ends in False/TFExecApplyFailed on its first `fail_attempts` attempts
(None: every attempt until `heal`), so a dev user can watch an instance fail and then retry it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from services.kubernetes.errors import (
    ClusterConflict,
    ClusterGone,
    ClusterInvalid,
    ClusterNotFound,
    ClusterUnavailable,
    TerraformConflict,
)
from services.kubernetes.object_rules import (
    LabelMatcher,
    SelectorError,
    is_dns1123_subdomain,
    label_problems,
    parse_selector,
)
from services.kubernetes.outputs import parse_outputs
from services.kubernetes.terraform_object import (
    API_VERSION,
    FINALIZER,
    KIND,
    MANAGED_SELECTOR,
    RECONCILE_ANNOTATION,
    instance_id_of,
)
from services.simulated import tofu_controller_writes as tofu
from services.simulated.failures import FailurePlan

if TYPE_CHECKING:
    from services.instances.ports import Cluster
    from services.kubernetes.watch import WatchSource

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class _Event:
    resource_version: int
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    namespace: str
    obj: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Signal:
    """Not an object change: a bookmark, the end of every stream, or 410 for every stream."""

    kind: Literal["BOOKMARK", "END", "GONE"]
    resource_version: int


_Backlog = list[_Event]


class SimulatedCluster:
    """Terraform objects and their outputs Secrets in memory, reconciled by a simulated tofu-controller."""

    def __init__(
        self,
        *,
        step_delay: float = 1.0,
        fail_provisioning_prefix: str | None = "fail-prov",
        fail_attempts: int | None = 1,
        history_limit: int = 10_000,
        fail_actions_prefix: str | None = "fail-act",
    ) -> None:
        if step_delay < 0 or history_limit < 1:
            raise ValueError("need step_delay >= 0 and history_limit >= 1")
        self.step_delay = step_delay
        self.failures = FailurePlan(fail_provisioning_prefix, fail_attempts)
        # A change of the module variables (start, stop, resize) of a VM with this prefix fails once.
        self.action_failures = FailurePlan(fail_actions_prefix, 1)
        self._objects: dict[Key, dict[str, Any]] = {}
        self._secrets: dict[Key, dict[str, Any]] = {}
        self._rv = 100
        self._history: deque[_Event] = deque()
        self._history_limit = history_limit
        self._compacted = 0  # a watch from below this resourceVersion gets 410 Gone
        self._watchers: set[asyncio.Queue[_Event | _Signal]] = set()
        self._controllers: dict[Key, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- the Cluster port ------------------------------------------------------------------------

    async def close(self) -> None:
        """End every watch stream and cancel every controller task, waiting until they are gone."""
        self._closed = True
        self._broadcast(_Signal("END", self._rv))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> SimulatedCluster:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        what = f"create terraform {namespace}/{name}"
        self._check_open(what)
        existing = self._objects.get((namespace, name))
        if existing is not None:
            if instance_id_of(existing) != instance_id_of(obj):
                raise TerraformConflict(
                    f"terraform {namespace}/{name} belongs to another instance", status=409
                )
            return copy.deepcopy(existing)
        created = self._admit(obj, what)
        self._commit("ADDED", created)
        self._run_controller((namespace, name), self._reconcile)
        return copy.deepcopy(created)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        self._check_open(f"get terraform {namespace}/{name}")
        obj = self._objects.get((namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def delete(self, namespace: str, name: str) -> None:
        """Ask for deletion: with the finalizer set, the controller destroys first. Already gone is fine."""
        self._check_open(f"delete terraform {namespace}/{name}")
        key = (namespace, name)
        obj = self._objects.get(key)
        if obj is None or "deletionTimestamp" in obj["metadata"]:
            return
        if not obj["metadata"].get("finalizers"):
            self._commit("DELETED", copy.deepcopy(obj))
            self._stop_controller(key)
            return

        def mark(o: dict[str, Any]) -> None:
            o["metadata"] |= {"deletionTimestamp": tofu.now(), "deletionGracePeriodSeconds": 0}
            o["metadata"]["generation"] += 1  # as the API server does for custom resources

        self._update(key, mark, while_deleting=True)
        self._run_controller(key, self._finalize)

    async def request_reconcile(self, namespace: str, name: str) -> None:
        """Set `reconcile.fluxcd.io/requestedAt`, as `flux reconcile` does; the controller runs again.
        A missing object is ClusterNotFound (404); an object being deleted only gets the annotation."""
        what = f"patch terraform {namespace}/{name}"
        self._check_open(what)
        key = (namespace, name)
        obj = self._objects.get(key)
        if obj is None:
            raise ClusterNotFound(f"{what}: 404 Not Found", status=404)
        requested_at = tofu.requested_at()

        def annotate(o: dict[str, Any]) -> None:
            o["metadata"].setdefault("annotations", {})[RECONCILE_ANNOTATION] = requested_at

        self._update(key, annotate, while_deleting=True)
        if "deletionTimestamp" not in obj["metadata"]:
            self._run_controller(key, self._reconcile)

    async def patch_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """A merge patch of `metadata.labels` (None removes a key), refused as the API server refuses
        invalid labels; labels are metadata, so the generation does not move."""
        what = f"patch terraform {namespace}/{name}"
        self._check_open(what)
        key = (namespace, name)
        if key not in self._objects:
            raise ClusterNotFound(f"{what}: 404 Not Found", status=404)
        problems = label_problems({k: v for k, v in labels.items() if v is not None})
        if problems:
            raise ClusterInvalid(f"{what}: 422 Unprocessable Entity ({'; '.join(problems)})", status=422)

        def relabel(o: dict[str, Any]) -> None:
            current = o["metadata"].setdefault("labels", {})
            for k, v in labels.items():
                if v is None:
                    current.pop(k, None)
                else:
                    current[k] = v

        self._update(key, relabel, while_deleting=True)

    async def set_vars(
        self, namespace: str, name: str, variables: list[dict[str, Any]], *, resource_version: str
    ) -> dict[str, Any]:
        """Replace `spec.vars` if the object is still at `resource_version` (else 409, as the API server
        answers a merge patch carrying a stale one). A spec change is a new generation, which the
        controller plans and applies: new generation → plan → apply → Ready, observedGeneration caught up."""
        what = f"patch terraform {namespace}/{name}"
        self._check_open(what)
        key = (namespace, name)
        obj = self._objects.get(key)
        if obj is None:
            raise ClusterNotFound(f"{what}: 404 Not Found", status=404)
        if obj["metadata"].get("resourceVersion") != resource_version:
            raise ClusterConflict(f"{what}: 409 Conflict (the object has been modified)", status=409)
        if obj["spec"].get("vars") == variables:
            return copy.deepcopy(obj)

        def change(o: dict[str, Any]) -> None:
            o["spec"]["vars"] = copy.deepcopy(variables)
            o["metadata"]["generation"] += 1

        if not self._update(key, change):
            raise ClusterConflict(f"{what}: 409 Conflict (the object is being deleted)", status=409)
        if "deletionTimestamp" not in obj["metadata"]:
            self._run_controller(key, self._reconcile_change)
        return copy.deepcopy(self._objects[key])

    async def read_outputs(self, namespace: str, secret_name: str) -> dict[str, Any] | None:
        self._check_open(f"read secret {namespace}/{secret_name}")
        secret = self._secrets.get((namespace, secret_name))
        return parse_outputs(secret.get("data")) if secret is not None else None

    async def list(
        self, label_selector: str = MANAGED_SELECTOR, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        self._check_open("list terraforms")
        matches = _selector(label_selector, "list terraforms")
        items = [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self._objects.items())
            if namespace in (None, ns) and matches(obj["metadata"].get("labels") or {})
        ]
        return items, str(self._rv)

    async def watch(
        self,
        *,
        resource_version: str,
        label_selector: str = MANAGED_SELECTOR,
        namespace: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Events `{type, object}` after `resource_version` ("" or "0": the current objects as ADDED
        first), bookmarks included, until `timeout_seconds` pass or `close()`. ClusterGone (410) when the
        resourceVersion is older than the kept history."""
        self._check_open("watch terraforms")
        matches = _selector(label_selector, "watch terraforms")
        backlog = self._backlog(resource_version)
        queue: asyncio.Queue[_Event | _Signal] = asyncio.Queue()
        self._watchers.add(queue)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        try:
            for item in backlog:
                if namespace in (None, item.namespace) and matches(_labels(item.obj)):
                    yield {"type": item.type, "object": copy.deepcopy(item.obj)}
            while True:
                try:
                    async with asyncio.timeout_at(deadline):  # unlike wait_for, no extra task per wait
                        queued = await queue.get()
                except TimeoutError:
                    return
                if isinstance(queued, _Event):
                    if namespace in (None, queued.namespace) and matches(_labels(queued.obj)):
                        yield {"type": queued.type, "object": copy.deepcopy(queued.obj)}
                elif queued.kind == "BOOKMARK":
                    meta = {"resourceVersion": str(queued.resource_version)}
                    yield {
                        "type": "BOOKMARK",
                        "object": {"apiVersion": API_VERSION, "kind": KIND, "metadata": meta},
                    }
                elif queued.kind == "GONE":
                    raise ClusterGone("watch terraforms: 410 Gone (too old resource version)", status=410)
                else:
                    return
        finally:
            self._watchers.discard(queue)

    # -- test and dev controls -------------------------------------------------------------------

    def heal(self, name: str) -> None:
        """Let the next provisioning of `name` (VM name, object name or instance id) succeed."""
        self.failures.heal(name)

    @property
    def resource_version(self) -> str:
        return str(self._rv)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    @property
    def running_controllers(self) -> int:
        return sum(not task.done() for task in self._tasks)

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored Secret as the API would return it (base64 `data`)."""
        secret = self._secrets.get((namespace, name))
        return copy.deepcopy(secret) if secret is not None else None

    def compact(self) -> None:
        """Forget the history, as etcd compaction does: older resourceVersions become 410 Gone."""
        self._compacted = self._rv
        self._history.clear()

    def expire_watches(self) -> None:
        """Every open stream fails with 410, as a lagging watch cache makes it."""
        self._broadcast(_Signal("GONE", self._rv))

    def emit_bookmark(self) -> None:
        self._broadcast(_Signal("BOOKMARK", self._rv))

    # -- the simulated tofu-controller -----------------------------------------------------------

    async def _reconcile_change(self, key: Key) -> None:
        await self._reconcile(key, self.action_failures)

    async def _reconcile(self, key: Key, failures: FailurePlan | None = None) -> None:
        obj = self._objects.get(key)
        if obj is None or "deletionTimestamp" in obj["metadata"]:
            return
        fails = (failures or self.failures).next_attempt_fails(
            tofu.vm_name_of(obj), key=tofu.instance_key_of(obj), aliases=(obj["metadata"]["name"],)
        )
        start, steps = tofu.reconcile_steps(obj, fails=fails)
        if not self._update(key, start):
            return
        for step in steps:
            if step is not None:
                await asyncio.sleep(self.step_delay)
                if not self._update(key, step):
                    return
            elif (current := self._objects.get(key)) is not None and (secret := tofu.outputs_secret(current)):
                self._put_secret(secret)

    async def _finalize(self, key: Key) -> None:
        await asyncio.sleep(self.step_delay)
        self._update(key, tofu.destroying, while_deleting=True)
        await asyncio.sleep(self.step_delay)
        obj = self._objects.get(key)
        if obj is None:
            return
        if secret := tofu.outputs_secret(obj):
            self._drop_secret((secret["metadata"]["namespace"], secret["metadata"]["name"]))
        final = copy.deepcopy(obj)
        final["metadata"]["finalizers"] = [f for f in final["metadata"]["finalizers"] if f != FINALIZER]
        if final["metadata"]["finalizers"]:
            self._commit("MODIFIED", final)  # another finalizer still holds the object
        else:
            final["metadata"].pop("finalizers")
            self._commit("DELETED", final)

    def _run_controller(self, key: Key, work: Callable[[Key], Coroutine[Any, Any, None]]) -> None:
        """One controller task per object: a new run replaces the one in flight."""
        self._stop_controller(key)
        task = asyncio.get_running_loop().create_task(work(key), name=f"simulated-tofu {key[0]}/{key[1]}")
        self._controllers[key] = task
        self._tasks.add(task)

        def forget(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            if self._controllers.get(key) is done:
                del self._controllers[key]
            if not done.cancelled() and (error := done.exception()) is not None:
                logger.error("simulated tofu-controller failed on %s/%s", *key, exc_info=error)

        task.add_done_callback(forget)

    def _stop_controller(self, key: Key) -> None:
        task = self._controllers.pop(key, None)
        if task is not None:
            task.cancel()  # it only ever waits in sleep, so it stops between two writes

    # -- storage ---------------------------------------------------------------------------------

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise ClusterUnavailable(f"{what}: the simulated cluster is closed")

    def _admit(self, obj: dict[str, Any], what: str) -> dict[str, Any]:
        """The API server's part of a create: validate, drop what clients may not set, fill the rest."""
        if obj.get("apiVersion") != API_VERSION or obj.get("kind") != KIND:
            raise ClusterInvalid(f"{what}: 400 Bad Request (not a {KIND} of {API_VERSION})", status=400)
        created = copy.deepcopy(obj)
        meta = created["metadata"]
        labels = meta.get("labels") or {}
        problems = label_problems(labels) if isinstance(labels, dict) else ["metadata.labels is not a map"]
        if not is_dns1123_subdomain(meta["name"]):
            problems.insert(0, "metadata.name is invalid")
        if problems:
            raise ClusterInvalid(f"{what}: 422 Unprocessable Entity ({'; '.join(problems)})", status=422)
        for field in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "finalizers"):
            meta.pop(field, None)
        meta |= {"uid": _uuid(), "creationTimestamp": tofu.now(), "generation": 1}
        created["status"] = {"observedGeneration": -1}  # the CRD's default; clients cannot set status
        return created

    def _update(self, key: Key, mutate: tofu.Mutation, *, while_deleting: bool = False) -> bool:
        """Apply `mutate` to the stored object; False when it is gone (or being deleted, unless allowed)."""
        obj = self._objects.get(key)
        if obj is None or ("deletionTimestamp" in obj["metadata"] and not while_deleting):
            return False
        changed = copy.deepcopy(obj)
        changed.setdefault("status", {})
        mutate(changed)
        if changed != obj:
            self._commit("MODIFIED", changed)
        return True

    def _commit(self, kind: Literal["ADDED", "MODIFIED", "DELETED"], obj: dict[str, Any]) -> None:
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta["namespace"], meta["name"])
        if kind == "DELETED":
            self._objects.pop(key, None)
            for secret_key, secret in list(self._secrets.items()):  # garbage-collect owned Secrets
                if any(
                    ref.get("uid") == meta["uid"] for ref in secret["metadata"].get("ownerReferences", [])
                ):
                    self._drop_secret(secret_key)
        else:
            self._objects[key] = obj
        event = _Event(self._rv, kind, meta["namespace"], copy.deepcopy(obj))
        self._history.append(event)
        while len(self._history) > self._history_limit:
            self._compacted = self._history.popleft().resource_version
        self._broadcast(event)

    def _put_secret(self, secret: dict[str, Any]) -> None:
        meta = secret["metadata"]
        key = (meta["namespace"], meta["name"])
        old = self._secrets.get(key)
        self._rv += 1
        meta |= {"resourceVersion": str(self._rv), "uid": old["metadata"]["uid"] if old else _uuid()}
        meta["creationTimestamp"] = old["metadata"]["creationTimestamp"] if old else tofu.now()
        self._secrets[key] = secret

    def _drop_secret(self, key: Key) -> None:
        if self._secrets.pop(key, None) is not None:
            self._rv += 1

    def _backlog(self, resource_version: str) -> _Backlog:
        if resource_version in ("", "0"):  # "any": start with the current state, as synthetic ADDED
            return [
                _Event(self._rv, "ADDED", ns, copy.deepcopy(o))
                for (ns, _), o in sorted(self._objects.items())
            ]
        try:
            start = int(resource_version)
        except ValueError:
            raise ClusterInvalid(
                f"watch terraforms: 400 Bad Request ({resource_version!r})", status=400
            ) from None
        if start < self._compacted:
            raise ClusterGone(f"watch terraforms: 410 Gone (too old resource version: {start})", status=410)
        return [event for event in self._history if event.resource_version > start]

    def _broadcast(self, item: _Event | _Signal) -> None:
        for queue in self._watchers:
            queue.put_nowait(item)


def _selector(text: str, what: str) -> LabelMatcher:
    try:
        return parse_selector(text)
    except SelectorError as exc:
        raise ClusterInvalid(
            f"{what}: 400 Bad Request (unable to parse requirement: {exc})", status=400
        ) from None


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    labels = obj["metadata"].get("labels") or {}
    return labels if isinstance(labels, dict) else {}


def _uuid() -> str:
    return str(uuid.uuid4())


if TYPE_CHECKING:

    def _is_a_cluster(cluster: SimulatedCluster) -> tuple[Cluster, WatchSource]:
        return cluster, cluster
