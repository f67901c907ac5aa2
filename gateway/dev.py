"""The embedded default: everything on one machine, no cluster, for trying the gateway out."""

from __future__ import annotations

import asyncio
import os

import uvicorn

from gateway.settings import DEV_DIR, Settings, load_settings
from gateway.startup import StartupError, migrate

DEV_DATABASE_URL = f"sqlite+aiosqlite:///{DEV_DIR}/gateway.db"


def dev_settings(**overrides: object) -> Settings:
    """Settings of dev mode; refuses production peers so a laptop never writes to them."""
    settings = load_settings(dev_mode=True, **overrides)
    if settings.uses_postgres:
        raise StartupError(
            "dev mode runs on its own SQLite file; unset OPENCSP_DATABASE_URL (it names PostgreSQL)"
        )
    return settings


def run_dev(*, host: str, port: int) -> None:
    from gateway.app import create_app
    from gateway.bootstrap import build_runtime

    os.makedirs(DEV_DIR, exist_ok=True)
    settings = dev_settings(host=host, port=port)
    asyncio.run(migrate(settings))
    app = create_app(build_runtime(settings))
    url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}/graphql"  # noqa: S104
    print(f"\nOpenCSP Gateway (dev mode) — GraphiQL: {url}\n", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
