"""Start-up checks and steps shared by `serve`, `migrate` and `dev`."""

from __future__ import annotations

from gateway.settings import Settings


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def migrate(settings: Settings) -> None:
    from migrations.runner import upgrade
    from services.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        await upgrade(engine)
    except OSError as exc:
        raise StartupError(f"cannot reach the database ({exc.strerror or exc})") from None
    finally:
        await engine.dispose()


async def check_revision(settings: Settings) -> None:
    """Serving an old schema corrupts data quietly; refuse instead and say how to fix it."""
    from migrations.runner import current_revision, head_revision
    from services.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        current = await current_revision(engine)
    except OSError as exc:
        raise StartupError(f"cannot reach the database ({exc.strerror or exc})") from None
    finally:
        await engine.dispose()
    head = head_revision()
    if current != head:
        raise StartupError(
            f"the database is at revision {current or 'none'}, not {head}: "
            "run `opencsp-gateway migrate` first"
        )
