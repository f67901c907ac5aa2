"""How far the gateway is from a hand-written endpoint on its hottest query.

`instances(first: 100)` with 12 fields is served from the same migrated database by a plain Starlette
endpoint that runs the equivalent SQL through the same engine set-up and dumps the rows with orjson (the
baseline), and by the real gateway app, sent the list document three ways: by its id in the trusted
documents' manifest (`{"documentId": "sha256:…"}`, the manifest written here and named by
OPENCSP_TRUSTED_DOCUMENTS), as ad-hoc text, and as text to the gateway with compiled execution off
(graphql-core). Each server runs under its own uvicorn in its own process, so the load generator here does
not share the server's core; the servers take turns in rounds, so a change in the machine's load falls on
all of them. Prints requests/s, p50/p99 latency and server CPU per request of each, then each mode's ratio
to the baseline by req/s and by server CPU. Every response is checked (100 items of exactly 12 fields, no
errors) and one page of each server must be equal, so a broken server cannot look fast.

    .venv/bin/python -m benchmarks.query_list                  # SQLite, ~20 s
    .venv/bin/python -m benchmarks.query_list --database postgresql
    .venv/bin/python -m benchmarks.query_list --smoke          # a few requests: proves the script runs

Exit status: 0 on success, 1 when a check failed or the time limit was hit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks import support
from benchmarks.support import BODIES, PAGE_SIZE, PATHS, Failed

HEADERS = {"content-type": "application/json", "accept": "application/json"}
# Measured in this order in each round; the ratios are each gateway mode's to the baseline.
KINDS = ("baseline", "trusted", "adhoc", "graphql-core")
GOALS = {"trusted": "goal: >= 0.50", "adhoc": "goal: >= 0.30", "graphql-core": "compiled execution off"}


# --- The servers (each in a child process: `-m benchmarks.query_list --serve KIND --database-url URL`) ---


def serve(kind: str, database_url: str) -> None:
    """Serve `kind` on a free loopback port, tell the parent its URL and token on stdout, until SIGTERM."""

    async def main() -> None:
        # The runtime is built on the loop that serves it, as `opencsp-gateway serve` does.
        if kind != "baseline":
            # The manifest comes as OPENCSP_TRUSTED_DOCUMENTS, as a deployment gives it.
            gateway = await support.gateway_app(database_url, compiled_execution=kind != "graphql-core")
            app, token = gateway.app, gateway.token
        else:
            app, token = support.baseline_app(database_url), "-"
        # Same stack as production (uvloop + httptools), minus the access log, on both servers.
        async with support.serve(app, access_log=False) as base:
            print(f"{base} {token}", flush=True)
            await asyncio.Event().wait()  # uvicorn shuts down on SIGTERM, then the process ends

    support.run(main())


@contextlib.asynccontextmanager
async def server_process(kind: str, database_url: str, manifest: str) -> AsyncIterator[tuple[str, int, str]]:
    """Yield (base URL, pid, token) of a child process serving `kind`; stop it on exit."""
    async with support.child_process(
        sys.executable,
        "-m",
        "benchmarks.query_list",
        "--serve",
        kind,
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(support.ROOT),
        env={**os.environ, "OPENCSP_TRUSTED_DOCUMENTS": manifest},
    ) as process:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        if not line.startswith("http://"):
            raise Failed(f"{kind} server did not start (said {line!r})")
        base, token = line.split()
        yield base, process.pid, token


# --- The load ---------------------------------------------------------------------------------------------


Send = Callable[[], Awaitable[tuple[int, bytes]]]


class RawConnection:
    """One kept-alive HTTP/1.1 connection that sends the same POST over and over.

    httpx spends about 2 ms of CPU per request here, more than the baseline server: on 2 cores it would
    cap the baseline and flatter the ratio. This costs a few tens of microseconds.
    """

    def __init__(self, base: str, path: str, token: str, body: bytes) -> None:
        self.address = base.removeprefix("http://").split(":")
        self.request = (
            f"POST {path} HTTP/1.1\r\nHost: {base.removeprefix('http://')}\r\n"
            f"Content-Type: application/json\r\nAccept: application/json\r\n"
            f"Authorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> tuple[int, bytes]:
        if self.reader is not None and self.reader.at_eof():
            # uvicorn closed it after its keep-alive timeout, while the other servers took their turn.
            await self.aclose()
            self.reader = self.writer = None
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
                raise Failed("chunked responses are not expected from these endpoints")
        if length is None:
            raise Failed("response without Content-Length")
        return status, await self.reader.readexactly(length)

    async def aclose(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def clients(
    kind: str, base: str, path: str, body: bytes, concurrency: int, token: str
) -> AsyncIterator[list[Send]]:
    """One `send` per worker: its own raw connection, or a shared httpx pool of `concurrency` connections."""
    if kind == "raw":
        connections = [RawConnection(base, path, token, body) for _ in range(concurrency)]
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
                path, content=body, headers={**HEADERS, "authorization": f"Bearer {token}"}
            )
            return response.status_code, response.content

        yield [send] * concurrency


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

    def percentile(self, percent: int) -> float:
        return support.percentile(self.latencies, percent)


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
            nodes = support.check_page(status, content)
            if not sample:
                sample.extend(nodes)

    await asyncio.gather(*(worker(send) for send in senders))
    return latencies, sample


@dataclass(slots=True)
class Tally:
    """One server's measured requests, summed over the rounds."""

    requests: int = 0
    seconds: float = 0.0
    server_cpu: float | None = 0.0
    client_cpu: float = 0.0


async def measure(database_url: str, manifest: str, args: argparse.Namespace) -> list[Result]:
    """Every kind's server up at once, warmed, then `args.rounds` rounds of `args.requests / rounds`
    requests to each in turn."""
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, tuple[int, list[Send]]] = {}
        for kind in KINDS:
            base, pid, token = await stack.enter_async_context(server_process(kind, database_url, manifest))
            senders = await stack.enter_async_context(
                clients(args.client, base, PATHS[kind], BODIES[kind], args.concurrency, token)
            )
            servers[kind] = (pid, senders)
        samples: dict[str, list[dict[str, Any]]] = {}
        for kind, (_, senders) in servers.items():
            _, samples[kind] = await drive(senders, args.warmup)
        tallies = {kind: Tally() for kind in KINDS}
        latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
        per_round = [
            args.requests // args.rounds + (i < args.requests % args.rounds) for i in range(args.rounds)
        ]
        for count in per_round:
            for kind, (pid, senders) in servers.items():
                tally = tallies[kind]
                cpu_before, client_before = support.cpu_seconds(pid), time.process_time()
                started = time.perf_counter()
                measured, _ = await drive(senders, count)
                tally.seconds += time.perf_counter() - started
                cpu_after = support.cpu_seconds(pid)
                tally.client_cpu += time.process_time() - client_before
                if cpu_before is None or cpu_after is None or tally.server_cpu is None:
                    tally.server_cpu = None
                else:
                    tally.server_cpu += cpu_after - cpu_before
                tally.requests += count
                latencies[kind] += measured
    return [
        Result(kind, t.requests, t.seconds, latencies[kind], t.server_cpu, t.client_cpu, samples[kind])
        for kind, t in tallies.items()
    ]


def report(results: Sequence[Result], args: argparse.Namespace) -> str:
    lines = [
        f"query_list: {args.database}, {args.rows} rows, {args.requests} requests at concurrency "
        f"{args.concurrency} after {args.warmup} warm-up, {args.client} client, {os.cpu_count()} cores",
        f"{'server':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'server CPU ms/req':>20}{'busy':>7}"
        f"{'client CPU ms/req':>20}",
    ]
    for result in results:
        if result.server_cpu is None:
            cpu, busy = f"{'n/a':>20}", f"{'n/a':>7}"
        else:
            cpu = f"{1000 * result.server_cpu / result.requests:>20.2f}"
            busy = f"{result.server_cpu / result.seconds:>7.0%}"
        lines.append(
            f"{result.kind:<14}{result.rate:>10.1f}{1000 * result.percentile(50):>10.2f}"
            f"{1000 * result.percentile(99):>10.2f}{cpu}{busy}"
            f"{1000 * result.client_cpu / result.requests:>20.2f}"
        )
    by_kind = {result.kind: result for result in results}
    baseline = by_kind["baseline"]
    for result in results[1:]:
        lines.append(
            support.ratio_line(
                f"{result.kind}/baseline (req/s)", result.rate / baseline.rate, GOALS[result.kind]
            )
        )
    for result in results[1:]:
        if result.server_cpu and baseline.server_cpu:
            # Capacity when both are CPU-bound; it does not move with a busy machine or a slow client.
            lines.append(
                support.ratio_line(
                    f"{result.kind}/baseline (server CPU per request)",
                    baseline.server_cpu / result.server_cpu,
                    f"baseline busy {baseline.server_cpu / baseline.seconds:.0%}: below ~90% the req/s ratio"
                    " flatters the gateway",
                )
            )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> None:
    async with support.seeded_database(args.database, args.rows) as url:
        with tempfile.TemporaryDirectory(prefix="opencsp-manifest-") as directory:
            manifest = support.write_manifest(Path(directory))
            results = await measure(url, str(manifest), args)
    for result in results[1:]:
        if result.sample != results[0].sample:
            first = next(
                (pair for pair in zip(result.sample, results[0].sample, strict=False) if pair[0] != pair[1]),
                (len(result.sample), len(results[0].sample)),
            )
            raise Failed(f"the {result.kind} gateway and the baseline returned different pages: {first}")
    print(report(results, args))


# --- Entry point ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=1_000, help="measured requests per server")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured requests per server first")
    parser.add_argument(
        "--rounds", type=int, default=5, help="the servers take turns this many times (requests split evenly)"
    )
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
        args.requests, args.concurrency, args.warmup, args.rows, args.rounds = 20, 2, 4, PAGE_SIZE + 20, 2
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 1 or args.rounds < 1:
        parser.error("--requests, --concurrency, --warmup and --rounds must be at least 1")
    if args.rounds > args.requests:
        parser.error("--rounds must not exceed --requests")
    if args.rows < PAGE_SIZE:
        parser.error(f"--rows must be at least {PAGE_SIZE}: every response is checked for a full page")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.database_url)
        return 0
    return support.finish("query_list", run(args), time_limit=args.time_limit)


if __name__ == "__main__":
    raise SystemExit(main())
