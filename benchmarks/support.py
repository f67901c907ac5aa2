"""Everything more than one benchmark needs, so each script holds only its own workload and report.

- running: `finish()` runs a benchmark's coroutine on the gateway's event loop, bounded in time, and
  turns `Failed` into exit status 1; `child_process()` starts a process and always stops it again.
- the machine: `free_port()`, and per process `cpu_seconds()` and `rss_kib()` from /proc.
- figures: `percentile()` and `ratio_line()`.
- data and the app: `seeded_database()` (SQLite or PostgreSQL, migrated, instances in final states),
  `gateway_app()` (the real app, built as `serve` builds it but without the periodic reconcile, with an
  admin token), `serve()` (uvicorn).
- the list workload that query_list serves and profile_query_list dissects: `QUERY` (by id: `QUERY_ID`,
  `write_manifest()`), `BODY`, `TRUSTED_BODY`, `BODIES`, `FIELDS`,
  `PAGE_SIZE`, `PATHS`, `check_page()` and the hand-written `baseline_app()` with its `BASELINE_SELECT`.
- the create mutation and its status changes: `CREATE`, `LIFECYCLE`.

Where the test suites already have a helper, it is imported from tests/support, not copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.app import create_app
from gateway.bootstrap import Runtime, build_runtime
from gateway.serving import loop_factory
from gateway.settings import load_settings
from migrations.runner import upgrade
from services.db.engine import make_engine, make_sessionmaker
from services.db.models import InstanceRow
from services.instances.states import InstanceStatus
from tests.support.databases import database
from tests.support.documents import CREATE, LIFECYCLE
from tests.support.factories import insert_instances, instance_row
from tests.support.servers import free_port, serve

__all__ = [
    "BASELINE_SELECT",
    "BODIES",
    "BODY",
    "CREATE",
    "FIELDS",
    "FIELD_SET",
    "LIFECYCLE",
    "PAGE_SIZE",
    "PATHS",
    "QUERY",
    "QUERY_ID",
    "ROOT",
    "TRUSTED_BODY",
    "Failed",
    "Gateway",
    "baseline_app",
    "check_page",
    "child_process",
    "cpu_seconds",
    "finish",
    "free_port",
    "gateway_app",
    "percentile",
    "ratio_line",
    "rss_kib",
    "run",
    "seeded_database",
    "serve",
    "write_manifest",
]

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


# --- Running ---------------------------------------------------------------------------------------------


class Failed(Exception):
    """A check failed or a process misbehaved: the benchmark prints no figures and exits 1."""


def run(main: Coroutine[Any, Any, T]) -> T:
    """On the event loop the gateway serves on (uvloop where installed), so figures match production."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def finish(name: str, main: Coroutine[Any, Any, None], *, time_limit: float | None = None) -> int:
    """Run a benchmark; its exit status: 0, or 1 with one line on stderr when it failed or ran too long."""

    async def bounded() -> None:
        async with asyncio.timeout(time_limit):
            await main

    try:
        run(bounded())
    except Failed as error:
        print(f"{name}: failed: {error}", file=sys.stderr)
    except TimeoutError:
        limit = f"gave up after {time_limit:g} s (--time-limit)" if time_limit is not None else "timed out"
        print(f"{name}: {limit}", file=sys.stderr)
    else:
        return 0
    return 1


@contextlib.asynccontextmanager
async def child_process(
    *argv: str, stop: signal.Signals = signal.SIGTERM, grace: float = 10, **options: Any
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A subprocess (options as for `asyncio.create_subprocess_exec`) sent `stop` on exit, killed after
    `grace` seconds: a failed run leaves no server or client behind."""
    process = await asyncio.create_subprocess_exec(*argv, **options)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(stop)
            try:
                await asyncio.wait_for(process.wait(), timeout=grace)
            except TimeoutError:
                process.kill()
                await process.wait()


# --- The machine -----------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and all its threads, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise Failed(f"no VmRSS for process {pid}")


# --- Figures ---------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], percent: int) -> float:
    """The `percent`th percentile (1-99), interpolated between the nearest samples; 50 is the median."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def ratio_line(name: str, value: float, note: str) -> str:
    """`ratio NAME: 0.123  (NOTE)`: the line a reader (or a smoke test) looks for first."""
    return f"ratio {name}: {value:.3f}  ({note})"


# --- Data and the app ------------------------------------------------------------------------------------

# Final statuses only: the gateway reconciles unfinished instances at start-up and would change them.
STATUSES = ("ACTIVE", "ACTIVE", "ACTIVE", "ACTIVE", "FAILED", "DELETED")


async def seed(database_url: str, rows: int) -> None:
    """Migrate to head and insert `rows` instances (with their first event), as the tests' factories do."""
    engine = make_engine(database_url)
    try:
        await upgrade(engine)
        batch = 1_000
        for start in range(0, rows, batch):
            await insert_instances(
                engine,
                [
                    instance_row(
                        index,
                        status=InstanceStatus(STATUSES[index % len(STATUSES)]),
                        owner_name=f"User {index % 17}",
                        node=f"node-{index % 5}",
                    )
                    for index in range(start, min(start + batch, rows))
                ],
            )
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def seeded_database(kind: str, rows: int) -> AsyncIterator[str]:
    """A throwaway database (`sqlite` file or `postgresql` on the tests' server) with `rows` instances."""
    with tempfile.TemporaryDirectory(prefix="opencsp-bench-") as directory:
        async with database(kind, Path(directory)) as url:
            await seed(url, rows)
            yield url


@dataclass(frozen=True, slots=True)
class Gateway:
    app: Starlette
    runtime: Runtime
    token: str  # an admin token of dev mode's issuer, which the app trusts


async def gateway_app(
    database_url: str, *, compiled_execution: bool = True, trusted_documents: Path | None = None
) -> Gateway:
    """The real gateway with dev mode's peers and issuer. Build it on the loop that will serve it, as
    `opencsp-gateway serve` does; close `runtime` when the app's lifespan does not. `trusted_documents`:
    a manifest (`write_manifest`), as OPENCSP_TRUSTED_DOCUMENTS names one."""
    overrides: dict[str, object] = {"trusted_documents": trusted_documents} if trusted_documents else {}
    settings = load_settings(
        database_url=database_url,
        graphiql=False,
        dev_mode=True,
        compiled_execution=compiled_execution,
        _env_file=None,
        **overrides,  # else OPENCSP_TRUSTED_DOCUMENTS, as `serve` reads it
    )
    runtime = await build_runtime(settings)
    if runtime.dev_issuer is None:
        raise Failed("dev mode built no token issuer")
    # Without the periodic reconcile: dev mode's simulated cluster holds none of the seeded VMs, so it
    # would turn instances FAILED under the measurement (and spend the server's CPU on it).
    app = create_app(runtime, background=False)
    return Gateway(app, runtime, runtime.dev_issuer.issue("admin", ttl=3600))


# --- The list workload -----------------------------------------------------------------------------------

PAGE_SIZE = 100
# GraphQL name -> column; the order is the order of keys in the baseline's JSON.
FIELDS: dict[str, str] = {
    "id": "id",
    "name": "name",
    "status": "status",
    "flavor": "flavor",
    "image": "image",
    "cpu": "cpu",
    "memoryMib": "memory_mib",
    "diskGib": "disk_gib",
    "ipAddress": "ip_address",
    "hostname": "hostname",
    "ownerName": "owner_name",
    "createdAt": "created_at",
}
FIELD_SET = frozenset(FIELDS)
QUERY = f"query List {{ instances(first: {PAGE_SIZE}) {{ nodes {{ {' '.join(FIELDS)} }} }} }}"
QUERY_ID = f"sha256:{hashlib.sha256(QUERY.encode()).hexdigest()}"
# The list document as ad-hoc text, and named by its id in the trusted documents' manifest.
BODY = orjson.dumps({"query": QUERY, "operationName": "List"})
TRUSTED_BODY = orjson.dumps({"documentId": QUERY_ID, "operationName": "List", "variables": {}})
# "trusted" and "adhoc": the gateway (compiled execution on) sent TRUSTED_BODY and BODY;
# "graphql-core": the same gateway with compiled execution off (OPENCSP_COMPILED_EXECUTION=false), sent BODY.
PATHS = {"trusted": "/graphql", "adhoc": "/graphql", "graphql-core": "/graphql", "baseline": "/instances"}
BODIES = {"trusted": TRUSTED_BODY, "adhoc": BODY, "graphql-core": BODY, "baseline": BODY}


def write_manifest(directory: Path) -> Path:
    """A trusted documents' manifest holding the list document (`{"<sha256 hex>": QUERY}`)."""
    path = directory / "trusted-documents.json"
    path.write_bytes(orjson.dumps({QUERY_ID.removeprefix("sha256:"): QUERY}))
    return path


def check_page(status: int, content: bytes) -> list[dict[str, Any]]:
    """The page's nodes, if the answer is a full page of exactly the 12 fields, so a broken server
    cannot look fast."""
    if status != 200:
        raise Failed(f"HTTP {status}: {content[:300]!r}")
    body = orjson.loads(content)
    if body.get("errors"):
        raise Failed(f"errors in response: {body['errors']!r}"[:400])
    nodes: list[dict[str, Any]] = body["data"]["instances"]["nodes"]
    if len(nodes) != PAGE_SIZE:
        raise Failed(f"expected {PAGE_SIZE} items, got {len(nodes)}")
    for node in nodes:
        if node.keys() != FIELD_SET:
            raise Failed(f"expected fields {sorted(FIELD_SET)}, got {sorted(node)}")
    return nodes


# What a hand-written endpoint would run: the 12 columns of the newest page, nothing else.
BASELINE_SELECT = (
    select(*[getattr(InstanceRow, column) for column in FIELDS.values()])
    .order_by(InstanceRow.created_at.desc(), InstanceRow.id.desc())
    .limit(PAGE_SIZE)
)


def baseline_app(database_url: str) -> Starlette:
    """What a hand-written endpoint would do: `BASELINE_SELECT` on the gateway's engine set-up, orjson out."""
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    names = tuple(FIELDS)

    async def list_instances(request: Request) -> Response:
        await request.body()
        async with sessions() as session:
            rows = (await session.execute(BASELINE_SELECT)).all()
        nodes = [dict(zip(names, row, strict=True)) for row in rows]
        # default=str: asyncpg hands back its own UUID class, which orjson does not know.
        body = orjson.dumps({"data": {"instances": {"nodes": nodes}}}, default=str)
        return Response(body, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    return Starlette(routes=[Route(PATHS["baseline"], list_instances, methods=["POST"])], lifespan=lifespan)
