"""`opencsp-gateway serve | migrate | doctor | dev | schema | token | logout | documents check`: the
process's entry points."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from gateway.bootstrap import dev_issuer, document_limits
from gateway.dev import dev_settings, run_dev
from gateway.doctor import PEERS, diagnose
from gateway.documents import ManifestError, check_manifest, read_manifest
from gateway.serving import run_server
from gateway.settings import Settings, SettingsError, load_settings
from gateway.startup import StartupError, check_revision, migrate
from gateway.workers import check_workers, run_workers
from schema.build import build_schema, schema_sdl


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
    migrate_command = commands.add_parser("migrate", help="bring the database schema to the newest revision")
    migrate_command.add_argument(
        "--doctor",
        action="store_true",
        help="then print the doctor report (a report only: the exit status stays the migration's)",
    )
    migrate_command.add_argument("--skip", action="append", default=[], choices=PEERS, help=argparse.SUPPRESS)
    doctor = commands.add_parser(
        "doctor", help="check every peer with the real settings; exit 0 only when all checks pass"
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON (for automation)")
    doctor.add_argument(
        "--skip", action="append", default=[], choices=PEERS, help="leave out one peer's checks (repeatable)"
    )
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
    documents = commands.add_parser("documents", help="trusted documents (the front end's manifest)")
    documents_commands = documents.add_subparsers(dest="documents_command", required=True, metavar="ACTION")
    check = documents_commands.add_parser(
        "check", help="check a manifest against the schema, the document limits and the cost limit"
    )
    check.add_argument("manifest", type=Path, help='a JSON object {"<sha256 hex>": "<document>"}')
    return root


def check_documents(path: Path) -> int:
    """One line per problem on stderr and 1, or a count on stdout and 0 (the front end's CI step)."""
    settings = load_settings()
    limits = document_limits(settings)
    try:
        entries = read_manifest(path)
    except ManifestError as error:
        print(error, file=sys.stderr)
        return 1
    problems = check_manifest(entries, build_schema(limits), limits, settings.max_operation_cost)
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: {len(entries)} documents, all valid")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "schema":
            sys.stdout.write(schema_sdl())
        elif args.command == "migrate":
            settings = load_settings()
            asyncio.run(migrate(settings))
            print("database is at the newest revision", flush=True)
            if args.doctor:
                # After the migration, never instead of it: a peer that is down right now must not
                # stop a release's schema change, so the report is printed and the status stays 0.
                print(asyncio.run(diagnose(settings, skip=args.skip)).text(), flush=True)
        elif args.command == "doctor":
            report = asyncio.run(diagnose(load_settings(), skip=args.skip))
            print(report.json() if args.json else report.text())
            if not report.ok:
                raise SystemExit(1)
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
        elif args.command == "documents":
            raise SystemExit(check_documents(args.manifest))
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
