"""The embedded default: everything on one machine, no cluster, for trying the gateway out."""

from __future__ import annotations

import asyncio
import os

from gateway.settings import DEV_DIR, Settings, load_settings
from gateway.startup import StartupError, migrate


def dev_settings(**overrides: object) -> Settings:
    """Settings of dev mode; refuses production peers so a laptop never writes to them."""
    settings = load_settings(dev_mode=True, **overrides)
    if settings.uses_postgres:
        raise StartupError(
            "dev mode runs on its own SQLite file; unset OPENCSP_DATABASE_URL (it names PostgreSQL)"
        )
    if settings.oidc_issuer or settings.oidc_jwks_url:
        raise StartupError(
            "dev mode trusts only its local token issuer; unset OPENCSP_OIDC_ISSUER and OPENCSP_OIDC_JWKS_URL"
        )
    return settings


def run_dev(*, host: str, port: int, metrics_port: int | None = None) -> None:
    from gateway.cli import run_server

    os.makedirs(DEV_DIR, exist_ok=True)
    overrides: dict[str, object] = {"host": host, "port": port}
    if metrics_port is not None:
        overrides["metrics_port"] = metrics_port
    settings = dev_settings(**overrides)
    asyncio.run(migrate(settings))
    base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}"  # noqa: S104
    if settings.dashboard_on:
        print(f"\nOpenCSP Gateway (dev mode) — dashboard: {base}:{port}/", flush=True)
        print(f"GraphiQL: {base}:{port}/graphql", flush=True)
    else:
        print(f"\nOpenCSP Gateway (dev mode) — GraphiQL: {base}:{port}/graphql", flush=True)
    if settings.metrics:
        print(f"Prometheus metrics: {base}:{settings.metrics_port}/metrics", flush=True)
    print(flush=True)
    print_tokens(settings)
    run_server(settings)


def print_tokens(settings: Settings) -> None:
    """Ready-to-paste tokens, one per role; GraphiQL's headers tab takes {"Authorization": "Bearer …"}."""
    from gateway.bootstrap import dev_issuer

    issuer = dev_issuer()
    print("Tokens (valid 12 h; `opencsp-gateway token --role R` makes more):")
    for role in ("viewer", "user", "operator", "admin"):
        token = issuer.issue(role, sub=f"dev-{role}", name=f"Dev {role.title()}", ttl=12 * 3600)
        print(f'  {role:<8} {{"Authorization": "Bearer {token}"}}')
    print(flush=True)
