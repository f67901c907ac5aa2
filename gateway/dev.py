"""The embedded default: everything on one machine, no cluster, for trying the gateway out."""

from __future__ import annotations

import asyncio
import os

from gateway.bootstrap import dev_issuer
from gateway.serving import run_server
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


def post_logout(sub: str, url: str) -> str:
    """Sign a logout token for `sub` with the dev issuer and post it to the dev gateway at `url`, as
    ZITADEL posts to a registered `backchannel_logout_uri`: the user's tokens and sockets end there."""
    import httpx

    from gateway.bootstrap import DEV_LOGOUT_CLIENT_ID, dev_issuer

    dev_settings()
    token = dev_issuer().logout_token(audience=DEV_LOGOUT_CLIENT_ID, sub=sub)
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/auth/backchannel-logout", data={"logout_token": token}, timeout=10
        )
    except httpx.HTTPError as error:
        raise StartupError(f"the dev gateway at {url} did not answer ({error})") from None
    if response.status_code != 200:
        raise StartupError(
            f"the dev gateway refused the logout ({response.status_code}): {response.text[:200]}"
        )
    return f"{sub} is signed out: tokens issued until now are refused and open sockets were closed"


def print_tokens(settings: Settings) -> None:
    """Ready-to-paste tokens, one per role; GraphiQL's headers tab takes {"Authorization": "Bearer …"}."""
    issuer = dev_issuer()
    print("Tokens (valid 12 h; `opencsp-gateway token --role R` makes more):")
    for role in ("viewer", "user", "operator", "admin"):
        token = issuer.issue(role, sub=f"dev-{role}", name=f"Dev {role.title()}", ttl=12 * 3600)
        print(f'  {role:<8} {{"Authorization": "Bearer {token}"}}')
    print(flush=True)
