"""Where the gateway spends its time on query_list's query, measured in-process without a server.

Seeds a SQLite database like query_list.py, then calls the ASGI apps directly (no sockets, no client) so
only server-side work is measured:

    .venv/bin/python benchmarks/profile_query_list.py breakdown     # CPU ms per request, stage by stage
    .venv/bin/python benchmarks/profile_query_list.py cprofile      # top functions (stdlib cProfile)
    .venv/bin/python benchmarks/profile_query_list.py pyinstrument  # call tree (pip install pyinstrument)

`breakdown` also runs the same GraphQL document through variants built here (not in the gateway), to price
the options in docs/PERFORMANCE.md: without the schema extensions, on pre-built data, and on plain
graphql-core with its default resolver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import query_list  # first: it puts the repository root on sys.path
import strawberry
from query_list import BODY, FIELDS, PAGE_SIZE, PATHS, QUERY

from schema.types import InstanceConnection

Call = Callable[[], Awaitable[object]]


async def asgi_post(app: Any, path: str, token: str = "-") -> bytes:
    """One POST of query_list's body straight into the ASGI app; returns the response body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"accept", b"application/json"),
            (b"content-length", str(len(BODY)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    chunks: list[bytes] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect never comes while the app works
        sent = True
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise query_list.CheckFailed(f"HTTP {message['status']}")
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    body = b"".join(chunks)
    nodes = orjson.loads(body)["data"]["instances"]["nodes"]
    if len(nodes) != PAGE_SIZE or any(node.keys() != query_list.FIELD_SET for node in nodes):
        raise query_list.CheckFailed("unexpected page")
    return body


async def per_call_ms(calls: dict[str, Call], count: int, rounds: int = 5) -> dict[str, float]:
    """CPU ms per call of each (all threads: aiosqlite works in its own), best of `rounds` interleaved.

    CPU time rather than wall time and interleaved rounds, because on a shared machine other processes
    stretch the wall clock and come and go; the minimum is the least disturbed estimate.
    """
    best = dict.fromkeys(calls, float("inf"))
    for call in calls.values():
        for _ in range(max(3, count // 10)):
            await call()
    for _ in range(rounds):
        for label, call in calls.items():
            gc.collect()
            started = time.process_time()
            for _ in range(count):
                await call()
            best[label] = min(best[label], (time.process_time() - started) / count)
    return {label: 1000 * seconds for label, seconds in best.items()}


@contextlib.asynccontextmanager
async def seeded(rows: int) -> AsyncIterator[str]:
    with tempfile.TemporaryDirectory(prefix="opencsp-profile-") as directory:
        url = f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        await query_list.seed(url, rows)
        yield url


PREBUILT: dict[str, InstanceConnection] = {}


@strawberry.type
class PrebuiltQuery:
    """The gateway's types over a connection built once: GraphQL execution with no SQL and no extensions."""

    @strawberry.field
    def instances(self, first: int | None = None) -> InstanceConnection:
        return PREBUILT["connection"]


def gateway_variants(app: Any) -> tuple[Call, dict[str, Call]]:
    """(prepare, calls): calls that each isolate one layer of the gateway; all produce the same page."""
    from graphql import build_schema as build_sdl_schema
    from graphql import graphql as graphql_core

    from gateway.bootstrap import document_limits
    from resolvers.instances import resolve_instances
    from schema.build import Query, build_schema
    from schema.context import Context
    from schema.types import Instance
    from services.auth.principal import SYSTEM
    from services.instances.reading import InstanceFilter
    from services.instances.visibility import Visibility

    runtime = app.state.runtime
    services = runtime.services
    limits = document_limits(runtime.settings)
    schemas = {
        "today": build_schema(limits),
        "bare": strawberry.Schema(query=Query),
        "prebuilt": strawberry.Schema(query=PrebuiltQuery),
    }
    sdl = "type Instance {" + " ".join(f"{name}: String" for name in FIELDS) + "}"
    sdl += " type Connection { nodes: [Instance!]! } type Query { instances(first: Int): Connection! }"
    core_schema = build_sdl_schema(sdl)
    roots: dict[str, Any] = {}

    def context() -> Context:
        return Context.create(services, SYSTEM)

    async def page() -> Any:
        return await services.instances.page(Visibility.everything(), InstanceFilter(), first=PAGE_SIZE)

    async def execute(name: str) -> object:
        result = await schemas[name].execute(QUERY, context_value=context())
        assert result.errors is None, result.errors
        return orjson.dumps({"data": result.data})

    async def wrap() -> object:
        return [Instance.from_record(item) for item in (await page()).items]

    async def core() -> object:
        result = await graphql_core(core_schema, QUERY, root_value=roots["dicts"])
        assert result.errors is None, result.errors
        return orjson.dumps({"data": result.data})

    columns = tuple(FIELDS.items())

    async def compiled() -> object:
        nodes = [{name: getattr(item, column) for name, column in columns} for item in (await page()).items]
        return orjson.dumps({"data": {"instances": {"nodes": nodes}}})

    from sqlalchemy import select

    from services.db.engine import make_sessionmaker
    from services.db.models import Instance as InstanceRow

    sessions = make_sessionmaker(runtime.engine)
    narrow = (
        select(*[getattr(InstanceRow, column) for column in FIELDS.values()])
        .order_by(InstanceRow.created_at.desc(), InstanceRow.id.desc())
        .limit(PAGE_SIZE)
    )

    async def narrow_select() -> object:
        async with sessions() as session:
            return (await session.execute(narrow)).all()

    async def prepare() -> None:
        class Info:
            def __init__(self) -> None:
                self.context = context()

        PREBUILT["connection"] = await resolve_instances(Info(), None, PAGE_SIZE, None)  # type: ignore[arg-type]
        items = (await page()).items
        nodes = [{name: _plain(getattr(item, column)) for name, column in columns} for item in items]
        roots["dicts"] = {"instances": {"nodes": nodes}}

    return prepare, {
        "the baseline's 12-column SELECT alone (same engine, no HTTP)": narrow_select,
        "service page(): SQL, 26-column records, cursors": page,
        "page() + Instance.from_record x100": wrap,
        "schema.execute, gateway schema as built today": lambda: execute("today"),
        "schema.execute, same Query, no extensions": lambda: execute("bare"),
        "strawberry on a pre-built connection: no SQL, no extensions": lambda: execute("prebuilt"),
        "graphql-core, default resolver on dicts, no SQL, no cache": core,
        "compiled path: page() -> 12-key dicts -> orjson": compiled,
    }


def _plain(value: Any) -> Any:
    from datetime import datetime

    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if not isinstance(value, int | str) else value


async def breakdown(rows: int, count: int) -> None:
    async with seeded(rows) as url:
        gateway, token = await query_list.gateway_app(url)
        baseline = query_list.baseline_app(url)
        calls: dict[str, Call] = {
            "baseline app, full request": lambda: asgi_post(baseline, PATHS["baseline"]),
            "gateway app, full request": lambda: asgi_post(gateway, PATHS["gateway"], token),
        }
        prepare, variants = gateway_variants(gateway)
        await prepare()
        calls.update(variants)
        print(f"CPU ms per request, sequential, in-process, best of 5 x {count} calls, SQLite, {rows} rows")
        for label, ms in (await per_call_ms(calls, count)).items():
            print(f"{ms:8.2f}  {label}")
        await gateway.state.runtime.aclose()


async def profile(rows: int, count: int, profiler: str, limit: int) -> None:
    async with seeded(rows) as url:
        app, token = await query_list.gateway_app(url)

        async def requests() -> None:
            for _ in range(count):
                await asgi_post(app, PATHS["gateway"], token)

        await requests()  # warm caches before measuring
        if profiler == "cprofile":
            profile = cProfile.Profile()
            profile.enable()
            await requests()
            profile.disable()
            for order in ("tottime", "cumulative"):
                out = io.StringIO()
                pstats.Stats(profile, stream=out).strip_dirs().sort_stats(order).print_stats(limit)
                print(out.getvalue())
        else:
            from pyinstrument import Profiler

            with Profiler(interval=0.0005, async_mode="enabled") as pyinstrument:
                await requests()
            print(pyinstrument.output_text(time="percent_of_total"))
            flat = pyinstrument.output_text(time="percent_of_total", flat=True)
            print("\n".join(flat.splitlines()[: limit + 8]))
        await app.state.runtime.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("mode", choices=["breakdown", "cprofile", "pyinstrument"])
    parser.add_argument("--rows", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--limit", type=int, default=30, help="cprofile: functions listed")
    args = parser.parse_args()
    runner = query_list.event_loop_runner()
    if args.mode == "breakdown":
        return runner(_zero(breakdown(args.rows, args.requests)))
    return runner(_zero(profile(args.rows, args.requests, args.mode, args.limit)))


async def _zero(work: Awaitable[None]) -> int:
    await work
    return 0


if __name__ == "__main__":
    sys.exit(main())
