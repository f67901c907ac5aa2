"""`opencsp-gateway doctor`: ask every peer, with the real settings, whether the gateway can work with it.

One line per check, `ok` or `FAIL` with what to do, so an operator learns which peer is misconfigured
without reading logs. Read-only everywhere: it starts no task, creates no object, migrates nothing.
What each check asks:

- database: reachable, and at the newest migration (what `serve` refuses to start without);
- oidc: the discovery document answers and names OPENCSP_OIDC_ISSUER exactly (tokens carry that `iss`),
  the key set loads through the gateway's own parser, and a key signs with an allowed algorithm;
- kubernetes: the API answers; API discovery serves `terraforms` in infra.contrib.fluxcd.io/v1alpha2
  (discovery needs no cluster-wide right, unlike reading the CRD object); a SelfSubjectAccessReview per
  verb the gateway uses, so it answers for whoever runs doctor: run it as the gateway; the Flux source
  object the Terraform objects build from exists;
- semaphore: it answers (`/api/ping`), the token is accepted and the project exists, the template exists (and
  the actions template, when one is set);
- webhook: the secret is set and at least 32 bytes (HMAC-SHA256's key size).

In dev mode the cluster, Semaphore and the issuer are simulated in process: doctor says so and checks
only the database.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from sqlalchemy.engine import make_url

from gateway.settings import Settings
from migrations.runner import current_revision, head_revision
from services.auth.jwks import parse_key_set
from services.db.engine import make_engine

PEERS = ("database", "oidc", "kubernetes", "semaphore", "webhook")
Peer = Literal["database", "oidc", "kubernetes", "semaphore", "webhook"]
Status = Literal["ok", "FAIL", "skip"]

TIMEOUT_SECONDS = 5.0
MIN_WEBHOOK_SECRET_BYTES = 32
# What the gateway does in the Terraform namespace (services/kubernetes/cluster.py, base/rbac.yaml).
TERRAFORM_VERBS = ("create", "get", "list", "watch", "patch", "delete")
SOURCE_API = {"GitRepository": ("v1", "gitrepositories"), "OCIRepository": ("v1beta2", "ocirepositories")}
SOURCE_GROUP = "source.toolkit.fluxcd.io"
# The algorithms a public key can sign with, by key type (and curve); a key's `alg`, when given, wins.
_KEY_ALGORITHMS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "P-256": {"ES256"},
    "P-384": {"ES384"},
    "P-521": {"ES512"},
    "Ed25519": {"EdDSA", "Ed25519"},
    "Ed448": {"EdDSA", "Ed448"},
}


@dataclass(frozen=True, slots=True)
class Check:
    peer: Peer
    check: str
    status: Status
    detail: str

    @property
    def line(self) -> str:
        return f"{self.status:<4} {self.peer}: {self.check}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Report:
    checks: tuple[Check, ...]
    dev_mode: bool

    @property
    def ok(self) -> bool:
        return all(check.status != "FAIL" for check in self.checks)

    def text(self) -> str:
        lines = [check.line for check in self.checks]
        failed = sum(check.status == "FAIL" for check in self.checks)
        lines.append("all checks passed" if self.ok else f"{failed} check(s) failed")
        return "\n".join(lines)

    def json(self) -> str:
        body = {"ok": self.ok, "dev_mode": self.dev_mode, "checks": [asdict(c) for c in self.checks]}
        return json.dumps(body, indent=2)


class _Checks:
    """Collects the lines of one peer, in order."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.items: list[Check] = []

    def ok(self, check: str, detail: str) -> None:
        self.items.append(Check(self.peer, check, "ok", detail))

    def fail(self, check: str, detail: str) -> None:
        self.items.append(Check(self.peer, check, "FAIL", detail))


async def diagnose(settings: Settings, *, skip: Iterable[str] = ()) -> Report:
    """Run every check (peers concurrently, each bounded by a timeout) and gather the report."""
    skipped = set(skip)
    probes: dict[Peer, Callable[[Settings, _Checks], Awaitable[None]]] = {
        "database": _database,
        "oidc": _oidc,
        "kubernetes": _kubernetes,
        "semaphore": _semaphore,
        "webhook": _webhook,
    }
    simulated: set[Peer] = {"oidc", "kubernetes", "semaphore", "webhook"} if settings.dev_mode else set()

    async def run(peer: Peer) -> list[Check]:
        checks = _Checks(peer)
        if peer in skipped:
            return [Check(peer, "skipped", "skip", "not checked here (--skip)")]
        if peer in simulated:
            return [Check(peer, "simulated", "ok", "dev mode simulates it in process; nothing to reach")]
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS * 4):
                await probes[peer](settings, checks)
        except TimeoutError:
            checks.fail("answers in time", f"no answer within {TIMEOUT_SECONDS * 4:.0f} s: is it up?")
        return checks.items

    results = await asyncio.gather(*(run(peer) for peer in probes))
    return Report(checks=tuple(check for result in results for check in result), dev_mode=settings.dev_mode)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


# -- database ---------------------------------------------------------------------------------------


async def _database(settings: Settings, checks: _Checks) -> None:
    url = make_url(settings.database_url)
    sqlite_file = url.database if url.get_backend_name() == "sqlite" else None
    if sqlite_file and not await asyncio.to_thread(Path(sqlite_file).is_file):
        # Connecting would create an empty file: the doctor only reads.
        checks.fail(
            "reachable", f"no SQLite file at {url.database}: run `opencsp-gateway migrate` (or `dev`)"
        )
        return
    engine = make_engine(settings.database_url)
    try:
        current = await current_revision(engine)
    except Exception as error:  # every driver fails in its own way; the operator needs the text
        checks.fail(
            "reachable",
            f"cannot connect ({_reason(error)}): check OPENCSP_DATABASE_URL and that the server accepts us",
        )
        return
    finally:
        await engine.dispose()
    checks.ok("reachable", settings.database_url.split("://", 1)[0])
    head = head_revision()
    if current != head:
        checks.fail("migrated", f"at revision {current or 'none'}, not {head}: run `opencsp-gateway migrate`")
    else:
        checks.ok("migrated", f"at the newest revision {head}")


# -- OIDC -------------------------------------------------------------------------------------------


async def _oidc(settings: Settings, checks: _Checks) -> None:
    issuer = settings.oidc_issuer
    if not issuer:
        checks.fail("issuer", "OPENCSP_OIDC_ISSUER is not set: set it to ZITADEL's issuer URL")
        return
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as http:
        url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
        document = await _get_json(http, url, checks, "discovery answers", "is OPENCSP_OIDC_ISSUER right?")
        if document is None:
            return
        checks.ok("discovery answers", url)
        named = document.get("issuer") if isinstance(document, dict) else None
        if named != issuer:
            checks.fail(
                "issuer matches",
                f"the discovery document names {str(named)[:200]!r}, OPENCSP_OIDC_ISSUER is {issuer!r}: "
                "tokens carry the former, so every one would be refused; set the variable to it",
            )
        else:
            checks.ok("issuer matches", issuer)
        jwks_url = settings.oidc_jwks_url or (
            document.get("jwks_uri") if isinstance(document, dict) else None
        )
        if not isinstance(jwks_url, str) or not jwks_url:
            checks.fail(
                "key set loads", "the discovery document names no jwks_uri: set OPENCSP_OIDC_JWKS_URL"
            )
            return
        key_set = await _get_json(http, jwks_url, checks, "key set loads", "check OPENCSP_OIDC_JWKS_URL")
    if key_set is None:
        return
    try:
        keys = parse_key_set(key_set)
    except Exception as error:
        checks.fail("key set loads", f"{jwks_url}: not a usable key set ({_reason(error)})")
        return
    if not keys:
        checks.fail("key set loads", f"{jwks_url} holds no usable signing key: check the issuer's keys")
        return
    checks.ok("key set loads", f"{len(keys)} key(s) from {jwks_url}")
    offered = set().union(*(_algorithms(key.as_dict(private=False)) for key in keys.values()))
    usable = sorted(offered & set(settings.oidc_algorithms))
    if usable:
        checks.ok("algorithms allowed", ", ".join(usable))
    else:
        checks.fail(
            "algorithms allowed",
            f"the keys sign with {', '.join(sorted(offered)) or 'nothing known'}, OPENCSP_OIDC_ALGORITHMS "
            f"allows {', '.join(settings.oidc_algorithms)}: no token could verify; allow the issuer's",
        )


def _algorithms(key: dict[str, Any]) -> set[str]:
    if isinstance(key.get("alg"), str):
        return {key["alg"]}
    kty = key.get("kty")
    return set(_KEY_ALGORITHMS.get("RSA" if kty == "RSA" else str(key.get("crv")), set()))


async def _get_json(http: httpx.AsyncClient, url: str, checks: _Checks, check: str, hint: str) -> Any:
    try:
        response = await http.get(url)
    except httpx.HTTPError as error:
        checks.fail(check, f"{url}: {_reason(error)}: {hint}")
        return None
    if response.status_code != 200:
        checks.fail(check, f"{url} answered {response.status_code}: {hint}")
        return None
    try:
        return response.json()
    except ValueError:
        checks.fail(check, f"{url} did not answer JSON: {hint}")
        return None


# -- Kubernetes -------------------------------------------------------------------------------------


async def _kubernetes(settings: Settings, checks: _Checks) -> None:
    # Only a check of a real cluster loads the Kubernetes client, as in the gateway itself.
    from kubernetes_asyncio import client

    from services.kubernetes.cluster import connect
    from services.kubernetes.errors import ClusterError
    from services.kubernetes.terraform_object import GROUP, PLURAL, VERSION

    try:
        cluster = await connect(settings.kubeconfig)
    except ClusterError as error:
        where = "OPENCSP_KUBECONFIG" if settings.kubeconfig else "the pod's service account token"
        checks.fail("configuration", f"{error}: check {where}")
        return
    namespace = settings.terraform_namespace
    async with cluster:
        api = cluster.api_client
        try:
            version = await client.VersionApi(api).get_code(_request_timeout=TIMEOUT_SECONDS)
        except Exception as error:
            checks.fail("API answers", f"{_reason(error)}: is the API server reachable from here?")
            return
        checks.ok("API answers", f"Kubernetes {version.git_version}")

        try:
            served = await client.CustomObjectsApi(api).get_api_resources(
                GROUP, VERSION, _request_timeout=TIMEOUT_SECONDS
            )
            names = {resource.name for resource in served.resources}
        except client.ApiException as error:
            if error.status != 404:  # 404: the group version is not served at all
                checks.fail("terraform CRD", f"discovery answered {error.status} {error.reason}")
                return
            names = set()
        if PLURAL in names:
            checks.ok("terraform CRD", f"{PLURAL}.{GROUP} serves {VERSION}")
        else:
            checks.fail(
                "terraform CRD",
                f"{PLURAL}.{GROUP} does not serve {VERSION}: install tofu-controller's CRDs (v0.16 or newer)",
            )

        reviews = [("terraforms", GROUP, verb) for verb in TERRAFORM_VERBS] + [("secrets", "", "get")]
        denied: dict[str, list[str]] = {}
        authorization = client.AuthorizationV1Api(api)
        for resource, group, verb in reviews:
            body = client.V1SelfSubjectAccessReview(
                api_version="authorization.k8s.io/v1",
                kind="SelfSubjectAccessReview",
                spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        group=group, resource=resource, verb=verb, namespace=namespace
                    )
                ),
            )
            try:
                review = await authorization.create_self_subject_access_review(
                    body, _request_timeout=TIMEOUT_SECONDS
                )
                allowed = bool(review.status and review.status.allowed)
            except client.ApiException as error:
                checks.fail("access", f"SelfSubjectAccessReview answered {error.status} {error.reason}")
                return
            if not allowed:
                denied.setdefault(resource, []).append(verb)
        for resource, verbs in (("terraforms", TERRAFORM_VERBS), ("secrets", ("get",))):
            check = f"may {', '.join(verbs)} {resource} in {namespace}"
            if resource in denied:
                checks.fail(
                    check,
                    f"not allowed to {', '.join(denied[resource])}: bind the Role of deploy/kubernetes/"
                    "base/rbac.yaml to the service account doctor runs as (run doctor as the gateway)",
                )
            else:
                checks.ok(check, "allowed")

        kind, name, source_ns = (
            settings.terraform_source_kind,
            settings.terraform_source_name,
            settings.terraform_source_namespace,
        )
        source_version, source_plural = SOURCE_API[kind]
        what = f"{kind} {source_ns}/{name}"
        try:
            await client.CustomObjectsApi(api).get_namespaced_custom_object(
                SOURCE_GROUP, source_version, source_ns, source_plural, name, _request_timeout=TIMEOUT_SECONDS
            )
        except client.ApiException as error:
            if error.status == 404:
                detail = "not found: create it, or set OPENCSP_TERRAFORM_SOURCE_KIND/_NAME/_NAMESPACE"
            elif error.status == 403:
                detail = "may not read it: apply the source reader Role of deploy/kubernetes/base/rbac.yaml"
            else:
                detail = f"answered {error.status} {error.reason}"
            checks.fail("source exists", f"{what}: {detail}")
            return
        checks.ok("source exists", what)


# -- Semaphore --------------------------------------------------------------------------------------


async def _semaphore(settings: Settings, checks: _Checks) -> None:
    required = {
        "OPENCSP_SEMAPHORE_URL": settings.semaphore_url,
        "OPENCSP_SEMAPHORE_TOKEN": settings.semaphore_token,
        "OPENCSP_SEMAPHORE_PROJECT_ID": settings.semaphore_project_id,
        "OPENCSP_SEMAPHORE_TEMPLATE_ID": settings.semaphore_template_id,
    }
    missing = [name for name, value in required.items() if not value]
    if missing:
        checks.fail("configured", f"{', '.join(missing)} not set")
        return
    assert settings.semaphore_url is not None
    assert settings.semaphore_token is not None
    root = settings.semaphore_url.rstrip("/")
    api = root if root.endswith("/api") else f"{root}/api"
    headers = {"Authorization": f"Bearer {settings.semaphore_token.get_secret_value()}"}
    project, template = settings.semaphore_project_id, settings.semaphore_template_id
    async with httpx.AsyncClient(base_url=api, timeout=TIMEOUT_SECONDS, headers=headers) as http:
        try:
            ping = await http.get("/ping")
        except httpx.HTTPError as error:
            checks.fail("answers", f"{api}/ping: {_reason(error)}: check OPENCSP_SEMAPHORE_URL")
            return
        if ping.status_code != 200:
            checks.fail("answers", f"{api}/ping answered {ping.status_code}: check OPENCSP_SEMAPHORE_URL")
            return
        checks.ok("answers", api)
        lookups = [
            ("token accepted, project exists", f"/project/{project}/", "OPENCSP_SEMAPHORE_PROJECT_ID"),
            ("template exists", f"/project/{project}/templates/{template}", "OPENCSP_SEMAPHORE_TEMPLATE_ID"),
        ]
        actions = settings.semaphore_actions_template_id
        if actions is None:
            checks.ok(
                "actions template",
                "not set: rebootInstance is refused (OPENCSP_SEMAPHORE_ACTIONS_TEMPLATE_ID)",
            )
        else:
            lookups.append(
                (
                    "actions template exists",
                    f"/project/{project}/templates/{actions}",
                    "OPENCSP_SEMAPHORE_ACTIONS_TEMPLATE_ID",
                )
            )
        for check, path, missing_hint in lookups:
            try:
                response = await http.get(path)
            except httpx.HTTPError as error:
                checks.fail(check, f"{path}: {_reason(error)}")
                return
            if response.status_code == 401:
                checks.fail(
                    check, "the token is refused (401): make a new API token, set OPENCSP_SEMAPHORE_TOKEN"
                )
                return
            if response.status_code in (403, 404):
                checks.fail(
                    check,
                    f"{path} answered {response.status_code}: check {missing_hint} and the token's user",
                )
                return
            if response.status_code != 200:
                checks.fail(check, f"{path} answered {response.status_code}")
                return
            checks.ok(check, path)


# -- webhook ----------------------------------------------------------------------------------------


async def _webhook(settings: Settings, checks: _Checks) -> None:
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
    size = len(secret.encode())
    if not secret:
        checks.fail("secret", "OPENCSP_WEBHOOK_SECRET is not set: the playbook's hints would be refused")
    elif size < MIN_WEBHOOK_SECRET_BYTES:
        checks.fail(
            "secret",
            f"OPENCSP_WEBHOOK_SECRET has {size} bytes, fewer than {MIN_WEBHOOK_SECRET_BYTES}: "
            "make a new one (`openssl rand -hex 32`) for the gateway and Semaphore alike",
        )
    else:
        checks.ok("secret", f"set, {size} bytes")
