"""The composition root: settings in, the process's real dependencies out. Tests call it with their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.health import Readiness, database_check
from gateway.settings import DEV_DIR, Settings
from schema.limits import DocumentLimits
from services.auth.dev_issuer import DEV_ORG_ID, DevIssuer
from services.auth.introspection import Introspector
from services.auth.jwks import KeySetCache
from services.auth.logout_token import LogoutTokenVerifier
from services.auth.permissions import DEFAULT_POLICY, Policy, with_schema_discovery
from services.auth.revocation import Revocation, Revocations
from services.auth.revocation_store import SqlRevocationStore
from services.auth.tokens import TokenVerifier
from services.catalog import Catalog
from services.container import PageLimits, Services
from services.db.engine import make_engine, make_sessionmaker
from services.events.bus import EventBus, InProcessBus
from services.events.hub import Hub
from services.events.postgres_bus import PostgresBus
from services.instances.actions import Actions, ActionSettings
from services.instances.configuration import Configuration, ConfigurationSettings
from services.instances.internals import InternalsReader
from services.instances.lifecycle import Lifecycle, Quotas
from services.instances.ports import Cluster, TaskRunner
from services.instances.provisioning import Provisioning, TerraformSettings
from services.instances.reading import InstanceReader
from services.instances.records import StatusChanged
from services.instances.security import SecurityStore
from services.instances.store import InstanceStore, Quota
from services.kubernetes.watch import WatchHealth
from services.semaphore.client import SemaphoreClient
from services.semaphore.webhook import SecuritySummary
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore

logger = logging.getLogger(__name__)

DEV_ISSUER = "http://opencsp-gateway.dev.localhost"
DEV_PROJECT_ID = "opencsp-dev"
DEV_LOGOUT_CLIENT_ID = "opencsp-dev-console"


class Runtime:
    """Everything one process owns, starts and must close on shutdown.

    Its collaborators (the key set, the cluster, the task runner, the lifecycle's parts) are private: the
    edges get what they need from it (`services`, `verifier`, `readiness`, `hint_task`, `http_clients`,
    the metrics hooks), and `aclose` is the one shutdown sequence, for the app and the tests alike.
    `engine` and `bus` are readable so tests and benchmarks can look at the database and the LISTEN
    connection; only the runtime closes them.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        engine: AsyncEngine,
        services: Services,
        bus: EventBus,
        keys: KeySetCache,
        verifier: TokenVerifier,
        cluster: Cluster,
        runner: TaskRunner,
        store: InstanceStore,
        configuration: Configuration,
        dev_issuer: DevIssuer | None = None,
        revocations: Revocations | None = None,
        logout_tokens: LogoutTokenVerifier | None = None,
        introspector: Introspector | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.services = services
        self.bus = bus
        self.verifier = verifier
        self.dev_issuer = dev_issuer
        # The sign-out edges (back-channel logout, websockets, writes) use these directly.
        self.revocations = revocations
        self.logout_tokens = logout_tokens
        self.introspector = introspector
        self._keys = keys
        self._cluster = cluster
        self._runner = runner
        self._store = store
        self._configuration = configuration
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = False
        self._watching = False
        self.readiness = Readiness(
            {
                "database": database_check(engine),
                "jwks": self._keys_loaded,
                "cluster_watch": self._watch_connected,
                "events": self._events_listening,
            }
        )

    @property
    def _lifecycle(self) -> Lifecycle:
        return self.services.lifecycle

    @property
    def watch_health(self) -> WatchHealth:
        """The cluster watch's own counters (connected, reconnects, relists)."""
        return self._lifecycle.watch_health

    @property
    def http_clients(self) -> dict[str, httpx.AsyncClient]:
        """The HTTP clients of peers, by peer name, for metrics and tracing to hook onto."""
        clients = {"jwks": self._keys.http}
        if isinstance(self._runner, SemaphoreClient):
            clients["semaphore"] = self._runner.http
        return clients

    def observe_transitions(self, observer: Callable[[StatusChanged], None]) -> None:
        """Call `observer` with every transition this process commits."""
        self._store.observe(observer)

    async def hint_task(self, task_id: int, security: SecuritySummary | None = None) -> None:
        """A Semaphore task may have moved (the webhook): read it now rather than at the next poll.

        Its security summary is stored first (only if the task is an instance's current one), so whoever
        sees the instance turn ACTIVE can read the summary of the run that made it so."""
        if security is not None and self.services.security is not None:
            await self.services.security.report(task_id, security)
        if not await self._configuration.hint(task_id) and self.services.actions is not None:
            self.services.actions.hint(task_id)  # a reboot's task (actions.yml posts the same hint)

    async def refresh_keys(self) -> bool:
        """Fetch the issuer's key set now (within the cache's rate limit); True when one is loaded."""
        return await self._keys.refresh()

    # Readiness reads state the background tasks keep; none of these checks reaches a peer.
    async def _keys_loaded(self) -> bool:
        return self._keys.loaded

    async def _watch_connected(self) -> bool:
        return not self._watching or self.watch_health.connected

    async def _events_listening(self) -> bool:
        # Only a started runtime listens; with PostgreSQL its LISTEN connection must be up.
        return not self._listening or not isinstance(self.bus, PostgresBus) or self.bus.connected

    async def start(self, *, background: bool = True) -> None:
        """Load keys, start fanning out events, settle what a previous process left unfinished, then
        watch and reconcile."""
        await self._keys.refresh()
        if self.revocations is not None:
            # Before the first request: a restarted replica must refuse what was revoked while it was down.
            await self.revocations.load()
            self._tasks.append(asyncio.create_task(self.revocations.run(), name="revocations"))
        self._tasks.append(asyncio.create_task(self.services.hub.run(), name="event hub"))
        self._listening = True
        # Keeps /readyz's answer, and retries loading the issuer's keys (rate-limited) if start-up could not.
        self._tasks.append(asyncio.create_task(self.readiness.run(self._keys.load_if_due), name="readiness"))
        if isinstance(self.bus, PostgresBus):
            try:
                await asyncio.wait_for(self.bus.wait_listening(), timeout=10)
            except TimeoutError:
                logger.warning("LISTEN for status changes is not up yet; it keeps trying")
        try:
            await self._lifecycle.reconcile()
        except Exception:  # an unreachable cluster must not stop the API from serving reads
            logger.exception("start-up reconcile failed; the periodic reconcile will retry")
        if background:
            self._tasks.append(asyncio.create_task(self._lifecycle.run(), name="lifecycle"))
            self._watching = True

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._listening = self._watching = False
        await self._lifecycle.close()
        await self._cluster.close()
        await self._runner.aclose()
        await self._keys.aclose()
        if self.introspector is not None:
            await self.introspector.aclose()
        await self.engine.dispose()


async def build_runtime(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    cluster: Cluster | None = None,
    runner: TaskRunner | None = None,
    keys: KeySetCache | None = None,
) -> Runtime:
    """Wire a process. Peers not given are made from settings: simulations in dev mode, else real."""
    engine = engine or make_engine(settings.database_url, pool_size=settings.database_pool_size)
    issuer = dev_issuer() if settings.dev_mode else None
    cluster = cluster or await _cluster(settings)
    runner = runner or _runner(settings)
    keys = keys or _keys(settings, issuer)
    bus: EventBus = PostgresBus(engine) if engine.dialect.name == "postgresql" else InProcessBus()
    catalog = Catalog(settings.flavors, settings.images)
    store = InstanceStore(engine, bus)
    configuration = Configuration(
        store,
        runner,
        ConfigurationSettings(
            timeout=settings.configuration_timeout_seconds,
            min_poll=min(1.0, settings.configuration_timeout_seconds),
            start_retry=min(2.0, settings.configuration_timeout_seconds),
            instance_networks=tuple(settings.instance_networks),
        ),
    )
    provisioning = Provisioning(
        store,
        cluster,
        catalog,
        TerraformSettings(
            namespace=settings.terraform_namespace,
            source_kind=settings.terraform_source_kind,
            source_name=settings.terraform_source_name,
            source_namespace=settings.terraform_source_namespace,
            vars_secret=settings.terraform_vars_secret,
            interval=settings.terraform_interval,
            instance_networks=tuple(settings.instance_networks),
        ),
        configuration,
    )
    user_quota = Quota(settings.quota_user_instances, settings.quota_user_cpu, settings.quota_user_memory_mib)
    org_quota = Quota(settings.quota_org_instances, settings.quota_org_cpu, settings.quota_org_memory_mib)
    actions = Actions(
        store=store,
        cluster=cluster,
        runner=runner,
        catalog=catalog,
        user_quota=user_quota,
        org_quota=org_quota,
        settings=ActionSettings(
            actions_template_id=_actions_template(settings, runner),
            timeout=settings.configuration_timeout_seconds,
            min_poll=min(1.0, settings.configuration_timeout_seconds),
            instance_networks=tuple(settings.instance_networks),
        ),
        namespace=settings.terraform_namespace,
    )
    lifecycle = Lifecycle(
        store=store,
        cluster=cluster,
        provisioning=provisioning,
        configuration=configuration,
        catalog=catalog,
        quotas=Quotas(user=user_quota, org=org_quota),
        reconcile_interval=settings.reconcile_interval_seconds,
        actions=actions,
    )
    revocations = Revocations(
        SqlRevocationStore(engine),
        max_token_lifetime=timedelta(seconds=settings.oidc_max_token_lifetime_seconds),
        leeway=timedelta(seconds=settings.oidc_leeway_seconds),
    )
    services = Services(
        catalog=catalog,
        instances=InstanceReader(make_sessionmaker(engine)),
        lifecycle=lifecycle,
        actions=actions,
        internals=InternalsReader(provisioning, configuration),
        hub=Hub(bus, store.recorded_change, mailbox_limit=settings.subscription_backlog_limit),
        page_limits=PageLimits(default=settings.default_page_size, maximum=settings.max_page_size),
        revocations=revocations,
        security=SecurityStore(engine),
    )
    verifier = TokenVerifier(
        keys=keys,
        issuer=DEV_ISSUER if settings.dev_mode else settings.oidc_issuer,
        audiences=[DEV_PROJECT_ID] if settings.dev_mode else settings.audiences,
        project_id=DEV_PROJECT_ID if settings.dev_mode else settings.oidc_project_id,
        policy=policy_of(settings),
        admin_org_id=admin_org_of(settings),
        algorithms=settings.oidc_algorithms,
        leeway=settings.oidc_leeway_seconds,
        max_token_bytes=settings.oidc_max_token_bytes,
        cache_size=settings.oidc_token_cache_size,
        client_ids=settings.oidc_client_ids,
        max_lifetime=settings.oidc_max_token_lifetime_seconds,
    )
    verifier.revocations = revocations

    async def forget_cached(revocation: Revocation) -> None:
        verifier.forget(revocation.covers)

    revocations.on_revoked(forget_cached)
    logout_client_ids = [DEV_LOGOUT_CLIENT_ID] if settings.dev_mode else settings.oidc_logout_client_ids
    logout_tokens = LogoutTokenVerifier(verifier, client_ids=logout_client_ids) if logout_client_ids else None
    return Runtime(
        settings=settings,
        engine=engine,
        services=services,
        bus=bus,
        keys=keys,
        verifier=verifier,
        cluster=cluster,
        runner=runner,
        store=store,
        configuration=configuration,
        dev_issuer=issuer,
        revocations=revocations,
        logout_tokens=logout_tokens,
        introspector=_introspector(settings),
    )


def policy_of(settings: Settings) -> Policy:
    """The role table in force. Dev mode lets every role discover the schema (GraphiQL's docs and
    suggestions are what a developer trying the gateway out needs)."""
    policy = settings.rbac_policy or DEFAULT_POLICY
    return with_schema_discovery(policy) if settings.dev_mode else policy


def admin_org_of(settings: Settings) -> str | None:
    """The org whose admins cross orgs; None: nobody does. Dev mode names its issuer's default org,
    so the printed admin token still sees every org, while `token --org other` makes an org admin."""
    if settings.oidc_admin_org_id:
        return settings.oidc_admin_org_id
    return DEV_ORG_ID if settings.dev_mode else None


def document_limits(settings: Settings) -> DocumentLimits:
    return DocumentLimits(
        max_query_bytes=settings.max_query_bytes,
        max_depth=settings.max_query_depth,
        max_aliases=settings.max_aliases,
        max_tokens=settings.max_tokens,
        max_selections=settings.max_selections,
        max_directives=settings.max_directives,
    )


def dev_issuer(directory: Path = DEV_DIR) -> DevIssuer:
    """The local issuer of dev mode, its key kept in `directory` so tokens survive restarts."""
    directory.mkdir(parents=True, exist_ok=True)
    return DevIssuer(directory=directory, issuer=DEV_ISSUER, project_id=DEV_PROJECT_ID)


def _introspector(settings: Settings) -> Introspector | None:
    url, client, secret = (
        settings.oidc_introspection_url,
        settings.oidc_introspection_client_id,
        settings.oidc_introspection_client_secret,
    )
    if not (url and client and secret):
        return None
    return Introspector(url, client, secret.get_secret_value())


def _keys(settings: Settings, issuer: DevIssuer | None) -> KeySetCache:
    if issuer is not None:
        # Dev mode trusts its own issuer only, and reads its key set in memory, not over the network.
        transport = httpx.MockTransport(lambda _: httpx.Response(200, json=issuer.jwks()))
        return KeySetCache(
            jwks_url=f"{DEV_ISSUER}/oauth/v2/keys", http=httpx.AsyncClient(transport=transport)
        )
    return KeySetCache(
        jwks_url=settings.oidc_jwks_url,
        issuer=settings.oidc_issuer or None,
        min_refresh_interval=settings.oidc_jwks_min_refresh_seconds,
    )


async def _cluster(settings: Settings) -> Cluster:
    if settings.dev_mode:
        return SimulatedCluster(
            step_delay=settings.dev_step_seconds,
            fail_provisioning_prefix=settings.dev_fail_provisioning_prefix,
        )
    # Optional in dev mode: only a real cluster loads the Kubernetes client (kubernetes_asyncio).
    from services.kubernetes.cluster import connect

    return await connect(settings.kubeconfig)


def _actions_template(settings: Settings, runner: TaskRunner) -> int | None:
    """Semaphore's template of actions.yml; the simulated Semaphore (dev mode) has one of its own."""
    if isinstance(runner, SimulatedSemaphore):
        return runner.actions_template_id
    return settings.semaphore_actions_template_id


def _runner(settings: Settings) -> TaskRunner:
    if settings.dev_mode:
        return SimulatedSemaphore(
            step_delay=settings.dev_step_seconds, fail_configuring_prefix=settings.dev_fail_configuring_prefix
        )
    missing = settings.missing_for_serve()
    if missing or not (settings.semaphore_url and settings.semaphore_token):
        raise ValueError(f"Semaphore is not configured: {', '.join(missing)}")
    assert settings.semaphore_project_id is not None
    assert settings.semaphore_template_id is not None
    return SemaphoreClient(
        settings.semaphore_url,
        settings.semaphore_token.get_secret_value(),
        project_id=settings.semaphore_project_id,
        template_id=settings.semaphore_template_id,
    )
