"""A stand-in for ZITADEL's browser sign-in endpoints: authorization code + PKCE for a public client.

`/oauth/v2/authorize` answers at once (the user "signs in" without a form) with a redirect carrying a
one-time code; `/oauth/v2/token` exchanges it only for the same client and redirect URI and a
`code_verifier` whose S256 is the challenge given at authorize, as RFC 7636 §4.6 requires; and
`/oidc/v1/end_session` redirects to the post-logout URI. Tokens come from `mint`, so a test decides
what the signed-in user holds. What it saw is kept in `seen` for the test to check.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route


@dataclass
class OidcProvider:
    client_id: str
    redirect_uri: str
    mint: Callable[[], str]
    seen: list[str] = field(default_factory=list)
    _codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (challenge, redirect)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/oauth/v2/authorize", self._authorize, methods=["GET"]),
                Route("/oauth/v2/token", self._token, methods=["POST"]),
                Route("/oidc/v1/end_session", self._end_session, methods=["GET"]),
            ]
        )

    async def _authorize(self, request: Request) -> Response:
        query = request.query_params
        if (
            query.get("client_id") != self.client_id
            or query.get("redirect_uri") != self.redirect_uri
            or query.get("response_type") != "code"
            or query.get("code_challenge_method") != "S256"
            or not query.get("code_challenge")
            or not query.get("state")
        ):
            self.seen.append("authorize refused")
            return JSONResponse({"error": "invalid_request"}, 400)
        self.seen.append(f"authorize scope={query.get('scope', '')}")
        code = secrets.token_urlsafe(16)
        self._codes[code] = (query["code_challenge"], query["redirect_uri"])
        return RedirectResponse(f"{self.redirect_uri}?code={code}&state={query['state']}", 302)

    async def _token(self, request: Request) -> Response:
        # A form body, parsed by hand: Starlette's form parser needs python-multipart, not a dependency.
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        origin = request.headers.get("origin", "")
        cors = {"Access-Control-Allow-Origin": origin} if origin else {}
        code = str(form.get("code", ""))
        challenge, redirect = self._codes.pop(code, ("", ""))  # one use only
        verifier = str(form.get("code_verifier", ""))
        computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
        if (
            form.get("grant_type") != "authorization_code"
            or not challenge
            or form.get("client_id") != self.client_id
            or form.get("redirect_uri") != redirect
            or not secrets.compare_digest(computed, challenge)
        ):
            self.seen.append("token refused")
            return JSONResponse({"error": "invalid_grant"}, 400, headers=cors)
        self.seen.append("token issued")
        body: dict[str, Any] = {
            "access_token": self.mint(),
            "token_type": "Bearer",
            "expires_in": 3600,
            "id_token": "stand-in-id-token",
        }
        return JSONResponse(body, headers={**cors, "Cache-Control": "no-store"})

    async def _end_session(self, request: Request) -> Response:
        query = request.query_params
        self.seen.append(f"end_session hint={query.get('id_token_hint', '')}")
        return RedirectResponse(query.get("post_logout_redirect_uri", "/"), 302)
