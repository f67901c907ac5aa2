"""The dashboard's OIDC sign-in pieces (gateway/static/dashboard/pkce.js), run under Node's WebCrypto.

Without ZITADEL at hand, the parts that decide safety are checked directly: the S256 challenge (RFC 7636
Appendix B, and recomputed here in Python), fresh 43-character verifiers, the authorize URL's
parameters, a redirect whose state this tab did not start (or a replay of one) refused before any
token request, and the code exchanged with its verifier as a form POST.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        # The README's `make test` needs Node.js anyway (the graphql-http audit); CI must not skip this.
        if os.environ.get("CI"):
            pytest.fail("Node.js is needed for the page's JavaScript")
        pytest.skip("Node.js is needed for the page's JavaScript")
    result = subprocess.run(
        [node, "pkce-check.mjs"], cwd=NODE_DIR, capture_output=True, text=True, timeout=60, check=True
    )
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def challenge(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def test_the_challenge_is_rfc_7636_s256(report: dict[str, Any]) -> None:
    assert report["rfcChallenge"] == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    # The challenge sent to the issuer is the S256 of the verifier kept for the exchange.
    assert challenge(report["firstVerifier"]) == report["authorize"]["code_challenge"]


def test_verifiers_are_fresh_and_well_formed(report: dict[str, Any]) -> None:
    first, second = report["verifiers"]
    assert first != second
    for verifier in (first, second):
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", verifier)


def test_the_authorize_url_asks_for_a_code_with_an_s256_challenge(report: dict[str, Any]) -> None:
    assert report["authorizeBase"] == "https://issuer.example/oauth/v2/authorize"
    params = report["authorize"]
    assert params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256"
    assert params["client_id"] == "dash-client"
    assert params["redirect_uri"] == "http://gw.example/dashboard"
    assert len(params["state"]) == 43
    assert report["challengeMatchesStoredVerifier"] is True


def test_a_redirect_this_tab_did_not_start_is_refused_before_any_request(report: dict[str, Any]) -> None:
    assert report["forged"].startswith("Sign-in failed")
    assert report["fetchedForForged"] == 0
    assert report["replay"].startswith("Sign-in failed")


def test_the_code_is_exchanged_with_its_verifier(report: dict[str, Any]) -> None:
    exchange = report["exchange"]
    assert exchange["sent"]["target"] == "https://issuer.example/oauth/v2/token"
    assert exchange["sent"]["method"] == "POST"
    assert exchange["sent"]["type"] == "application/x-www-form-urlencoded"
    body = exchange["sent"]["body"]
    assert body["grant_type"] == "authorization_code"
    assert body["code"] == "c2"
    assert body["client_id"] == "dash-client"
    assert body["redirect_uri"] == "http://gw.example/dashboard"
    assert exchange["verifierSent"] is True
    assert exchange["pendingCleared"] is True
    assert exchange["result"] == {"accessToken": "at-1", "idToken": "id-1"}


def test_refusals_are_reported_and_a_plain_url_is_no_sign_in(report: dict[str, Any]) -> None:
    assert report["refused"] == "Sign-in failed: code expired"
    assert report["denied"] == "Sign-in refused: no"
    assert report["none"] is None
    assert report["endSession"] == {
        "client_id": "dash-client",
        "post_logout_redirect_uri": "http://gw.example/dashboard",
        "id_token_hint": "id-1",
    }
