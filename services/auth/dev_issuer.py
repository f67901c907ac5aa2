"""A stand-in for ZITADEL in dev mode: one RSA key on disk and tokens in ZITADEL's exact claim shape.

Dev mode then runs the same verification path as production (JWKS over HTTP, `iss`, `aud`, roles
claims), so what works locally works against ZITADEL. The key is generated once and kept (mode 0600)
so tokens stay valid across restarts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from joserfc import jwk, jwt

from services.auth.logout_token import BACKCHANNEL_LOGOUT_EVENT
from services.auth.principal import ORG_CLAIM, ROLES_CLAIM, project_roles_claim

logger = logging.getLogger(__name__)

KEY_FILE = "dev-issuer-key.json"
ALGORITHM = "RS256"
DEV_ORG_ID = "dev-org"
"""The org of dev tokens unless `--org` says otherwise; dev mode makes it its admin org."""


class DevIssuer:
    """Issues dev tokens for `issuer` and `project_id` (the audience), signed with the key in `directory`."""

    def __init__(
        self,
        *,
        directory: Path,
        issuer: str,
        project_id: str,
        org_id: str = DEV_ORG_ID,
        org_domain: str = "dev.localhost",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.project_id = project_id
        self.org_id = org_id
        self.org_domain = org_domain
        self.key_path = directory / KEY_FILE
        self._clock = clock
        self._key = load_or_create_key(self.key_path)

    @property
    def kid(self) -> str:
        return str(self._key.kid)

    def jwks(self) -> dict[str, Any]:
        """The public key set, as the gateway's dev-only JWKS route serves it."""
        return {"keys": [self._key.as_dict(private=False)]}

    def issue(
        self,
        role: str | Iterable[str] | None = "admin",
        *,
        sub: str = "dev-user",
        org: str | None = None,
        ttl: int | timedelta = 3600,
        name: str = "Dev User",
        email: str = "dev@localhost",
        role_org: str | None = None,
        grants: Mapping[str, Iterable[str]] | None = None,
    ) -> str:
        """A signed access token for `sub` of `org`, holding `role` (one, several or none).

        Roles are granted in `role_org` (default: the user's own org), which lets tests make a role
        that counts only in another org. `grants` (org → roles) replaces both: different roles in
        different orgs, as ZITADEL grants them.
        """
        org_id = org or self.org_id
        if grants is None:
            roles = [role] if isinstance(role, str) else list(role or ())
            grants = {role_org or org_id: roles}
        roles_claim: dict[str, dict[str, str]] = {}
        for grant_org, granted in grants.items():
            for name_ in granted:
                roles_claim.setdefault(name_, {})[grant_org] = self.org_domain
        now = int(self._clock())
        seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else int(ttl)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": sub,
            "aud": [self.project_id],
            "exp": now + seconds,
            "iat": now,
            "nbf": now,
            "jti": uuid.uuid4().hex,
            "name": name,
            "preferred_username": email,
            "email": email,
            "email_verified": True,
            ROLES_CLAIM: roles_claim,
            project_roles_claim(self.project_id): roles_claim,
            ORG_CLAIM: org_id,
            "urn:zitadel:iam:user:resourceowner:name": org_id,
            "urn:zitadel:iam:user:resourceowner:primary_domain": self.org_domain,
        }
        return self.sign(claims)

    def logout_token(
        self,
        *,
        audience: str,
        sub: str | None = None,
        sid: str | None = None,
        issued_at: float | None = None,
        ttl: int = 120,
    ) -> str:
        """A back-channel logout token as ZITADEL sends it to an app's `backchannel_logout_uri`."""
        return self.sign(
            self.logout_claims(audience=audience, sub=sub, sid=sid, issued_at=issued_at, ttl=ttl)
        )

    def logout_claims(
        self,
        *,
        audience: str,
        sub: str | None = None,
        sid: str | None = None,
        issued_at: float | None = None,
        ttl: int = 120,
    ) -> dict[str, Any]:
        now = int(self._clock() if issued_at is None else issued_at)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [audience],
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        claims.update({name: value for name, value in (("sub", sub), ("sid", sid)) if value is not None})
        return claims

    def sign(self, claims: Mapping[str, Any], typ: str = "JWT") -> str:
        """`claims` signed with the issuer's key, as they are: tests shape hostile tokens with it."""
        header = {"alg": ALGORITHM, "kid": self.kid, "typ": typ}
        return jwt.encode(header, dict(claims), self._key, algorithms=[ALGORITHM])


def load_or_create_key(path: Path) -> jwk.RSAKey:
    """The RSA key kept at `path`, created (0600, never clobbering a concurrent writer) when absent."""
    if not path.exists():
        _create_key(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("dev issuer key %s was readable by others (mode %o); tightened to 0600", path, mode)
        path.chmod(0o600)
    try:
        key = jwk.import_key(orjson.loads(path.read_bytes()))
    except Exception as exc:
        raise ValueError(f"dev issuer key {path} is unreadable ({type(exc).__name__}); delete it") from None
    if not isinstance(key, jwk.RSAKey) or not key.is_private or not key.kid:
        raise ValueError(f"dev issuer key {path} is not a private RSA key with a kid; delete it")
    return key


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = jwk.generate_key("RSA", 2048, parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(key.as_dict(private=True)))
            handle.flush()
            os.fsync(handle.fileno())
        # A hard link publishes the whole file at once and fails if another process won the race.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
