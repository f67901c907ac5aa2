"""The state and rules of the emulated Kubernetes API (see `kube_api` for the HTTP side).

Objects, a cluster-wide resourceVersion, the event history watches replay from, and the API server's
rules for create, update, patch, delete (finalizers), the status subresource, label selectors, CRD
pruning, defaulting and validation. Everything here is synchronous: a change and the events it causes
happen at once, in order, as they do behind a real API server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from services.kubernetes import object_rules
from services.kubernetes.object_rules import LabelMatcher, SelectorError, is_dns1123_subdomain, label_problems

JSON = dict[str, Any]

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
CRD_PATH = CONTRACTS / "tofu-controller" / "infra.contrib.fluxcd.io_terraforms.yaml"


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
# Flux's source objects a Terraform object builds from (what `doctor` looks for); stored as given.
GIT_REPOSITORIES = Resource("source.toolkit.fluxcd.io", "v1", "gitrepositories", "GitRepository", True)
OCI_REPOSITORIES = Resource("source.toolkit.fluxcd.io", "v1beta2", "ocirepositories", "OCIRepository", True)
RESOURCES = {(r.api_version, r.plural): r for r in (TERRAFORMS, SECRETS, GIT_REPOSITORIES, OCI_REPOSITORIES)}
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


@functools.cache
def load_terraform_schema(path: Path = CRD_PATH) -> JSON:
    """The CRD's v1alpha2 openAPIV3Schema (vendored in tests/contracts). Cached: the CRD is large and only
    ever read."""
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


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_selector(text: str) -> LabelMatcher:
    """The API server's label selectors (the rules live in `services.kubernetes.object_rules`)."""
    try:
        return object_rules.parse_selector(text)
    except SelectorError as exc:
        raise ApiError(400, "BadRequest", f"unable to parse requirement: {exc}") from None


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


# --- watch plumbing --------------------------------------------------------------------------


@dataclass
class Event:
    rv: int
    resource: Resource
    namespace: str
    type: str
    obj: JSON
    old: JSON | None = None


DROP, END, GONE = "drop", "end", "gone"


@dataclass(eq=False)
class Watcher:
    resource: Resource
    namespace: str | None
    matches: LabelMatcher
    bookmarks: bool
    queue: asyncio.Queue[Event | tuple[str, int]] = field(default_factory=asyncio.Queue)

    def render(self, item: Event | tuple[str, int]) -> bytes | None:
        if isinstance(item, tuple):
            if item[0] == GONE:
                status = ApiError(410, "Expired", f"too old resource version: {item[1]}").status()
                return line({"type": "ERROR", "object": status})
            if not self.bookmarks:
                return None
            meta = {"resourceVersion": str(item[1])}
            obj = {"kind": self.resource.kind, "apiVersion": self.resource.api_version, "metadata": meta}
            return line({"type": "BOOKMARK", "object": obj})
        if item.resource != self.resource or self.namespace not in (None, item.namespace):
            return None
        now = self.matches(item.obj["metadata"].get("labels", {}))
        before = item.old is not None and self.matches(item.old["metadata"].get("labels", {}))
        kind = item.type
        if kind == "MODIFIED" and now != before:  # the object moved into or out of the selection
            kind = "ADDED" if now else "DELETED"
        return line({"type": kind, "object": item.obj}) if now or before else None


def line(event: JSON) -> bytes:
    return json.dumps(event).encode() + b"\n"


class KubeStore:
    """Objects of the known resources and the rules every write goes through."""

    def __init__(self, *, terraform_schema: JSON | None = None) -> None:
        self.schema = terraform_schema if terraform_schema is not None else load_terraform_schema()
        self._objects: dict[tuple[str, str, str], JSON] = {}
        self._history: list[Event] = []
        self._rv = 100
        self._compacted = 0
        self._watchers: set[Watcher] = set()
        self._validator = jsonschema.Draft7Validator(self.schema)

    @property
    def resource_version(self) -> int:
        return self._rv

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: older resourceVersions become 410 Gone."""
        self._compacted = self._rv
        self._history.clear()

    def _broadcast(self, item: tuple[str, int]) -> None:
        for watcher in self._watchers:
            watcher.queue.put_nowait(item)

    def object(self, resource: Resource, namespace: str, name: str) -> JSON | None:
        obj = self._objects.get((resource.plural, namespace, name))
        return copy.deepcopy(obj) if obj else None

    def modify(self, resource: Resource, namespace: str, name: str, mutate: Callable[[JSON], None]) -> JSON:
        """Apply `mutate` to a copy and store it through the normal update rules (main resource)."""
        new = self._require(resource, namespace, name)
        mutate(new)
        return self._update(resource, new, subresource=None)

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
        meta |= {"uid": str(uuid.uuid4()), "creationTimestamp": now()}
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
                meta |= {"deletionTimestamp": now(), "deletionGracePeriodSeconds": 0}
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
        elif resource is TERRAFORMS:
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
        event = Event(self._rv, resource, meta["namespace"], kind, copy.deepcopy(obj), old)
        self._history.append(event)
        for watcher in self._watchers:
            watcher.queue.put_nowait(event)
        if kind == "DELETED":  # garbage-collect dependents, e.g. the outputs Secret
            for (plural, ns, name), dep in list(self._objects.items()):
                if any(o.get("uid") == meta["uid"] for o in dep["metadata"].get("ownerReferences", [])):
                    self.delete(RESOURCES[(dep["apiVersion"], plural)], ns, name)
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
        if not is_dns1123_subdomain(name):
            problems.append(
                f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain is required"
            )
        problems += label_problems(meta.get("labels") or {})
        if problems:
            raise ApiError(422, "Invalid", f'{resource.kind} "{name}" is invalid: {"; ".join(problems)}')


def _spec_of(obj: JSON) -> JSON:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}
