"""The domain without a wire: services built as `build_runtime` builds them, over a SQLite file, with the
simulated cluster and Semaphore at zero delay. No sockets: the key set is never fetched, nothing is served.

Migrating costs more than most tests here, so the schema is migrated once per session into a template
file that each test copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.bootstrap import Runtime, build_runtime
from gateway.settings import Settings
from migrations.runner import upgrade
from services.auth.permissions import DEFAULT_POLICY
from services.auth.principal import Principal
from services.db.engine import make_engine
from services.instances.lifecycle import ActionResult, Lifecycle
from services.instances.policy import CreateRequest
from services.instances.records import InstanceEventRecord, InstanceRecord
from services.instances.states import InstanceStatus
from services.simulated.cluster import SimulatedCluster
from services.simulated.semaphore import SimulatedSemaphore

ORG = "org-a"
ADMIN_ORG = "platform"
EXPIRES = datetime(2100, 1, 1, tzinfo=UTC)


def principal(
    role: str | None, *, sub: str = "user-1", org: str = ORG, roles_in: str | None = None
) -> Principal:
    """A caller of `org` holding `role` in `roles_in` (default: its own org), with an admin org set."""
    roles = {} if role is None else {roles_in or org: frozenset({role})}
    return Principal.from_roles(
        sub=sub, org_id=org, roles=roles, policy=DEFAULT_POLICY, expires_at=EXPIRES, admin_org_id=ADMIN_ORG
    )


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep this folder honest: a test that reaches for the network belongs with the end-to-end suites."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("tests/unit opens no sockets")

    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, refuse)


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("schema") / "template.db"

    async def migrate() -> None:
        engine = make_engine(url_of(path))
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture
def database_file(migrated_template: Path, tmp_path: Path) -> Path:
    path = tmp_path / "gateway.db"
    shutil.copyfile(migrated_template, path)
    return path


Domains = Callable[..., Awaitable["Domain"]]


@dataclass
class Domain:
    """The wired services of one process, plus what the tests drive and read."""

    runtime: Runtime
    cluster: SimulatedCluster
    semaphore: SimulatedSemaphore
    _background: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def lifecycle(self) -> Lifecycle:
        return self.runtime.services.lifecycle

    async def run_in_background(self) -> None:
        """The watch and periodic reconcile, as a served process runs them; back once the watch listed."""
        self._background.append(asyncio.create_task(self.lifecycle.run(), name="lifecycle"))
        async with asyncio.timeout(5):
            while not self.lifecycle.watch_health.connected:
                await asyncio.sleep(0.001)

    async def create(self, name: str, caller: Principal | None = None, **fields: Any) -> ActionResult:
        request = CreateRequest(
            name=name, flavor=fields.pop("flavor", "small"), image=fields.pop("image", "debian-12"), **fields
        )
        return await self.lifecycle.create(caller or principal("user"), request)

    async def create_ok(self, name: str, caller: Principal | None = None, **fields: Any) -> InstanceRecord:
        outcome = await self.create(name, caller, **fields)
        assert outcome.errors == [], outcome.errors
        assert outcome.instance is not None
        return outcome.instance

    async def get(self, instance_id: uuid.UUID) -> InstanceRecord:
        record = await self.lifecycle.store.get(instance_id)
        assert record is not None
        return record

    async def wait_for(
        self, instance_id: uuid.UUID, status: InstanceStatus, timeout: float = 30.0
    ) -> InstanceRecord:
        """Until the row reaches `status`; the timeout only guards against a hang (generous: xdist runs
        four workers on two cores, and a busy machine stretches the zero-delay simulations)."""
        last: InstanceRecord | None = None
        try:
            async with asyncio.timeout(timeout):
                while (last := await self.get(instance_id)).status is not status:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise AssertionError(f"{instance_id} did not reach {status}; last: {last}") from None
        return last

    async def settle(self, rounds: int = 50) -> None:
        """Let the zero-delay simulations run their queued steps."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def events(self, instance_id: uuid.UUID) -> list[InstanceEventRecord]:
        history = await self.runtime.services.instances.events([instance_id], limit=100, newest=False)
        return history[instance_id]

    async def statuses(self, instance_id: uuid.UUID) -> list[str]:
        return [event.to_status.value for event in await self.events(instance_id)]

    async def aclose(self) -> None:
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runtime.aclose()


@pytest.fixture
async def make_domain(database_file: Path) -> AsyncIterator[Domains]:
    made: list[Domain] = []

    async def factory(**overrides: Any) -> Domain:
        settings = Settings(  # type: ignore[call-arg]
            **{
                "database_url": url_of(database_file),
                "oidc_issuer": "https://issuer.invalid",
                "oidc_project_id": "project-1",
                "oidc_jwks_url": "https://issuer.invalid/oauth/v2/keys",  # never fetched here
                "oidc_admin_org_id": ADMIN_ORG,
                # Only the watch moves instances unless a test reconciles: each step is then seen in order.
                "reconcile_interval_seconds": 60.0,
                **overrides,
            },
            _env_file=None,
        )
        cluster = SimulatedCluster(step_delay=0)
        semaphore = SimulatedSemaphore(step_delay=0)
        runtime = await build_runtime(settings, cluster=cluster, runner=semaphore)
        # The playbook's webhook hint: wake the poller instead of waiting out its first interval.
        semaphore.on_finished = runtime.hint_task
        domain = Domain(runtime, cluster, semaphore)
        made.append(domain)
        return domain

    yield factory
    for domain in made:
        await domain.aclose()


@pytest.fixture
async def domain(make_domain: Domains) -> Domain:
    """Default settings, with the watch and periodic reconcile running."""
    made = await make_domain()
    await made.run_in_background()
    return made


@pytest.fixture
async def domain_without_watch(make_domain: Domains) -> Domain:
    """Nothing moves an instance but what the test calls."""
    return await make_domain()
