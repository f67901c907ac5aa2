"""How far the gateway is from a hand-written endpoint on its hottest query.

`instances(first: 100)` with 12 fields is served twice from the same migrated database: by the real gateway
app and by a plain Starlette endpoint that runs the equivalent SQL through the same engine set-up and dumps
the rows with orjson. Each runs under its own uvicorn in its own process, so the load generator here does not
share the server's core. Prints requests/s, p50/p99 latency and server CPU per request of each, then the
ratio gateway/baseline. Every response is checked (100 items of exactly 12 fields, no errors) and one page
of each server must be equal, so a broken server cannot look fast.

    .venv/bin/python benchmarks/query_list.py                  # SQLite, ~15 s
    .venv/bin/python benchmarks/query_list.py --database postgresql
    .venv/bin/python benchmarks/query_list.py --smoke          # a few requests: proves the script runs

Exit status: 0 on success, 1 when a check failed or the time limit was hit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import orjson  # noqa: E402

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
BODY = orjson.dumps({"query": QUERY, "operationName": "List"})
HEADERS = {"content-type": "application/json", "accept": "application/json"}
PATHS = {"gateway": "/graphql", "baseline": "/instances"}
# Final statuses only: the gateway reconciles unfinished instances at start-up and would change them.
STATUSES = ("ACTIVE", "ACTIVE", "ACTIVE", "ACTIVE", "FAILED", "DELETED")


class CheckFailed(Exception):
    """A server answered something other than the expected page."""


# --- The servers (each in a child process: `query_list.py --serve KIND --database-url URL`) ---


async def gateway_app(database_url: str) -> tuple[Any, str]:
    """The real gateway with dev mode's peers and issuer, and an admin token of that issuer."""
    from gateway.app import create_app
    from gateway.bootstrap import build_runtime
    from gateway.settings import Settings

    settings = Settings(database_url=database_url, graphiql=False, dev_mode=True, _env_file=None)  # type: ignore[call-arg]
    runtime = await build_runtime(settings)
    assert runtime.dev_issuer is not None
    return create_app(runtime), runtime.dev_issuer.issue("admin", ttl=3600)


def baseline_app(database_url: str) -> Any:
    """What a hand-written endpoint would do: one SELECT of the 12 columns, newest first, orjson out."""
    from sqlalchemy import select
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from services.db.engine import make_engine, make_sessionmaker
    from services.db.models import Instance

    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    query = (
        select(*[getattr(Instance, column) for column in FIELDS.values()])
        .order_by(Instance.created_at.desc(), Instance.id.desc())
        .limit(PAGE_SIZE)
    )
    names = tuple(FIELDS)

    async def list_instances(request: Request) -> Response:
        await request.body()
        async with sessions() as session:
            rows = (await session.execute(query)).all()
        nodes = [dict(zip(names, row, strict=True)) for row in rows]
        # default=str: asyncpg hands back its own UUID class, which orjson does not know.
        body = orjson.dumps({"data": {"instances": {"nodes": nodes}}}, default=str)
        return Response(body, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    return Starlette(routes=[Route(PATHS["baseline"], list_instances, methods=["POST"])], lifespan=lifespan)


def serve(kind: str, database_url: str) -> None:
    """Bind a free loopback port, tell the parent on stdout, serve until SIGTERM."""
    import uvicorn
    import uvloop

    async def main() -> None:
        # The runtime is built on the loop that serves it, as `opencsp-gateway serve` does.
        app, token = (
            await gateway_app(database_url) if kind == "gateway" else (baseline_app(database_url), "-")
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)  # connections queue here until uvicorn accepts them
        print(f"PORT {sock.getsockname()[1]} TOKEN {token}", flush=True)
        # Same stack as production (uvloop + httptools via "auto"), minus the access log, on both servers.
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        await uvicorn.Server(config).serve(sockets=[sock])

    uvloop.run(main())


@contextlib.asynccontextmanager
async def server_process(kind: str, database_url: str) -> AsyncIterator[tuple[str, int, str]]:
    """Yield (base URL, pid) of a child process serving `kind`; stop it on exit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        "--serve",
        kind,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        if not line.startswith("PORT "):
            raise CheckFailed(f"{kind} server did not start (said {line!r})")
        _, port, _, token = line.split()
        yield f"http://127.0.0.1:{int(port)}", process.pid, token
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


# --- The database ----------------------------------------------------------------------------------------


async def seed(database_url: str, rows: int) -> None:
    """Migrate to head and insert `rows` instances (with their first event), as the tests' factories do."""
    from migrations.runner import upgrade
    from services.db.engine import make_engine
    from services.db.models import InstanceStatus
    from tests.support.factories import insert_instances, instance_row

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
async def database(kind: str) -> AsyncIterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="opencsp-bench-") as directory:
            yield f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
    else:
        from tests.support.databases import postgres_database

        async with postgres_database() as url:
            yield url


# --- The load ---------------------------------------------------------------------------------------------


def check(status: int, content: bytes) -> list[dict[str, Any]]:
    if status != 200:
        raise CheckFailed(f"HTTP {status}: {content[:300]!r}")
    body = orjson.loads(content)
    if body.get("errors"):
        raise CheckFailed(f"errors in response: {body['errors']!r}"[:400])
    nodes: list[dict[str, Any]] = body["data"]["instances"]["nodes"]
    if len(nodes) != PAGE_SIZE:
        raise CheckFailed(f"expected {PAGE_SIZE} items, got {len(nodes)}")
    for node in nodes:
        if node.keys() != FIELD_SET:
            raise CheckFailed(f"expected fields {sorted(FIELD_SET)}, got {sorted(node)}")
    return nodes


Send = Callable[[], Awaitable[tuple[int, bytes]]]


class RawConnection:
    """One kept-alive HTTP/1.1 connection that sends the same POST over and over.

    httpx spends about 2 ms of CPU per request here, more than the baseline server: on 2 cores it would
    cap the baseline and flatter the ratio. This costs a few tens of microseconds.
    """

    def __init__(self, base: str, path: str, token: str) -> None:
        self.address = base.removeprefix("http://").split(":")
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {base.removeprefix('http://')}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> tuple[int, bytes]:
        if self.reader is None or self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.address[0], int(self.address[1]))
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = None
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
            elif name.strip().lower() == b"transfer-encoding":
                raise CheckFailed("chunked responses are not expected from these endpoints")
        if length is None:
            raise CheckFailed("response without Content-Length")
        return status, await self.reader.readexactly(length)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def clients(kind: str, base: str, path: str, concurrency: int, token: str) -> AsyncIterator[list[Send]]:
    """One `send` per worker: its own raw connection, or a shared httpx pool of `concurrency` connections."""
    if kind == "raw":
        connections = [RawConnection(base, path, token) for _ in range(concurrency)]
        try:
            yield [connection.send for connection in connections]
        finally:
            for connection in connections:
                await connection.aclose()
        return
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:

        async def send() -> tuple[int, bytes]:
            response = await client.post(
                path, content=BODY, headers={**HEADERS, "authorization": f"Bearer {token}"}
            )
            return response.status_code, response.content

        yield [send] * concurrency


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process and all its threads, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Result:
    kind: str
    requests: int
    seconds: float
    latencies: Sequence[float]
    server_cpu: float | None
    client_cpu: float
    sample: list[dict[str, Any]]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def drive(senders: Sequence[Send], total: int) -> tuple[list[float], list[dict[str, Any]]]:
    """`total` requests from one worker per sender; every answer is checked."""
    latencies: list[float] = []
    sample: list[dict[str, Any]] = []
    remaining = iter(range(total))

    async def worker(send: Send) -> None:
        for _ in remaining:
            started = time.perf_counter()
            status, content = await send()
            latencies.append(time.perf_counter() - started)
            nodes = check(status, content)
            if not sample:
                sample.extend(nodes)

    await asyncio.gather(*(worker(send) for send in senders))
    return latencies, sample


async def measure(kind: str, database_url: str, args: argparse.Namespace) -> Result:
    async with (
        server_process(kind, database_url) as (base, pid, token),
        clients(args.client, base, PATHS[kind], args.concurrency, token) as senders,
    ):
        await drive(senders, args.warmup)
        cpu_before, client_before = cpu_seconds(pid), time.process_time()
        started = time.perf_counter()
        latencies, sample = await drive(senders, args.requests)
        seconds = time.perf_counter() - started
        cpu_after, client_after = cpu_seconds(pid), time.process_time()
    server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Result(kind, args.requests, seconds, latencies, server_cpu, client_after - client_before, sample)


def report(results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"query_list: {args.database}, {args.rows} rows, {args.requests} requests at concurrency "
        f"{args.concurrency} after {args.warmup} warm-up, {args.client} client, {os.cpu_count()} cores",
        f"{'server':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'server CPU ms/req':>20}{'busy':>7}"
        f"{'client CPU ms/req':>20}",
    ]
    for result in results:
        if result.server_cpu is None:
            cpu, busy = f"{'n/a':>20}", f"{'n/a':>7}"
        else:
            cpu = f"{1000 * result.server_cpu / result.requests:>20.2f}"
            busy = f"{result.server_cpu / result.seconds:>7.0%}"
        lines.append(
            f"{result.kind:<10}{result.rate:>10.1f}{1000 * result.percentile(0.5):>10.2f}"
            f"{1000 * result.percentile(0.99):>10.2f}{cpu}{busy}"
            f"{1000 * result.client_cpu / result.requests:>20.2f}"
        )
    by_kind = {result.kind: result for result in results}
    gateway, baseline = by_kind["gateway"], by_kind["baseline"]
    lines.append(f"ratio gateway/baseline (req/s): {gateway.rate / baseline.rate:.3f}  (goal: >= 0.25)")
    if gateway.server_cpu and baseline.server_cpu:
        # Capacity when both are CPU-bound; it does not move with a busy machine or a slow client.
        lines.append(
            f"ratio by server CPU per request: {baseline.server_cpu / gateway.server_cpu:.3f}"
            f"  (baseline busy {baseline.server_cpu / baseline.seconds:.0%}: below ~90% the req/s ratio"
            " flatters the gateway)"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    async with database(args.database) as url:
        await seed(url, args.rows)
        results = [await measure(kind, url, args) for kind in ("baseline", "gateway")]
    if results[0].sample != results[1].sample:
        raise CheckFailed("the gateway and the baseline returned different pages")
    print(report(results, args))
    return 0


# --- Entry point ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1_000, help="measured requests per server")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests per server first")
    parser.add_argument("--rows", type=int, default=1_000, help="instances in the database")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--client", choices=["raw", "httpx"], default="raw", help="load generator (httpx is CPU-heavy)"
    )
    parser.add_argument("--time-limit", type=float, default=120, help="give up after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="a few requests, to prove the script runs")
    parser.add_argument("--serve", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.concurrency, args.warmup, args.rows = 20, 2, 4, PAGE_SIZE + 20
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0:
        parser.error("--requests and --concurrency must be at least 1, --warmup at least 0")
    if args.rows < PAGE_SIZE:
        parser.error(f"--rows must be at least {PAGE_SIZE}: every response is checked for a full page")
    return args


def event_loop_runner() -> Callable[[Awaitable[int]], int]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run  # type: ignore[return-value]
    return lambda main: uvloop.run(main)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.database_url)
        return 0

    async def bounded() -> int:
        async with asyncio.timeout(args.time_limit):
            return await run(args)

    try:
        return event_loop_runner()(bounded())
    except CheckFailed as error:
        print(f"query_list: check failed: {error}", file=sys.stderr)
    except TimeoutError:
        print(f"query_list: gave up after {args.time_limit:g} s (--time-limit)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
