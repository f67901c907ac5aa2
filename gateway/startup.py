"""Start-up checks and steps shared by `serve`, `migrate` and `dev`."""

from __future__ import annotations

from gateway.settings import Settings
from services.auth.permissions import ADMIN_ALL_ORGS


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


def cross_org_warning(settings: Settings) -> str | None:
    """One line for the operator when the policy hands out `admin:all-orgs` but no admin org is set.

    Nobody crosses orgs then (it fails closed), which is safe but probably not what was meant.
    """
    from gateway.bootstrap import admin_org_of, policy_of

    if admin_org_of(settings):
        return None
    roles = sorted(role for role, permissions in policy_of(settings).items() if ADMIN_ALL_ORGS in permissions)
    if not roles:
        return None
    return (
        f"role {', '.join(roles)} grants {ADMIN_ALL_ORGS} but OPENCSP_OIDC_ADMIN_ORG_ID is unset: "
        "nobody crosses orgs, every admin acts in its own org only; set it to the platform org's id"
    )
