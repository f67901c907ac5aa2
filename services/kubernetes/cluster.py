"""The cluster as the gateway uses it: create, read, delete and list Terraform objects, read outputs.

A thin layer over kubernetes_asyncio that gives the rest of `services/` plain dicts and the errors of
`services.kubernetes.errors` (one class per failure a caller tells apart), so the lifecycle code never
imports a client library. Creating is idempotent: a retried
create finds the object it made before (same instance-id label) and returns it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException

from services.kubernetes.errors import (
    ClusterConflict,
    ClusterError,
    ClusterNotFound,
    ClusterUnavailable,
    TerraformConflict,
    error_for,
)
from services.kubernetes.outputs import parse_outputs
from services.kubernetes.terraform_object import (
    GROUP,
    MANAGED_SELECTOR,
    PLURAL,
    RECONCILE_ANNOTATION,
    VERSION,
    instance_id_of,
)


@contextmanager
def _api_errors(what: str) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        raise error_for(f"{what}: {exc.status} {exc.reason}", exc.status) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise ClusterUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc


class TerraformCluster:
    """Terraform objects and their outputs Secrets through one kubernetes_asyncio ApiClient."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._api_client = api_client
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)

    @classmethod
    def for_host(cls, host: str, *, token: str | None = None) -> TerraformCluster:
        """A cluster reached at `host` directly (tests, `kubectl proxy`)."""
        configuration = client.Configuration(host=host)
        if token:
            configuration.api_key = {"BearerToken": token}
            configuration.api_key_prefix = {"BearerToken": "Bearer"}
        return cls(client.ApiClient(configuration))

    @property
    def api_client(self) -> client.ApiClient:
        """The configured client, for `opencsp-gateway doctor`'s own probes of the same cluster."""
        return self._api_client

    async def close(self) -> None:
        await self._api_client.close()

    async def __aenter__(self) -> TerraformCluster:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        try:
            with _api_errors(f"create terraform {namespace}/{name}"):
                created: dict[str, Any] = await self._custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, obj
                )
                return created
        except ClusterConflict:
            pass
        existing = await self.get(namespace, name)
        if existing is None or instance_id_of(existing) != instance_id_of(obj):
            raise TerraformConflict(f"terraform {namespace}/{name} belongs to another instance", status=409)
        return existing

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            with _api_errors(f"get terraform {namespace}/{name}"):
                obj: dict[str, Any] = await self._custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, name
                )
                return obj
        except ClusterNotFound:
            return None

    async def delete(self, namespace: str, name: str) -> None:
        """Ask for deletion; tofu-controller's finalizer destroys the VM first. Already gone is fine."""
        try:
            with _api_errors(f"delete terraform {namespace}/{name}"):
                await self._custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ClusterNotFound:
            pass

    async def request_reconcile(self, namespace: str, name: str) -> None:
        """Ask tofu-controller to reconcile now (Flux's `reconcile.fluxcd.io/requestedAt` annotation),
        as `flux reconcile` does: a retry should not wait for the object's interval."""
        body = {"metadata": {"annotations": {RECONCILE_ANNOTATION: datetime.now(UTC).isoformat()}}}
        with _api_errors(f"annotate terraform {namespace}/{name}"):
            await self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"
            )

    async def patch_labels(self, namespace: str, name: str, labels: Mapping[str, str | None]) -> None:
        """A JSON merge patch of `metadata.labels`: a value sets a label, None removes it; labels the
        patch does not name (the gateway's own, anyone else's) stay as they are."""
        body = {"metadata": {"labels": dict(labels)}}
        with _api_errors(f"label terraform {namespace}/{name}"):
            await self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"
            )

    async def set_vars(
        self, namespace: str, name: str, variables: list[dict[str, Any]], *, resource_version: str
    ) -> dict[str, Any]:
        """Replace the object's `spec.vars` by a JSON merge patch that carries the resourceVersion it was
        read at: the API server refuses it (409, `ClusterConflict`) if anyone wrote the object since, so
        a concurrent write is never lost. The answer carries the new `metadata.generation`."""
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"vars": variables}}
        with _api_errors(f"patch terraform {namespace}/{name}"):
            patched: dict[str, Any] = await self._custom.patch_namespaced_custom_object(  # type: ignore[call-arg]
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type="application/merge-patch+json"
            )
            return patched

    async def read_outputs(self, namespace: str, secret_name: str) -> dict[str, Any] | None:
        """The module's outputs (see `outputs.parse_outputs`), or None while the Secret does not exist."""
        try:
            with _api_errors(f"read secret {namespace}/{secret_name}"):
                secret = await self._core.read_namespaced_secret(secret_name, namespace)
        except ClusterNotFound:
            return None
        return parse_outputs(secret.data)

    async def list(
        self, label_selector: str = MANAGED_SELECTOR, *, namespace: str | None = None
    ) -> tuple[list[dict[str, Any]], str]:
        """Matching objects and the list's resourceVersion, the point a watch continues from."""
        with _api_errors("list terraforms"):
            if namespace is None:
                body = await self._custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, label_selector=label_selector
                )
            else:
                body = await self._custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, label_selector=label_selector
                )
        try:
            return list(body["items"]), str(body["metadata"]["resourceVersion"])
        except (KeyError, TypeError) as exc:
            raise ClusterError(f"list terraforms: malformed answer ({exc!r})") from exc

    async def watch(
        self,
        *,
        resource_version: str,
        label_selector: str = MANAGED_SELECTOR,
        namespace: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Raw events `{type, object}` after `resource_version`, bookmarks included, until the server
        ends the stream. Raises ClusterError; ClusterGone when that resourceVersion is too old.
        Use it inside `contextlib.aclosing` so the connection is released when the caller stops."""
        kwargs: dict[str, Any] = {
            "label_selector": label_selector,
            "resource_version": resource_version,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_seconds,  # also stops Watch from retrying 410 on its own
            "_request_timeout": (10, timeout_seconds + 30),
        }
        func: Callable[..., Awaitable[Any]]
        args: tuple[str, ...]
        if namespace is None:
            func, args = self._custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
        else:
            func, args = self._custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
        async with watch.Watch() as stream:
            try:
                with _api_errors("watch terraforms"):
                    async for event in stream.stream(func, *args, **kwargs):
                        if not isinstance(event, dict) or "type" not in event:
                            raise ClusterError(f"watch terraforms: malformed event {str(event)[:200]!r}")
                        yield {"type": event["type"], "object": event["raw_object"]}
            except ClusterError:
                raise
            except Exception as exc:  # Watch raises bare Exception on a body it cannot parse
                raise ClusterError(f"watch terraforms: {exc!s:.300}") from exc


async def connect(kubeconfig: str | Path | None = None, *, context: str | None = None) -> TerraformCluster:
    """From a kubeconfig file, or from the pod's service account when `kubeconfig` is None."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            await config.load_kube_config(
                config_file=str(kubeconfig),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError) as exc:
        where = kubeconfig or "in-cluster service account"
        raise ClusterError(f"cannot load Kubernetes configuration from {where}: {exc}") from exc
    return TerraformCluster(client.ApiClient(configuration))
