"""N workers hold N times the subscribers at the same latency? `serve --workers N` on PostgreSQL.

Runs `opencsp-gateway serve` twice on a fresh migrated PostgreSQL database, as an operator runs it, with
the peers it needs served from this process over real HTTP: a JWKS issuer, the Kubernetes API stand-in
with a stand-in tofu-controller, and the Semaphore stand-in (tests/peers). First one worker with S
subscribers, then N workers with N x S, the same Node clients (tests/node/fanout-client.mjs) and the same
changes: instances ordered over HTTP on the shared port (whichever worker accepts the order commits its
changes; every worker LISTENs and fans each change out to its own sockets). Prints each run's summary as
benchmarks.fanout does (memory is the whole process tree's RSS growth per idle subscriber) and `ratio ...`
lines: N workers / one worker, lower is better; "the same latency" is a ratio near 1. A third run gives
one worker all N x S subscribers, to tell what the workers buy at that load on this machine.

    .venv/bin/python -m benchmarks.fanout_workers --subscribers 10000 --workers 2   # 1 x 10k, then 2 x 10k
    .venv/bin/python -m benchmarks.fanout_workers --smoke

The clients, the peers and this process share the machine's cores with the workers: on 2 cores, N
workers have no core each, which the figures show. Exit status as benchmarks.fanout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks import fanout, support
from benchmarks.support import Failed
from migrations.runner import upgrade
from services.auth.dev_issuer import DevIssuer
from services.db.engine import make_engine
from tests.lifecycle.conftest import TofuController
from tests.peers.jwks_server import JwksServer
from tests.peers.kube_api import KubeApiEmulator
from tests.peers.semaphore_api import SemaphoreEmulator
from tests.support.databases import postgres_database

PROJECT, ORG, NAMESPACE = "bench-project", "bench-org", "opencsp-instances"
SEMAPHORE_PROJECT, SEMAPHORE_TEMPLATE = 1, 7


@dataclass(frozen=True, slots=True)
class Peers:
    issuer: DevIssuer
    jwks_url: str
    issuer_url: str
    kubeconfig: Path
    semaphore: SemaphoreEmulator


@contextlib.asynccontextmanager
async def peers(directory: Path) -> AsyncIterator[Peers]:
    """The issuer, the cluster (with a controller reconciling at the dev simulator's pace) and Semaphore."""
    async with JwksServer() as jwks, KubeApiEmulator() as kube:
        issuer = DevIssuer(directory=directory / "issuer", issuer=jwks.issuer, project_id=PROJECT)
        jwks.jwks = issuer.jwks()
        semaphore = SemaphoreEmulator(projects={SEMAPHORE_PROJECT: {SEMAPHORE_TEMPLATE}})
        await semaphore.start()
        semaphore.auto(("starting", "running", "success"), delay=fanout.STEP_SECONDS)
        controller = asyncio.create_task(
            TofuController(kube, NAMESPACE, step=fanout.STEP_SECONDS).run(), name="tofu-controller"
        )
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(
            f"""apiVersion: v1
kind: Config
clusters: [{{name: emu, cluster: {{server: "{kube.url}"}}}}]
users: [{{name: gw, user: {{token: bench-token}}}}]
contexts: [{{name: emu, context: {{cluster: emu, user: gw}}}}]
current-context: emu
"""
        )
        try:
            yield Peers(issuer, jwks.jwks_url, jwks.issuer, kubeconfig, semaphore)
        finally:
            controller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await controller
            await semaphore.stop()


def tree_rss_kib(pid: int) -> int:
    """RSS of a process and all its descendants (the workers are children of `serve`)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, Failed):
            total += support.rss_kib(current)
        pending.extend(children.get(current, ()))
    return total


@contextlib.asynccontextmanager
async def serve(
    directory: Path, database_url: str, peers: Peers, workers: int, quota: int
) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    """`opencsp-gateway serve --workers N` on a free port; (the process, the port) once every worker
    answers on its metrics port."""
    port, metrics = support.free_port(), support.free_port()
    # Worker i serves /metrics on metrics + i: take a base whose next ports are free too.
    while any(not _free(metrics + i) for i in range(workers)):
        metrics = support.free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OPENCSP_")},
        "PYTHONPATH": str(support.ROOT),
        "OPENCSP_DATABASE_URL": database_url,
        "OPENCSP_HOST": "127.0.0.1",
        "OPENCSP_PORT": str(port),
        "OPENCSP_METRICS_PORT": str(metrics),
        "OPENCSP_LOG_LEVEL": "WARNING",
        "OPENCSP_OIDC_ISSUER": peers.issuer_url,
        "OPENCSP_OIDC_JWKS_URL": peers.jwks_url,
        "OPENCSP_OIDC_PROJECT_ID": PROJECT,
        "OPENCSP_KUBECONFIG": str(peers.kubeconfig),
        "OPENCSP_TERRAFORM_NAMESPACE": NAMESPACE,
        "OPENCSP_SEMAPHORE_URL": peers.semaphore.url,
        "OPENCSP_SEMAPHORE_TOKEN": peers.semaphore.token,
        "OPENCSP_SEMAPHORE_PROJECT_ID": str(SEMAPHORE_PROJECT),
        "OPENCSP_SEMAPHORE_TEMPLATE_ID": str(SEMAPHORE_TEMPLATE),
        "OPENCSP_WEBHOOK_SECRET": "bench-webhook-secret-of-at-least-32-bytes",
        "OPENCSP_WEBSOCKET_INIT_TIMEOUT_SECONDS": "120",  # as benchmarks.fanout: bursts of opens
        **fanout.quota_env(quota),
    }
    async with support.child_process(
        str(fanout.GATEWAY),
        "serve",
        "--workers",
        str(workers),
        stop=signal.SIGTERM,
        grace=30,
        cwd=directory,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    ) as process:
        async with httpx.AsyncClient() as http:
            for _ in range(600):
                up = 0
                for index in range(workers):
                    with contextlib.suppress(httpx.TransportError):
                        up += (
                            await http.get(f"http://127.0.0.1:{metrics + index}/metrics")
                        ).status_code == 200
                if up == workers:
                    break
                if process.returncode is not None:
                    assert process.stderr is not None
                    raise Failed(f"serve exited: {(await process.stderr.read()).decode()[-2000:]}")
                await asyncio.sleep(0.1)
            else:
                raise Failed(f"{workers} worker(s) did not come up in 60 s")
        yield process, port


def _capped(needed: int) -> bool:
    """Whether the hard descriptor limit is below `needed` and cannot be raised (even as root, a
    container may forbid it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard >= needed:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, needed))
    except (ValueError, OSError):
        return True
    return False


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def run(
    workers: int, subscribers: int, clients: int, changes: int, interval: float
) -> dict[str, float]:
    """One `serve --workers N` run on its own fresh database."""
    fanout.check_node()
    # One descriptor per socket in the worker that holds it (the kernel spreads them about evenly; this
    # process and each Node client hold far fewer): children inherit the limit.
    fanout.raise_fd_limit(min(subscribers, subscribers * 5 // (4 * workers)) + 1024)
    instances = -(-changes // fanout.CHANGES_PER_INSTANCE) + 2  # and the two warm-up instances
    with tempfile.TemporaryDirectory(prefix="fanout-workers-") as tmp:
        directory = Path(tmp)
        async with postgres_database() as url, peers(directory) as stand_ins:
            engine = make_engine(url)
            try:
                await upgrade(engine)
            finally:
                await engine.dispose()
            async with serve(directory, url, stand_ins, workers, quota=instances + 10) as (server, port):
                viewer = stand_ins.issuer.issue("viewer", sub="bench-viewer", org=ORG)
                user = stand_ins.issuer.issue("user", sub="bench-user", org=ORG)
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {user}"},
                    timeout=30,
                ) as http:

                    async def publish(name: str) -> None:
                        await fanout.order(http, name)

                    result = await fanout.measure(
                        server,
                        f"ws://127.0.0.1:{port}/graphql",
                        f"Bearer {viewer}",
                        publish,
                        subscribers,
                        clients,
                        changes,
                        interval,
                        rss=lambda: tree_rss_kib(server.pid),
                    )
    return {**result, "workers": workers}


def summary(result: dict[str, float]) -> str:
    workers = int(result["workers"])
    text = fanout.summary(result, f"{workers} worker{'s' if workers > 1 else ''}: ")
    return text.replace(" on one worker:", ":").replace("worker RSS", "RSS of serve and its workers")


async def bench(args: argparse.Namespace) -> None:
    """One worker with S, N workers with N x S (the issue's question: the same latency?), then one worker
    with N x S too (is N workers better than one at that load?), unless --no-one-worker-at-total."""
    total = args.subscribers * args.workers

    async def measured(workers: int, subscribers: int) -> dict[str, float]:
        clients = max(1, -(-subscribers // 2500))
        result = await run(workers, subscribers, clients, args.changes, args.interval)
        print(summary(result), flush=True)
        return result

    one = await measured(1, args.subscribers)
    many = await measured(args.workers, total)
    comparisons = [(one, f"{args.workers} workers x {total:,} / 1 worker x {args.subscribers:,}")]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if args.no_one_worker_at_total:
        pass
    elif _capped(total + 1024):
        print(f"1 worker x {total:,}: not run: one process may hold {hard:,} descriptors here", flush=True)
    else:
        comparisons.append((await measured(1, total), f"{args.workers} workers / 1 worker, both {total:,}"))
    for base, note in comparisons:
        for key, name in (
            ("p50_ms", "p50"),
            ("p99_ms", "p99"),
            ("max_ms", "max"),
            ("kib_per_idle_subscriber", "memory per idle subscriber"),
            ("fan_out_ms", "fan-out time"),
        ):
            print(support.ratio_line(name, many[key] / max(base[key], 1e-9), f"{note}, lower is better"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=1000, help="per worker")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--changes", type=int, default=20, help="status changes to measure (4 per instance)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between orders")
    parser.add_argument("--smoke", action="store_true", help="20 subscribers per worker, 4 changes")
    parser.add_argument(
        "--no-one-worker-at-total", action="store_true", help="skip one worker holding all N x S subscribers"
    )
    args = parser.parse_args()
    if args.smoke:
        args.subscribers, args.changes, args.interval = 20, 4, 0.1
    if args.workers < 2:
        parser.error("--workers must be 2 or more (one worker is the run it is compared with)")
    return support.finish("fanout_workers", bench(args))


if __name__ == "__main__":
    sys.exit(main())
