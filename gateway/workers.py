"""`serve --workers N`: N serving processes on one port, each a whole gateway.

The parent binds the public port N times (SO_REUSEPORT, so a taken port fails before anything starts) and
starts N processes (spawned, not forked, so no event loop, pool or thread crosses over); each builds its
own runtime and serves its socket, and the kernel spreads new connections over them. A worker holds its
own websocket subscribers and LISTENs on PostgreSQL itself, as separate replicas do: a change committed
by any worker reaches the subscribers of all. The schema revision is checked once, by the parent, before
any worker starts.

Each worker keeps its own metrics registry, so worker i serves `/metrics` on OPENCSP_METRICS_PORT + i:
one scrape target per worker, nothing summed behind the scraper's back.

When a worker exits (a crash, a port it cannot bind), the parent stops the others and exits non-zero:
a supervisor (systemd, Kubernetes) restarts the whole set, rather than a half-served port limping on.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import sys
from multiprocessing.connection import wait
from types import FrameType

from gateway.serving import run_server
from gateway.settings import Settings
from gateway.startup import StartupError


def check_workers(settings: Settings, workers: int) -> None:
    """One process per SQLite file: its changes would reach no other worker's subscribers."""
    if workers < 1:
        raise StartupError("--workers must be 1 or more")
    if workers > 1 and not settings.uses_postgres:
        raise StartupError(
            f"--workers {workers} needs PostgreSQL (OPENCSP_DATABASE_URL=postgresql+asyncpg://...): "
            "on SQLite a change reaches only the subscribers of the worker that made it; run one worker"
        )


def bind(host: str, port: int, count: int) -> list[socket.socket]:
    """One listening socket per worker on the same port (SO_REUSEPORT), all bound here so a taken port
    fails before any worker starts. Each worker accepts from its own queue and the kernel spreads new
    connections over the queues: with one shared queue, the first worker to wake drains it and holds
    every long-lived websocket while the others idle (seen in tests/test_workers.py)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listeners: list[socket.socket] = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
            listener.listen(2048)
    except OSError as error:
        for listener in listeners:
            listener.close()
        raise StartupError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return listeners


def worker_settings(settings: Settings, index: int) -> Settings:
    return settings.model_copy(update={"metrics_port": settings.metrics_port + index})


def _worker(settings: Settings, listener: socket.socket, index: int) -> None:
    try:
        run_server(worker_settings(settings, index), sockets=[listener])
    except StartupError as error:
        print(f"opencsp-gateway worker {index}: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


def run_workers(settings: Settings, workers: int) -> int:
    """Serve with `workers` processes until one exits or a signal stops them; the exit status to return."""
    listeners = bind(settings.host, settings.port, workers)
    spawn = multiprocessing.get_context("spawn")
    processes = [
        spawn.Process(target=_worker, args=(settings, listener, n), name=f"opencsp-gateway worker {n}")
        for n, listener in enumerate(listeners)
    ]

    def stop(signum: int, _: FrameType | None) -> None:  # each worker shuts down gracefully on its own
        for process in processes:
            signal_worker(process, signum)

    for process in processes:
        process.start()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        wait([process.sentinel for process in processes])  # the first worker to end ends the set
        for process in processes:
            signal_worker(process, signal.SIGTERM)
        for process in processes:
            process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for listener in listeners:
            listener.close()
    codes = [process.exitcode or 0 for process in processes]
    return 0 if all(code in (0, -signal.SIGTERM, -signal.SIGINT) for code in codes) else 1


def signal_worker(process: multiprocessing.process.BaseProcess, signum: int) -> None:
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signum)
