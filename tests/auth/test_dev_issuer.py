"""The dev issuer's tokens pass the production verifier when its JWKS is served over HTTP."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from services.auth.dev_issuer import DEV_ORG_ID, KEY_FILE, DevIssuer
from services.auth.errors import InvalidToken
from services.auth.jwks import KeySetCache
from services.auth.permissions import ADMIN_ALL_ORGS, INSTANCE_CREATE, INSTANCE_READ_INTERNALS
from services.auth.tokens import TokenVerifier
from tests.auth.conftest import Clock
from tests.peers.jwks_server import JwksServer

pytestmark = pytest.mark.asyncio(loop_scope="module")

PROJECT = "dev-project"


async def test_round_trip_over_http(
    tmp_path: Path, server: JwksServer, clock: Clock, http: httpx.AsyncClient
) -> None:
    issuer = DevIssuer(directory=tmp_path / ".opencsp", issuer=server.issuer, project_id=PROJECT, clock=clock)
    server.jwks = issuer.jwks()
    async with KeySetCache(issuer=server.issuer, http=http, clock=clock) as keys:
        verifier = TokenVerifier(
            keys=keys,
            issuer=server.issuer,
            audiences=PROJECT,
            project_id=PROJECT,
            clock=clock,
            admin_org_id=DEV_ORG_ID,  # as dev mode configures it
        )
        admin = await verifier.verify(issuer.issue("admin", sub="root", name="Root", email="root@dev"))
        assert (admin.sub, admin.name, admin.email, admin.org_id) == ("root", "Root", "root@dev", "dev-org")
        assert admin.has(ADMIN_ALL_ORGS)
        user = await verifier.verify(issuer.issue("user", org="org-7", ttl=60))
        assert user.org_id == "org-7"
        assert user.has(INSTANCE_CREATE)
        assert not user.has(INSTANCE_READ_INTERNALS)
        elsewhere = await verifier.verify(issuer.issue("operator", role_org="org-8"))
        assert elsewhere.permissions == frozenset()
        assert elsewhere.has(INSTANCE_READ_INTERNALS, "org-8")
        nobody = await verifier.verify(issuer.issue(None))
        assert nobody.permissions == frozenset()
        short = issuer.issue("viewer", ttl=10)
        clock.advance(71)
        with pytest.raises(InvalidToken, match="expired"):
            await verifier.verify(short)


async def test_claims_have_zitadel_shape(tmp_path: Path, clock: Clock) -> None:
    from joserfc import jwt

    issuer = DevIssuer(directory=tmp_path, issuer="http://dev", project_id=PROJECT, clock=clock)
    token = jwt.decode(issuer.issue(["user", "viewer"], org="o1"), issuer._key)
    claims = token.claims
    assert token.header == {"alg": "RS256", "kid": issuer.kid, "typ": "JWT"}
    assert claims["iss"] == "http://dev"
    assert claims["aud"] == [PROJECT]
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["nbf"] == claims["iat"] == int(clock())
    roles = {"user": {"o1": "dev.localhost"}, "viewer": {"o1": "dev.localhost"}}
    assert claims["urn:zitadel:iam:org:project:roles"] == roles
    assert claims[f"urn:zitadel:iam:org:project:{PROJECT}:roles"] == roles
    assert claims["urn:zitadel:iam:user:resourceowner:id"] == "o1"


async def test_key_is_kept_private_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "state" / ".opencsp"
    first = DevIssuer(directory=directory, issuer="http://dev", project_id=PROJECT)
    path = directory / KEY_FILE
    assert first.key_path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = DevIssuer(directory=directory, issuer="http://dev", project_id=PROJECT)
    assert second.kid == first.kid
    assert second.jwks() == first.jwks()
    assert "d" not in first.jwks()["keys"][0]
    assert [p.name for p in directory.iterdir()] == [KEY_FILE]  # no temporary left behind


async def test_loose_permissions_are_tightened(tmp_path: Path) -> None:
    DevIssuer(directory=tmp_path, issuer="http://dev", project_id=PROJECT)
    os.chmod(tmp_path / KEY_FILE, 0o644)
    DevIssuer(directory=tmp_path, issuer="http://dev", project_id=PROJECT)
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


async def test_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("{not json")
    os.chmod(tmp_path / KEY_FILE, 0o600)
    with pytest.raises(ValueError, match="delete it"):
        DevIssuer(directory=tmp_path, issuer="http://dev", project_id=PROJECT)
