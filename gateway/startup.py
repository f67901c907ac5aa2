"""Start-up checks and steps shared by `serve`, `migrate` and `dev`."""

from __future__ import annotations

import logging

from gateway.bootstrap import admin_org_of, policy_of
from gateway.settings import Settings
from migrations.runner import current_revision, head_revision, upgrade
from services.auth.permissions import ADMIN_ALL_ORGS
from services.db.engine import make_engine

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """Start-up cannot go on; the message is one line for the operator."""


async def migrate(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        await upgrade(engine)
    except OSError as exc:
        raise StartupError(f"cannot reach the database ({exc.strerror or exc})") from None
    finally:
        await engine.dispose()


async def check_revision(settings: Settings) -> None:
    """Serving an old schema corrupts data quietly; refuse instead and say how to fix it."""
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
    if admin_org_of(settings):
        return None
    roles = sorted(role for role, permissions in policy_of(settings).items() if ADMIN_ALL_ORGS in permissions)
    if not roles:
        return None
    return (
        f"role {', '.join(roles)} grants {ADMIN_ALL_ORGS} but OPENCSP_OIDC_ADMIN_ORG_ID is unset: "
        "nobody crosses orgs, every admin acts in its own org only; set it to the platform org's id"
    )


def warn_without_admin_org(settings: Settings) -> None:
    warning = cross_org_warning(settings)
    if warning:
        logger.warning(warning)
