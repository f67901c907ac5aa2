"""An in-process Kubernetes API server for tests: `Terraform` objects and `Secret`s over real HTTP.

Why: the gateway's cluster code must be tested against the API's own rules (a cluster-wide
resourceVersion, list-then-watch, `410 Gone`, finalizers and deletionTimestamp, merge patches, the
status subresource, CRD schema validation) with the real kubernetes_asyncio client, without a cluster.
Only what the gateway touches is modelled. State lives in memory; uvicorn serves it on 127.0.0.1 inside
the test's own event loop, so the test-side "tofu-controller" helpers (`set_ready`, `write_outputs`)
change objects synchronously and watchers see the same ordered event stream a real API would send.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import json
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import uvicorn
import yaml
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

JSON = dict[str, Any]
ASGISend = Callable[[JSON], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[JSON]]

CONTRACTS = Path(__file__).resolve().parents[2].parent / "shared" / "contracts"
CRD_PATH = CONTRACTS / "tofu-controller" / "infra.contrib.fluxcd.io_terraforms.yaml"
TF_FINALIZER = "finalizers.tf.contrib.fluxcd.io"


@dataclass(frozen=True)
class Resource:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    has_status: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


TERRAFORMS = Resource("infra.contrib.fluxcd.io", "v1alpha2", "terraforms", "Terraform", has_status=True)
SECRETS = Resource("", "v1", "secrets", "Secret", has_status=False)
_RESOURCES = {(r.api_version, r.plural): r for r in (TERRAFORMS, SECRETS)}
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


@functools.cache
def load_terraform_schema(path: Path = CRD_PATH) -> JSON | None:
    """The CRD's v1alpha2 openAPIV3Schema, or None when the shared contracts are not checked out.
    Cached: the CRD is large and only ever read."""
    if not path.exists():
        return None
    crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    version = next(v for v in crd["spec"]["versions"] if v["name"] == TERRAFORMS.version)
    schema: JSON = version["schema"]["openAPIV3Schema"]
    return schema


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: JSON | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> JSON:
        body: JSON = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        body |= {"message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            body["details"] = self.details
        return body


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- label selectors -------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^(?P<neg>!)?(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)"
    r"(?:\s*(?P<op>==|=|!=)\s*(?P<val>[-A-Za-z0-9_.]*)|\s+(?P<setop>in|notin)\s*\((?P<vals>[^)]*)\))?$"
)


def parse_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """Equality- and set-based label selectors, comma meaning AND, as the API server reads them."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for part in filter(None, (p.strip() for p in re.split(r",(?![^()]*\))", text))):
        m = _REQUIREMENT.match(part)
        if not m or (m["neg"] and (m["op"] or m["setop"])):
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        key, op = m["key"], m["op"] or m["setop"]
        values = {m["val"]} if m["op"] else {v.strip() for v in (m["vals"] or "").split(",")}
        if m["neg"]:
            checks.append(lambda labels, k=key: k not in labels)
        elif op is None:
            checks.append(lambda labels, k=key: k in labels)
        elif op in ("=", "==", "in"):
            checks.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
        else:  # != and notin also match objects without the key
            checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
    return lambda labels: all(check(labels) for check in checks)


# --- patches and schema ----------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(doc: Any, ops: list[JSON]) -> Any:
    """RFC 6902 add/remove/replace/test, enough for finalizer and label edits."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node = doc
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        kind = op["op"]
        if kind == "test" and (node[int(last)] if isinstance(node, list) else node.get(last)) != op["value"]:
            raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if kind == "remove" or kind == "replace":
                node.pop(index)
            if kind in ("add", "replace"):
                node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "remove":
            node.pop(last)
        elif kind in ("add", "replace"):
            node[last] = copy.deepcopy(op["value"])
    return doc


def _prune_and_default(value: Any, schema: JSON) -> None:
    """Drop fields the structural schema does not know and fill defaults, as the API server does."""
    if isinstance(value, dict):
        props: JSON = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        if props and not additional and not schema.get("x-kubernetes-preserve-unknown-fields"):
            for key in [k for k in value if k not in props and k != "metadata"]:
                del value[key]
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _prune_and_default(value[key], sub)
        if isinstance(additional, dict):
            for key in value.keys() - props.keys():
                _prune_and_default(value[key], additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _prune_and_default(item, schema["items"])


def _cty_type(value: Any) -> Any:
    """The type tofu reports in `output -json` for a plain value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return ["tuple", [_cty_type(v) for v in value]]
    if isinstance(value, dict):
        return ["object", {k: _cty_type(v) for k, v in value.items()}]
    return "dynamic"


# --- watch plumbing --------------------------------------------------------------------------


@dataclass
class _Event:
    rv: int
    resource: Resource
    namespace: str
    type: str
    obj: JSON
    old: JSON | None = None


_DROP, _END, _GONE = "drop", "end", "gone"


@dataclass(eq=False)
class _Watcher:
    resource: Resource
    namespace: str | None
    matches: Callable[[Mapping[str, str]], bool]
    bookmarks: bool
    queue: asyncio.Queue[_Event | tuple[str, int]] = field(default_factory=asyncio.Queue)

    def render(self, item: _Event | tuple[str, int]) -> bytes | None:
        if isinstance(item, tuple):
            if item[0] == _GONE:
                status = ApiError(410, "Expired", f"too old resource version: {item[1]}").status()
                return _line({"type": "ERROR", "object": status})
            if not self.bookmarks:
                return None
            meta = {"resourceVersion": str(item[1])}
            obj = {"kind": self.resource.kind, "apiVersion": self.resource.api_version, "metadata": meta}
            return _line({"type": "BOOKMARK", "object": obj})
        if item.resource != self.resource or self.namespace not in (None, item.namespace):
            return None
        now = self.matches(item.obj["metadata"].get("labels", {}))
        before = item.old is not None and self.matches(item.old["metadata"].get("labels", {}))
        kind = item.type
        if kind == "MODIFIED" and now != before:  # the object moved into or out of the selection
            kind = "ADDED" if now else "DELETED"
        return _line({"type": kind, "object": item.obj}) if now or before else None


def _line(event: JSON) -> bytes:
    return json.dumps(event).encode() + b"\n"


class _StreamCut(Exception):
    """Raised mid-response so uvicorn drops the connection without the final chunk."""


@dataclass
class _Fault:
    path: str
    method: str | None
    remaining: int
    code: int


class KubeApiEmulator:
    """The API server. `async with KubeApiEmulator() as api:` then point a client at `api.url`."""

    def __init__(self, *, terraform_schema: JSON | None = None, gone_as_http: bool = False) -> None:
        self.schema = terraform_schema if terraform_schema is not None else load_terraform_schema()
        self.gone_as_http = gone_as_http  # answer a too-old watch with HTTP 410 instead of an ERROR event
        self.requests: list[tuple[str, str]] = []
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._history: list[_Event] = []
        self._rv = 100
        self._compacted = 0
        self._watchers: set[_Watcher] = set()
        self._faults: list[_Fault] = []
        self._validator = jsonschema.Draft7Validator(self.schema) if self.schema else None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # --- lifecycle ---

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> KubeApiEmulator:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self, interface="asgi3", lifespan="off", log_level="critical", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.end_watches()
        assert self._server is not None
        assert self._task is not None
        self._server.should_exit = True
        await self._task

    # --- test controls ---

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    async def wait_for_watches(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self._watchers) != count:
                await asyncio.sleep(0.005)

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: older resourceVersions become 410 Gone."""
        self._compacted = self._rv
        self._history.clear()

    def drop_watches(self) -> None:
        """Cut every open watch stream mid-flight (connection closed, no final chunk)."""
        self._broadcast((_DROP, self._rv))

    def end_watches(self) -> None:
        """End every open watch stream cleanly, as the server-side timeout does."""
        self._broadcast((_END, self._rv))

    def expire_watches(self) -> None:
        """Send `ERROR 410 Expired` to every open watch, as a lagging watch cache does."""
        self._broadcast((_GONE, self._rv))

    def emit_bookmark(self) -> None:
        self._broadcast(("BOOKMARK", self._rv))

    def fail_next(self, count: int, *, path: str, method: str | None = None, code: int = 500) -> None:
        """The next `count` requests on exactly `path` (and `method`, if given) answer `code`."""
        self._faults.append(_Fault(path, method, count, code))

    @staticmethod
    def collection_path(resource: Resource, namespace: str) -> str:
        prefix = f"/apis/{resource.api_version}" if resource.group else f"/api/{resource.version}"
        return f"{prefix}/namespaces/{namespace}/{resource.plural}"

    def _broadcast(self, item: tuple[str, int]) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(item)

    # --- direct manipulation (the test-side tofu-controller) ---

    def object(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        obj = self._objects.get((resource.plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def modify(self, resource: Resource, namespace: str, name: str, mutate: Callable[[JSON], None]) -> JSON:
        """Apply `mutate` to a copy and store it through the normal update rules (main resource)."""
        new = self._require(resource, namespace, name)
        mutate(new)
        return self._update(resource, new, subresource=None)

    def set_ready(
        self,
        namespace: str,
        name: str,
        status: str,
        reason: str,
        message: str = "",
        *,
        observed_generation: int | None = None,
    ) -> JSON:
        """Write the Ready condition the way tofu-controller's SetTerraformReadiness does."""
        obj = self._require(TERRAFORMS, namespace, name)
        st = obj.setdefault("status", {})
        conditions = [c for c in st.get("conditions", []) if c["type"] != "Ready"]
        old = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), None)
        changed = old is None or old["status"] != status
        ready = {"type": "Ready", "status": status, "reason": reason, "message": message}
        ready["lastTransitionTime"] = _now() if changed or old is None else old["lastTransitionTime"]
        st["conditions"] = [*conditions, ready]
        generation = obj["metadata"]["generation"]
        st["observedGeneration"] = generation if observed_generation is None else observed_generation
        return self._update(TERRAFORMS, obj, subresource="status")

    def write_outputs(self, namespace: str, name: str, outputs: Mapping[str, Any]) -> JSON:
        """Write the outputs Secret of Terraform `name` as tofu-controller's writeOutput does."""
        tf = self._require(TERRAFORMS, namespace, name)
        spec = tf["spec"]["writeOutputsToSecret"]
        wanted = spec.get("outputs") or list(outputs)
        data: dict[str, str] = {}
        for key in wanted:
            value = outputs[key]
            if isinstance(value, str):
                data[key] = base64.b64encode(value.encode()).decode()
            else:
                data[key] = _b64json(value)
                data[f"{key}__type"] = _b64json(_cty_type(value))
        owner = {"apiVersion": TERRAFORMS.api_version, "kind": TERRAFORMS.kind, "name": name}
        owner |= {"uid": tf["metadata"]["uid"], "controller": True}
        meta = {"name": spec["name"], "namespace": namespace, "labels": spec.get("labels", {})}
        meta["ownerReferences"] = [owner]
        existing = self._objects.get((SECRETS.plural, namespace, spec["name"]))
        if existing is None:
            body = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "data": data}
            return self.create(SECRETS, namespace, body)
        return self.modify(SECRETS, namespace, spec["name"], lambda s: s.update(data=data))

    def add_finalizer(self, namespace: str, name: str, finalizer: str = TF_FINALIZER) -> JSON:
        return self.modify(
            TERRAFORMS,
            namespace,
            name,
            lambda o: o["metadata"].setdefault("finalizers", []).append(finalizer),
        )

    def remove_finalizers(self, namespace: str, name: str) -> JSON:
        return self.modify(TERRAFORMS, namespace, name, lambda o: o["metadata"].pop("finalizers", None))

    # --- the API's rules ---

    def create(self, resource: Resource, namespace: str, body: JSON) -> JSON:
        obj = copy.deepcopy(body)
        self._check_type(resource, obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name", "")
        if meta.setdefault("namespace", namespace) != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match")
        self._check_meta(resource, name, meta)
        if (resource.plural, namespace, name) in self._objects:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{resource.qualified} "{name}" already exists',
                self._details(resource, name),
            )
        for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion"):
            meta.pop(key, None)
        meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": _now()}
        if resource.group:
            meta["generation"] = 1
        if resource.has_status:
            obj.pop("status", None)  # status is written through /status only
        self._normalize(resource, obj)
        return self._commit("ADDED", resource, obj, None)

    def get(self, resource: Resource, namespace: str, name: str) -> JSON:
        return self._require(resource, namespace, name)

    def list(self, resource: Resource, namespace: str | None, selector: str = "") -> JSON:
        matches = parse_selector(selector)
        items = [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in sorted(self._objects.items())
            if plural == resource.plural
            and namespace in (None, ns)
            and matches(obj["metadata"].get("labels", {}))
        ]
        meta = {"resourceVersion": str(self._rv)}
        return {
            "apiVersion": resource.api_version,
            "kind": f"{resource.kind}List",
            "metadata": meta,
            "items": items,
        }

    def replace(
        self, resource: Resource, namespace: str, name: str, body: JSON, subresource: str | None
    ) -> JSON:
        old = self._require(resource, namespace, name)
        new = copy.deepcopy(body)
        self._check_type(resource, new)
        if new.get("metadata", {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        return self._update(resource, new, subresource, expected=old)

    def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        raw: bytes,
        content_type: str,
        subresource: str | None,
    ) -> JSON:
        old = self._require(resource, namespace, name)
        try:
            patch = json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"invalid JSON patch body: {exc}") from exc
        kind = content_type.split(";")[0].strip()
        if kind == "application/merge-patch+json" or (
            kind.startswith("application/strategic") and not resource.group
        ):
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(old, patch)
        elif kind == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(
                    400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
                )
            try:
                new = json_patch(old, patch)
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise ApiError(422, "Invalid", f"json patch failed: {exc!r}") from exc
        else:
            raise ApiError(415, "UnsupportedMediaType", f"the media type {kind!r} is not supported here")
        expected = (
            old if new["metadata"].get("resourceVersion") != old["metadata"]["resourceVersion"] else None
        )
        return self._update(resource, new, subresource, expected=expected)

    def delete(self, resource: Resource, namespace: str, name: str) -> JSON:
        obj = self._require(resource, namespace, name)
        meta = obj["metadata"]
        if meta.get("finalizers"):
            if "deletionTimestamp" not in meta:
                meta |= {"deletionTimestamp": _now(), "deletionGracePeriodSeconds": 0}
                if resource.group:
                    meta["generation"] += 1
                obj = self._commit("MODIFIED", resource, obj, self.object(resource, namespace, name))
            return obj
        self._commit("DELETED", resource, obj, None)
        details = self._details(resource, name) | {"uid": meta["uid"]}
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _update(
        self, resource: Resource, new: JSON, subresource: str | None, expected: JSON | None = None
    ) -> JSON:
        meta = new.setdefault("metadata", {})
        old = self._require(resource, meta.get("namespace", ""), meta.get("name", ""))
        if expected is not None and meta.get("resourceVersion") not in (
            None,
            old["metadata"]["resourceVersion"],
        ):
            msg = f'Operation cannot be fulfilled on {resource.qualified} "{old["metadata"]["name"]}": '
            raise ApiError(409, "Conflict", msg + _MODIFIED)
        if subresource == "status":
            result = copy.deepcopy(old)
            result.pop("status", None)
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = new
            fixed = ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation")
            for key in (*fixed, "deletionGracePeriodSeconds"):
                result["metadata"].pop(key, None)
                if key in old["metadata"]:
                    result["metadata"][key] = old["metadata"][key]
            if resource.has_status:
                result.pop("status", None)
                if "status" in old:
                    result["status"] = old["status"]
            added = set(result["metadata"].get("finalizers", [])) - set(old["metadata"].get("finalizers", []))
            if "deletionTimestamp" in old["metadata"] and added:
                msg = "metadata.finalizers: Forbidden: no new finalizers can be added while being deleted"
                raise ApiError(422, "Invalid", msg)
            self._check_meta(resource, old["metadata"]["name"], result["metadata"])
        self._normalize(resource, result)
        result["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if result == old:
            return old  # a no-op write changes nothing, not even the resourceVersion
        if resource.group and _spec_of(result) != _spec_of(old):
            result["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if "deletionTimestamp" in result["metadata"] and not result["metadata"].get("finalizers"):
            self._commit("DELETED", resource, result, None)
            return result
        return self._commit("MODIFIED", resource, result, old)

    def _normalize(self, resource: Resource, obj: JSON) -> None:
        if resource is SECRETS:
            data = obj.get("data") or {}
            for key, value in (obj.pop("stringData", None) or {}).items():
                data[key] = base64.b64encode(str(value).encode()).decode()
            for key, value in data.items():
                if not _SECRET_KEY.match(key):
                    msg = f"data[{key}]: Invalid value: a config key must be alphanumerics, '-', '_' or '.'"
                    raise ApiError(422, "Invalid", msg)
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, TypeError) as exc:
                    raise ApiError(400, "BadRequest", f"illegal base64 data in data[{key}]") from exc
            if data:
                obj["data"] = data
            obj.setdefault("type", "Opaque")
        elif resource is TERRAFORMS and self.schema is not None and self._validator is not None:
            _prune_and_default(obj, self.schema)
            errors = sorted(self._validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
            if errors:
                causes = [
                    {"field": ".".join(map(str, e.absolute_path)), "message": e.message} for e in errors
                ]
                text = ", ".join(f"{c['field']}: Invalid value: {c['message']}" for c in causes)
                name = obj["metadata"].get("name", "")
                details = self._details(resource, name) | {"causes": causes}
                raise ApiError(
                    422, "Invalid", f'{resource.kind}.{resource.group} "{name}" is invalid: {text}', details
                )

    def _commit(self, kind: str, resource: Resource, obj: JSON, old: JSON | None) -> JSON:
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (resource.plural, meta["namespace"], meta["name"])
        if kind == "DELETED":
            self._objects.pop(key, None)
        else:
            self._objects[key] = copy.deepcopy(obj)
        event = _Event(self._rv, resource, meta["namespace"], kind, copy.deepcopy(obj), old)
        self._history.append(event)
        for watcher in self._watchers:
            watcher.queue.put_nowait(event)
        if kind == "DELETED":  # garbage-collect dependents, e.g. the outputs Secret
            for (plural, ns, name), dep in list(self._objects.items()):
                if any(o.get("uid") == meta["uid"] for o in dep["metadata"].get("ownerReferences", [])):
                    self.delete(_RESOURCES[(dep["apiVersion"], plural)], ns, name)
        return copy.deepcopy(obj)

    def _require(self, resource: Resource, namespace: str, name: str) -> JSON:
        obj = self.object(resource, namespace, name)
        if obj is None:
            raise ApiError(
                404, "NotFound", f'{resource.qualified} "{name}" not found', self._details(resource, name)
            )
        return obj

    @staticmethod
    def _details(resource: Resource, name: str) -> JSON:
        return {"name": name, "group": resource.group, "kind": resource.plural}

    @staticmethod
    def _check_type(resource: Resource, obj: JSON) -> None:
        if obj.get("apiVersion") != resource.api_version or obj.get("kind") != resource.kind:
            raise ApiError(400, "BadRequest", f"the body is not a {resource.kind} of {resource.api_version}")

    @staticmethod
    def _check_meta(resource: Resource, name: str, meta: JSON) -> None:
        problems = []
        if not name or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            problems.append(
                f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required"
            )
        for key, value in (meta.get("labels") or {}).items():
            prefix, _, short = key.rpartition("/")
            if (
                (prefix and not _DNS_SUBDOMAIN.match(prefix))
                or not short
                or len(short) > 63
                or not _LABEL_VALUE.match(short)
            ):
                problems.append(f"metadata.labels: Invalid value: {key!r}: not a valid label key")
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                problems.append(f"metadata.labels: Invalid value: {value!r}: not a valid label value")
        if problems:
            raise ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {"; ".join(problems)}')

    # --- HTTP ---

    async def __call__(self, scope: JSON, receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        self.requests.append(
            (request.method, request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        )
        try:
            result = await self._dispatch(request)
        except ApiError as exc:
            result = JSONResponse(exc.status(), status_code=exc.code)
        if isinstance(result, Response):
            await result(scope, receive, send)
        else:
            await self._stream(*result, receive, send)

    async def _dispatch(self, request: Request) -> Response | tuple[_Watcher, list[Any], float | None]:
        path, method = request.url.path, request.method
        for fault in self._faults:
            if fault.remaining > 0 and fault.path == path and fault.method in (None, method):
                fault.remaining -= 1
                raise ApiError(fault.code, "InternalError", "an injected fault")
        m = _PATH.match(path)
        resource = (
            _RESOURCES.get(("v1" if m["core"] else f"{m['group']}/{m['version']}", m["plural"]))
            if m
            else None
        )
        if m is None or resource is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name, sub = m["ns"], m["name"], m["sub"]
        if sub and not resource.has_status:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET" and request.query_params.get("watch") in ("true", "1"):
                return self._open_watch(resource, ns, request.query_params)
            if method == "GET":
                return JSONResponse(self.list(resource, ns, request.query_params.get("labelSelector", "")))
            if method == "POST" and ns:
                return JSONResponse(self.create(resource, ns, await _json_body(request)), status_code=201)
        elif ns and method == "GET":
            return JSONResponse(self.get(resource, ns, name))
        elif ns and method == "PUT":
            return JSONResponse(self.replace(resource, ns, name, await _json_body(request), sub))
        elif ns and method == "PATCH":
            ctype = request.headers.get("content-type", "")
            return JSONResponse(self.patch(resource, ns, name, await request.body(), ctype, sub))
        elif ns and method == "DELETE" and not sub:
            return JSONResponse(self.delete(resource, ns, name))
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on {path}")

    def _open_watch(
        self, resource: Resource, namespace: str | None, params: Mapping[str, str]
    ) -> tuple[_Watcher, list[Any], float | None]:
        matches = parse_selector(params.get("labelSelector", ""))
        watcher = _Watcher(resource, namespace, matches, params.get("allowWatchBookmarks") in ("true", "1"))
        since = params.get("resourceVersion", "")
        backlog: list[Any]
        if since in ("", "0"):  # "start at most recent": synthetic ADDED for what exists now
            listed = self.list(resource, namespace, params.get("labelSelector", ""))["items"]
            backlog = [_Event(self._rv, resource, o["metadata"]["namespace"], "ADDED", o) for o in listed]
        else:
            try:
                start = int(since)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
            if start < self._compacted:
                if self.gone_as_http:
                    raise ApiError(410, "Expired", f"too old resource version: {start} ({self._compacted})")
                backlog = [(_GONE, start)]
            else:
                backlog = [e for e in self._history if e.rv > start]
        self._watchers.add(watcher)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        return watcher, backlog, timeout

    async def _stream(
        self,
        watcher: _Watcher,
        backlog: list[Any],
        timeout: float | None,
        receive: ASGIReceive,
        send: ASGISend,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        disconnected = asyncio.ensure_future(_wait_disconnect(receive))
        headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            for item in backlog:
                if (line := watcher.render(item)) is not None:
                    await send({"type": "http.response.body", "body": line, "more_body": True})
                if isinstance(item, tuple):  # only a GONE marker sits in a backlog: the stream ends
                    break
            else:
                while True:
                    remaining = None if deadline is None else max(0.0, deadline - loop.time())
                    getter = asyncio.ensure_future(watcher.queue.get())
                    done, _ = await asyncio.wait(
                        {getter, disconnected}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        if disconnected in done:
                            return
                        break  # timeoutSeconds elapsed
                    item = getter.result()
                    if isinstance(item, tuple) and item[0] == _DROP:
                        raise _StreamCut("watch dropped by the test")
                    if isinstance(item, tuple) and item[0] == _END:
                        break
                    if (line := watcher.render(item)) is not None:
                        await send({"type": "http.response.body", "body": line, "more_body": True})
                    if isinstance(item, tuple) and item[0] == _GONE:
                        break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            self._watchers.discard(watcher)


def _spec_of(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def _b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


async def _json_body(request: Request) -> JSON:
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "BadRequest", "the body must be a JSON object")
    return body


async def _wait_disconnect(receive: ASGIReceive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
