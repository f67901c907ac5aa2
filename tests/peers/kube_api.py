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
import json
import re
import socket
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.kubernetes.terraform_object import FINALIZER as TF_FINALIZER
from tests.peers.kube_store import (
    CRD_PATH,
    DROP,
    END,
    GIT_REPOSITORIES,
    GONE,
    JSON,
    OCI_REPOSITORIES,
    RESOURCES,
    SECRETS,
    TERRAFORMS,
    ApiError,
    Event,
    KubeStore,
    Resource,
    Watcher,
    load_terraform_schema,
    now,
    parse_selector,
)

__all__ = ["CRD_PATH", "SECRETS", "TERRAFORMS", "TF_FINALIZER", "ApiError", "KubeApiEmulator", "Resource"]
__all__ += ["GIT_REPOSITORIES", "OCI_REPOSITORIES", "load_terraform_schema", "parse_selector"]

ASGISend = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIReceive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_PATH = re.compile(
    r"^/(?:api/(?P<core>v1)|apis/(?P<group>[^/]+)/(?P<version>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>status))?)?$"
)


_DISCOVERY = re.compile(r"^/apis/(?P<group_version>[^/]+/[^/]+)$")
_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0+emulated",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class _StreamCut(Exception):
    """Raised mid-response so uvicorn drops the connection without the final chunk."""


@dataclass
class _Fault:
    path: str
    method: str | None
    remaining: int
    code: int
    message: str = "an injected fault"


class KubeApiEmulator(KubeStore):
    """The API server. `async with KubeApiEmulator() as api:` then point a client at `api.url`."""

    def __init__(self, *, terraform_schema: JSON | None = None, gone_as_http: bool = False) -> None:
        super().__init__(terraform_schema=terraform_schema)
        self.gone_as_http = gone_as_http  # answer a too-old watch with HTTP 410 instead of an ERROR event
        self.requests: list[tuple[str, str]] = []
        # (resource, verb, namespace) a SelfSubjectAccessReview answers "not allowed" for; all else is.
        self.denied: set[tuple[str, str, str]] = set()
        # API groups/versions discovery serves; drop one to act as a cluster without that CRD (version).
        self.served: set[str] = {TERRAFORMS.api_version}
        self._faults: list[_Fault] = []
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
    def open_watches(self) -> int:
        return len(self._watchers)

    async def wait_for_watches(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self._watchers) != count:
                await asyncio.sleep(0.005)

    def drop_watches(self) -> None:
        """Cut every open watch stream mid-flight (connection closed, no final chunk)."""
        self._broadcast((DROP, self._rv))

    def end_watches(self) -> None:
        """End every open watch stream cleanly, as the server-side timeout does."""
        self._broadcast((END, self._rv))

    def expire_watches(self) -> None:
        """Send `ERROR 410 Expired` to every open watch, as a lagging watch cache does."""
        self._broadcast((GONE, self._rv))

    def emit_bookmark(self) -> None:
        self._broadcast(("BOOKMARK", self._rv))

    def fail_next(
        self,
        count: int,
        *,
        path: str,
        method: str | None = None,
        code: int = 500,
        message: str = "an injected fault",
    ) -> None:
        """The next `count` requests on exactly `path` (and `method`, if given) answer `code`, with
        `message` in the Status body as the API server writes an admission or validation error."""
        self._faults.append(_Fault(path, method, count, code, message))

    @staticmethod
    def collection_path(resource: Resource, namespace: str) -> str:
        prefix = f"/apis/{resource.api_version}" if resource.group else f"/api/{resource.version}"
        return f"{prefix}/namespaces/{namespace}/{resource.plural}"

    # --- the test-side tofu-controller ---

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
        ready["lastTransitionTime"] = now() if changed or old is None else old["lastTransitionTime"]
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
        owner: JSON = {"apiVersion": TERRAFORMS.api_version, "kind": TERRAFORMS.kind, "name": name}
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

    # --- HTTP ---

    async def __call__(self, scope: MutableMapping[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
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

    async def _dispatch(self, request: Request) -> Response | tuple[Watcher, list[Any], float | None]:
        path, method = request.url.path, request.method
        for fault in self._faults:
            if fault.remaining > 0 and fault.path == path and fault.method in (None, method):
                fault.remaining -= 1
                raise ApiError(fault.code, "InternalError", fault.message)
        if method == "GET" and path in ("/version", "/version/"):
            return JSONResponse(_VERSION)
        if method == "POST" and path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews":
            return self._access_review(await _json_body(request))
        discovery = _DISCOVERY.match(path)
        if method == "GET" and discovery is not None:
            return self._resource_list(discovery["group_version"])
        m = _PATH.match(path)
        resource = (
            RESOURCES.get(("v1" if m["core"] else f"{m['group']}/{m['version']}", m["plural"])) if m else None
        )
        if m is None or resource is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        ns, name, sub = m["ns"], m["name"], m["sub"]
        if sub and not resource.has_status:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if name is None:
            if method == "GET" and _parse_bool(request.query_params.get("watch")):
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

    def _access_review(self, body: JSON) -> Response:
        """SelfSubjectAccessReview (authorization.k8s.io/v1): the spec back, with `status.allowed`."""
        if (
            body.get("kind") != "SelfSubjectAccessReview"
            or body.get("apiVersion") != "authorization.k8s.io/v1"
        ):
            raise ApiError(
                400, "BadRequest", "the body is not a SelfSubjectAccessReview of authorization.k8s.io/v1"
            )
        attributes = (body.get("spec") or {}).get("resourceAttributes") or {}
        key = (attributes.get("resource", ""), attributes.get("verb", ""), attributes.get("namespace", ""))
        allowed = key not in self.denied
        status: JSON = {"allowed": allowed}
        if not allowed:
            status["reason"] = "no RBAC policy matched"
        review = {**body, "metadata": {"creationTimestamp": None}, "status": status}
        return JSONResponse(review, status_code=201)

    def _resource_list(self, group_version: str) -> Response:
        """API discovery of one group version: what it serves (the CRDs' served versions)."""
        if group_version not in self.served:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = [r for r in RESOURCES.values() if r.api_version == group_version and r.group]
        listed: list[JSON] = []
        for r in resources:
            verbs = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
            listed.append(
                {
                    "name": r.plural,
                    "singularName": r.kind.lower(),
                    "namespaced": True,
                    "kind": r.kind,
                    "verbs": verbs,
                }
            )
            if r.has_status:
                listed.append(
                    {
                        "name": f"{r.plural}/status",
                        "singularName": "",
                        "namespaced": True,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return JSONResponse(
            {
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": group_version,
                "resources": listed,
            }
        )

    def _open_watch(
        self, resource: Resource, namespace: str | None, params: Mapping[str, str]
    ) -> tuple[Watcher, list[Any], float | None]:
        matches = parse_selector(params.get("labelSelector", ""))
        watcher = Watcher(resource, namespace, matches, _parse_bool(params.get("allowWatchBookmarks")))
        since = params.get("resourceVersion", "")
        backlog: list[Any]
        if since in ("", "0"):  # "start at most recent": synthetic ADDED for what exists now
            listed = self.list(resource, namespace, params.get("labelSelector", ""))["items"]
            backlog = [Event(self._rv, resource, o["metadata"]["namespace"], "ADDED", o) for o in listed]
        else:
            try:
                start = int(since)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
            if start < self._compacted:
                if self.gone_as_http:
                    raise ApiError(410, "Expired", f"too old resource version: {start} ({self._compacted})")
                backlog = [(GONE, start)]
            else:
                backlog = [e for e in self._history if e.rv > start]
        self._watchers.add(watcher)
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        return watcher, backlog, timeout

    async def _stream(
        self,
        watcher: Watcher,
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
                    if isinstance(item, tuple) and item[0] == DROP:
                        raise _StreamCut("watch dropped by the test")
                    if isinstance(item, tuple) and item[0] == END:
                        break
                    if (line := watcher.render(item)) is not None:
                        await send({"type": "http.response.body", "body": line, "more_body": True})
                    if isinstance(item, tuple) and item[0] == GONE:
                        break
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            self._watchers.discard(watcher)


def _parse_bool(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the API server uses for query flags (the client sends "True")."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


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
