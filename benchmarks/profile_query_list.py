"""Where the gateway spends its time on query_list's query, measured in-process without a server.

Seeds a SQLite database like query_list, then calls the ASGI apps directly (no sockets, no client) so
only server-side work is measured:

    .venv/bin/python -m benchmarks.profile_query_list breakdown     # CPU ms per request, stage by stage
    .venv/bin/python -m benchmarks.profile_query_list cprofile      # top functions (stdlib cProfile)
    .venv/bin/python -m benchmarks.profile_query_list pyinstrument  # call tree (pip install pyinstrument)

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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import strawberry
from graphql import build_schema as build_sdl_schema
from graphql import graphql as graphql_core
from starlette.applications import Starlette
from starlette.types import Message, Scope

from benchmarks import support
from benchmarks.support import BASELINE_SELECT, BODIES, FIELDS, PAGE_SIZE, PATHS, QUERY, Failed, Gateway
from gateway.bootstrap import document_limits
from schema.build import Query, build_schema
from schema.context import Context
from schema.types import Instance, InstanceConnection
from services.auth.principal import SYSTEM
from services.db.engine import make_sessionmaker
from services.instances.reading import InstanceFilter, Page
from services.instances.records import InstanceRecord
from services.instances.visibility import Visibility

Call = Callable[[], Awaitable[object]]
# What the list document's plan asks `narrow_page` for: its 12 fields' attributes.
NARROW = tuple(sorted(FIELDS.values()))


async def asgi_post(app: Starlette, kind: str, token: str = "-") -> bytes:
    """One POST of query_list's body for `kind` (support.BODIES) straight into the ASGI app; returns the
    response body."""
    path, body = PATHS[kind], BODIES[kind]
    scope: Scope = {
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
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    chunks: list[bytes] = []
    status = 0
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect never comes while the app works
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        if message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    body = b"".join(chunks)
    support.check_page(status, body)
    return body


async def per_call_ms(calls: dict[str, Call], count: int, rounds: int) -> dict[str, float]:
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


PREBUILT: dict[str, InstanceConnection] = {}


@strawberry.type
class PrebuiltQuery:
    """The gateway's types over a connection built once: GraphQL execution with no SQL and no extensions."""

    @strawberry.field
    def instances(self, first: int | None = None) -> InstanceConnection:
        return PREBUILT["connection"]


def gateway_variants(gateway: Gateway) -> tuple[Call, dict[str, Call]]:
    """(prepare, calls): calls that each isolate one layer of the gateway; all produce the same page."""
    services = gateway.runtime.services
    limits = document_limits(gateway.runtime.settings)
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

    async def page() -> Page[InstanceRecord]:
        return await services.instances.page(Visibility.everything(), InstanceFilter(), first=PAGE_SIZE)

    async def narrow_page() -> Page[Any]:
        return await services.instances.narrow_page(
            Visibility.everything(), InstanceFilter(), NARROW, first=PAGE_SIZE
        )

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

    sessions = make_sessionmaker(gateway.runtime.engine)

    async def narrow_select() -> object:
        async with sessions() as session:
            return (await session.execute(BASELINE_SELECT)).all()

    async def narrow_select_on_connection() -> object:
        # What narrow_page() does (no ORM session): the baseline could do it too.
        async with gateway.runtime.engine.connect() as connection:
            return (await connection.execute(BASELINE_SELECT)).all()

    async def prepare() -> None:
        first = await page()
        PREBUILT["connection"] = InstanceConnection.from_page(first)  # as the `instances` resolver does
        items = first.items
        nodes = [{name: _plain(getattr(item, column)) for name, column in columns} for item in items]
        roots["dicts"] = {"instances": {"nodes": nodes}}

    return prepare, {
        "the baseline's 12-column SELECT alone (same engine, no HTTP)": narrow_select,
        "the same SELECT on a connection, without a session": narrow_select_on_connection,
        "service page(): SQL, 26-column records, cursors": page,
        "service narrow_page(): the columns the plan reads, rows": narrow_page,
        "page() + Instance.from_record x100": wrap,
        "schema.execute, gateway schema as built today": lambda: execute("today"),
        "schema.execute, same Query, no extensions": lambda: execute("bare"),
        "strawberry on a pre-built connection: no SQL, no extensions": lambda: execute("prebuilt"),
        "graphql-core, default resolver on dicts, no SQL, no cache": core,
        "compiled path: page() -> 12-key dicts -> orjson": compiled,
    }


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if not isinstance(value, int | str) else value


@contextlib.asynccontextmanager
async def seeded_gateway(rows: int) -> AsyncIterator[tuple[str, Gateway]]:
    """A seeded SQLite database and the gateway over it, with the list document in its manifest."""
    async with support.seeded_database("sqlite", rows) as url:
        with tempfile.TemporaryDirectory(prefix="opencsp-manifest-") as directory:
            gateway = await support.gateway_app(
                url, trusted_documents=support.write_manifest(Path(directory))
            )
            try:
                yield url, gateway
            finally:
                await gateway.runtime.aclose()


async def breakdown(rows: int, count: int, rounds: int) -> None:
    async with seeded_gateway(rows) as (url, gateway):
        baseline = support.baseline_app(url)
        calls: dict[str, Call] = {
            "baseline app, full request": lambda: asgi_post(baseline, "baseline"),
            "gateway app, full request, trusted id": lambda: asgi_post(gateway.app, "trusted", gateway.token),
            "gateway app, full request, ad-hoc text": lambda: asgi_post(gateway.app, "adhoc", gateway.token),
        }
        prepare, variants = gateway_variants(gateway)
        await prepare()
        calls.update(variants)
        print(
            f"CPU ms per request, sequential, in-process, best of {rounds} x {count} calls, SQLite,"
            f" {rows} rows"
        )
        for label, ms in (await per_call_ms(calls, count, rounds)).items():
            print(f"{ms:8.2f}  {label}")


async def profile(rows: int, count: int, profiler: str, limit: int, kind: str) -> None:
    async with seeded_gateway(rows) as (_, gateway):

        async def requests() -> None:
            for _ in range(count):
                await asgi_post(gateway.app, kind, gateway.token)

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
            try:
                from pyinstrument import Profiler
            except ImportError:
                raise Failed("pyinstrument is not installed (pip install pyinstrument)") from None

            with Profiler(interval=0.0005, async_mode="enabled") as pyinstrument:
                await requests()
            print(pyinstrument.output_text(time="percent_of_total"))
            flat = pyinstrument.output_text(time="percent_of_total", flat=True)
            print("\n".join(flat.splitlines()[: limit + 8]))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("mode", choices=["breakdown", "cprofile", "pyinstrument"])
    parser.add_argument("--rows", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5, help="breakdown: the best of this many rounds")
    parser.add_argument("--limit", type=int, default=30, help="cprofile: functions listed")
    parser.add_argument(
        "--send",
        choices=["trusted", "adhoc"],
        default="trusted",
        help="cprofile, pyinstrument: the list document by its trusted id, or as text",
    )
    args = parser.parse_args(argv)
    if args.mode == "breakdown":
        return support.finish("profile_query_list", breakdown(args.rows, args.requests, args.rounds))
    return support.finish(
        "profile_query_list", profile(args.rows, args.requests, args.mode, args.limit, args.send)
    )


if __name__ == "__main__":
    sys.exit(main())
