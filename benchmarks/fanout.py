"""How one gateway worker fans status changes out to many idle websocket subscribers.

One `opencsp-gateway dev` process (one uvicorn worker, SQLite, the in-process bus, the simulated cluster)
serves N graphql-transport-ws subscribers held by several Node processes (tests/node/fanout-client.mjs,
the `ws` package). A warm-up instance proves every subscription is in place; then instances are ordered
one every `--interval` seconds until K status changes have happened, and every subscriber must receive
all K. Prints:

- delivery latency p50/p99/max: the client's receive time minus the change's `at` (the instant the
  transition was written, just before its commit publishes it; one machine, one clock);
- server memory per idle subscriber: the worker's RSS with N subscribers minus before any, over N;
- fan-out time and deliveries/s: how long one change takes to reach its last subscriber (median over
  the K changes), and N over that time.

    .venv/bin/python -m benchmarks.fanout                        # 1,000 subscribers, 20 changes
    .venv/bin/python -m benchmarks.fanout --subscribers 10000
    .venv/bin/python -m benchmarks.fanout --smoke                # 20 subscribers, 4 changes: a few seconds

Then the same clients and changes against benchmarks/fanout_baseline.py (a hand-written ASGI broadcast
server under the same uvicorn settings), its summary labelled as the baseline, and `ratio ...` lines:
gateway / baseline for p50, p99, max, memory per idle subscriber and fan-out time (`--no-baseline` skips it).

Exit status: 0 on success, 1 when a subscriber missed a change, a process failed, or the time limit hit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks import support
from benchmarks.support import CREATE, LIFECYCLE, Failed

NODE_DIR = support.ROOT / "tests" / "node"
CLIENT = NODE_DIR / "fanout-client.mjs"
GATEWAY = Path(sys.executable).with_name("opencsp-gateway")
CHANGES_PER_INSTANCE = len(LIFECYCLE)  # PENDING, PROVISIONING, CONFIGURING, ACTIVE


def raise_fd_limit(needed: int) -> None:
    """The worker holds one descriptor per socket (the clients split theirs); children inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:  # allowed to root only
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
        except (ValueError, OSError):
            raise Failed(
                f"need {needed} open files, the hard limit is {hard}: raise it (ulimit -Hn)"
            ) from None
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def quota_env(quota: int) -> dict[str, str]:
    """Quotas that let the benchmark's user order `quota` small instances, whatever the defaults."""
    values = {"INSTANCES": quota, "CPU": quota, "MEMORY_MIB": quota * 4096}
    return {
        f"OPENCSP_QUOTA_{scope}_{name}": str(v) for scope in ("USER", "ORG") for name, v in values.items()
    }


@contextlib.asynccontextmanager
async def gateway(
    directory: Path, port: int, quota: int, profile: str | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    env = {
        **os.environ,
        "OPENCSP_DEV_STEP_SECONDS": "0.1",
        "OPENCSP_LOG_LEVEL": "WARNING",
        # 10,000 sockets opened in bursts on a busy machine: an init can wait longer than the default allows.
        "OPENCSP_WEBSOCKET_INIT_TIMEOUT_SECONDS": "120",
        **quota_env(quota),
    }
    # --profile: the worker under cProfile (slower; for where the time goes, not for the figures).
    profiled = (sys.executable, "-m", "cProfile", "-o", profile) if profile else ()
    async with support.child_process(
        *profiled,
        str(GATEWAY),
        "dev",
        "--port",
        str(port),
        stop=signal.SIGINT,
        grace=15,
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    ) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await wait_ready(http, process)
        yield process


async def wait_ready(http: httpx.AsyncClient, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        with contextlib.suppress(httpx.TransportError):
            if (await http.get("/readyz")).status_code == 200:
                return
        if process.returncode is not None:
            assert process.stderr is not None
            raise Failed(f"the server exited: {(await process.stderr.read()).decode()[-2000:]}")
        await asyncio.sleep(0.1)
    raise Failed("the server did not become ready in 30 s")


async def token(directory: Path, role: str) -> str:
    process = await asyncio.create_subprocess_exec(
        str(GATEWAY), "token", "--role", role, cwd=directory, stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    if process.returncode != 0:
        raise Failed("`opencsp-gateway token` failed")
    return stdout.decode().strip()


async def read_line(process: asyncio.subprocess.Process, wanted: str, seconds: float) -> Any:
    """The next JSON line of a client that carries `wanted`; a closed socket is a failure."""
    assert process.stdout is not None
    while True:
        try:
            line = await asyncio.wait_for(process.stdout.readline(), seconds)
        except TimeoutError:
            raise Failed(f"no {wanted!r} from a client within {seconds:.0f} s") from None
        if not line:
            raise Failed(f"a client exited before reporting {wanted!r}")
        message = json.loads(line)
        if "closed" in message:
            raise Failed(f"the gateway closed a subscriber: {message}")
        if wanted in message:
            return message[wanted]


async def order(http: httpx.AsyncClient, name: str) -> None:
    body = (await http.post("/graphql", json={"query": CREATE, "variables": {"name": name}})).json()
    if body.get("errors") or body["data"]["createInstance"]["userErrors"]:
        raise Failed(f"creating {name} failed: {body}")


STEP_SECONDS = 0.1  # OPENCSP_DEV_STEP_SECONDS: the simulated cluster's pace, which the baseline copies
Publish = Callable[[str], Awaitable[None]]  # starts the changes of one instance of that name


async def measure(
    server: asyncio.subprocess.Process,
    url: str,
    authorization: str,
    publish: Publish,
    subscribers: int,
    clients: int,
    changes: int,
    interval: float,
    rss: Callable[[], int] | None = None,
) -> dict[str, float]:
    """The clients' side, the same for the gateway and the baseline: subscribe, warm up, time K changes.
    `rss`: the server's resident KiB (default: the server process's own)."""
    resident = rss or (lambda: support.rss_kib(server.pid))
    node = shutil.which("node")
    assert node is not None  # checked by run()
    instances = -(-changes // CHANGES_PER_INSTANCE)
    measured = instances * CHANGES_PER_INSTANCE
    await publish("warm-up-probe-0")  # first requests load what is loaded lazily
    await asyncio.sleep(1)
    idle_before = resident()
    shares = [subscribers // clients + (n < subscribers % clients) for n in range(clients)]
    async with contextlib.AsyncExitStack() as clients_running:
        processes = [
            await clients_running.enter_async_context(
                support.child_process(
                    node,
                    str(CLIENT),
                    url,
                    str(share),
                    str(measured),
                    stop=signal.SIGKILL,
                    cwd=NODE_DIR,
                    env={**os.environ, "FANOUT_AUTHORIZATION": authorization},
                    stdout=asyncio.subprocess.PIPE,
                    limit=256 * 1024 * 1024,  # the latencies line is one long line
                )
            )
            for share in shares
            if share
        ]
        for process in processes:
            await read_line(process, "acked", seconds=120 + subscribers / 20)  # a shared machine is slow
        await publish("warm-1")
        for process in processes:
            await read_line(process, "warm", seconds=60)
        await asyncio.sleep(1)
        idle_after = resident()

        for n in range(instances):
            await publish(f"bench-{n}")
            await asyncio.sleep(interval)
        per_change: dict[str, list[float]] = {}
        for process in processes:
            part = await read_line(process, "latencies", seconds=300 + 60 * instances)
            for key, values in part.items():
                per_change.setdefault(key, []).extend(values)
    latencies = [value for values in per_change.values() for value in values]
    if len(per_change) != measured or len(latencies) != subscribers * measured:
        raise Failed(f"expected {subscribers} x {measured} deliveries, got {len(latencies)}")
    # A change's fan-out takes until its last subscriber has it: N deliveries in that time.
    fan_out_s = statistics.median(max(values) for values in per_change.values()) / 1000
    return {
        "subscribers": subscribers,
        "changes": measured,
        "p50_ms": statistics.median(latencies),
        "p99_ms": support.percentile(latencies, 99),
        "max_ms": max(latencies),
        "kib_per_idle_subscriber": (idle_after - idle_before) / subscribers,
        "server_rss_mib": idle_after / 1024,
        "fan_out_ms": fan_out_s * 1000,
        "deliveries_per_s": subscribers / max(fan_out_s, 1e-3),
    }


def check_node() -> None:
    if shutil.which("node") is None or not (NODE_DIR / "node_modules" / "ws").exists():
        raise Failed(
            "needs Node.js and tests/node installed: make tests/node/node_modules/.package-lock.json"
        )


async def run(
    subscribers: int, clients: int, changes: int, interval: float, profile: str | None = None
) -> dict[str, float]:
    """The gateway: `opencsp-gateway dev`, changes made by ordering instances."""
    check_node()
    raise_fd_limit(subscribers + 1024)
    instances = -(-changes // CHANGES_PER_INSTANCE)
    port = support.free_port()
    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        directory = Path(tmp)
        async with gateway(directory, port, quota=instances + 10, profile=profile) as server:
            viewer, admin = await token(directory, "viewer"), await token(directory, "admin")
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {admin}"}, timeout=30
            ) as http:

                async def publish(name: str) -> None:
                    await order(http, name)

                return await measure(
                    server,
                    f"ws://127.0.0.1:{port}/graphql",
                    f"Bearer {viewer}",
                    publish,
                    subscribers,
                    clients,
                    changes,
                    interval,
                )


async def run_baseline(subscribers: int, clients: int, changes: int, interval: float) -> dict[str, float]:
    """The hand-written broadcast server (benchmarks/fanout_baseline.py), changes at the simulator's pace."""
    check_node()
    raise_fd_limit(subscribers + 1024)
    port = support.free_port()
    async with (
        support.child_process(
            sys.executable,
            "-m",
            "benchmarks.fanout_baseline",
            "--port",
            str(port),
            stop=signal.SIGINT,
            cwd=support.ROOT,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        ) as server,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        await wait_ready(http, server)
        steps: list[asyncio.Task[None]] = []

        async def changes_of(name: str) -> None:
            for status in LIFECYCLE:
                await asyncio.sleep(STEP_SECONDS)
                (await http.post("/publish", json={"name": name, "to": status})).raise_for_status()

        async def publish(name: str) -> None:  # returns at once, as an order does
            steps.append(asyncio.create_task(changes_of(name)))

        result = await measure(
            server,
            f"ws://127.0.0.1:{port}/graphql",
            "Bearer none",
            publish,
            subscribers,
            clients,
            changes,
            interval,
        )
        await asyncio.gather(*steps)
        return result


def summary(result: dict[str, float], label: str = "") -> str:
    return (
        f"{label}{result['subscribers']:,} subscribers x {result['changes']} changes on one worker: "
        f"latency p50 {result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, "
        f"max {result['max_ms']:.0f} ms; "
        f"{result['kib_per_idle_subscriber']:.1f} KiB per idle subscriber "
        f"(worker RSS {result['server_rss_mib']:.0f} MiB); "
        f"one change reaches all in {result['fan_out_ms']:.0f} ms (median): "
        f"{result['deliveries_per_s']:,.0f} deliveries/s"
    )


async def bench(args: argparse.Namespace) -> None:
    clients = args.clients or max(1, -(-args.subscribers // 2500))
    result = await run(args.subscribers, clients, args.changes, args.interval, args.profile)
    print(summary(result), flush=True)
    if args.no_baseline:
        return
    base = await run_baseline(args.subscribers, clients, args.changes, args.interval)
    print(summary(base, "baseline (hand-written ASGI broadcast): "), flush=True)
    for key, name in (
        ("p50_ms", "p50"),
        ("p99_ms", "p99"),
        ("max_ms", "max"),
        ("kib_per_idle_subscriber", "memory per idle subscriber"),
        ("fan_out_ms", "fan-out time"),
    ):
        print(
            support.ratio_line(
                name, result[key] / max(base[key], 1e-9), "gateway / baseline, lower is better"
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=0, help="Node processes (default: one per 2,500)")
    parser.add_argument("--changes", type=int, default=20, help="status changes to measure (4 per instance)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between orders")
    parser.add_argument("--smoke", action="store_true", help="20 subscribers, 4 changes")
    parser.add_argument("--no-baseline", action="store_true", help="measure the gateway only")
    parser.add_argument(
        "--profile", metavar="FILE", help="run the gateway under cProfile, its stats written to FILE"
    )
    args = parser.parse_args()
    if args.smoke:
        args.subscribers, args.changes, args.interval = 20, 4, 0.1
    return support.finish("fanout", bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
