"""`opencsp-gateway serve | migrate | dev | schema | token | logout`: the process's entry points."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from gateway.bootstrap import dev_issuer
from gateway.dev import dev_settings, run_dev
from gateway.serving import run_server
from gateway.settings import Settings, SettingsError, load_settings
from gateway.startup import StartupError, check_revision, migrate
from gateway.workers import check_workers, run_workers
from schema.build import schema_sdl


def fail(message: str) -> NoReturn:
    print(f"opencsp-gateway: {message}", file=sys.stderr)
    raise SystemExit(2)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="opencsp-gateway", description="The GraphQL API gateway of OpenCSP.")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve the API (the database must be migrated)")
    serve.add_argument("--host", help="address to listen on (default: OPENCSP_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default: OPENCSP_PORT)")
    serve.add_argument(
        "--metrics-port", type=int, help="port /metrics listens on (default: OPENCSP_METRICS_PORT)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="serving processes on the one port (PostgreSQL only; default: 1); "
        "worker i serves /metrics on the metrics port + i",
    )
    commands.add_parser("migrate", help="bring the database schema to the newest revision")
    dev = commands.add_parser("dev", help="run everything on this machine: SQLite, simulated backends")
    dev.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    dev.add_argument(
        "--metrics-port", type=int, help="port /metrics listens on (default: OPENCSP_METRICS_PORT, 9464)"
    )
    commands.add_parser("schema", help="print the GraphQL schema (SDL)")
    token = commands.add_parser("token", help="print a token of dev mode's local issuer")
    token.add_argument("--role", default="admin", help="viewer, user, operator or admin (default: admin)")
    token.add_argument("--sub", default=None, help="the user id (default: dev-<role>)")
    token.add_argument("--org", default=None, help="the user's org id (default: dev-org)")
    token.add_argument("--ttl", type=int, default=3600, help="seconds until it expires (default: 3600)")
    logout = commands.add_parser(
        "logout", help="sign a user out of the running dev gateway, as ZITADEL's back-channel logout does"
    )
    logout.add_argument(
        "--sub", required=True, help="the user id whose tokens and sockets end (e.g. dev-admin)"
    )
    logout.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the dev gateway (default: http://127.0.0.1:8000)"
    )
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "schema":
            sys.stdout.write(schema_sdl())
        elif args.command == "migrate":
            settings = load_settings()
            asyncio.run(migrate(settings))
            print("database is at the newest revision")
        elif args.command == "serve":
            given = (("host", args.host), ("port", args.port), ("metrics_port", args.metrics_port))
            overrides = {k: v for k, v in given if v is not None}
            settings = load_settings(**overrides)
            serve(settings, workers=args.workers)
        elif args.command == "token":
            dev_settings()
            if args.ttl <= 0:
                raise StartupError("--ttl must be a positive number of seconds")
            issuer = dev_issuer()
            print(issuer.issue(args.role, sub=args.sub or f"dev-{args.role}", org=args.org, ttl=args.ttl))
        elif args.command == "logout":
            from gateway.dev import post_logout

            print(post_logout(args.sub, args.url))
        elif args.command == "dev":
            run_dev(host=args.host, port=args.port, metrics_port=args.metrics_port)
    except (SettingsError, StartupError) as exc:
        fail(str(exc))


def serve(settings: Settings, *, workers: int = 1) -> None:
    missing = settings.missing_for_serve()
    if missing:
        raise StartupError(f"{', '.join(missing)}: required to serve (or run `opencsp-gateway dev`)")
    check_workers(settings, workers)
    asyncio.run(check_revision(settings))  # once, before any worker starts
    if workers == 1:
        run_server(settings)
    else:
        raise SystemExit(run_workers(settings, workers))


if __name__ == "__main__":
    main()
