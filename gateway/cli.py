"""`opencsp-gateway serve | migrate | dev | schema`: the process's entry points."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

import uvicorn

from gateway.settings import Settings, SettingsError, load_settings
from gateway.startup import StartupError, check_revision, migrate


def fail(message: str) -> NoReturn:
    print(f"opencsp-gateway: {message}", file=sys.stderr)
    raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="opencsp-gateway", description="The GraphQL API gateway of OpenCSP.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the API (the database must be migrated)")
    serve.add_argument("--host", help="address to listen on (default: OPENCSP_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: OPENCSP_PORT)")
    commands.add_parser("migrate", help="bring the database schema to the newest revision")
    dev = commands.add_parser("dev", help="run everything on this machine: SQLite, simulated backends")
    dev.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "schema":
            from schema.build import schema_sdl

            sys.stdout.write(schema_sdl())
        elif args.command == "migrate":
            settings = load_settings()
            asyncio.run(migrate(settings))
            print("database is at the newest revision")
        elif args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
            settings = load_settings(**overrides)
            serve(settings)
        elif args.command == "dev":
            from gateway.dev import run_dev

            run_dev(host=args.host, port=args.port)
    except (SettingsError, StartupError) as exc:
        fail(str(exc))


def serve(settings: Settings) -> None:
    from gateway.app import create_app
    from gateway.bootstrap import build_runtime

    asyncio.run(check_revision(settings))
    app = create_app(build_runtime(settings))
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", proxy_headers=True)


if __name__ == "__main__":
    main()
