"""The operations dashboard (`/` and `/dashboard`) and the routes the gateway's browser pages need.

The page is static HTML, CSS and JavaScript modules from gateway/static/dashboard/, plus graphql-ws's
pinned UMD build from gateway/static/vendor/: no build step, no CDN. It reads and changes nothing except
through the GraphQL API with the signed-in user's token, so it can never show more than that token may
see. What the server adds is the page's configuration (how to sign in) and, in dev mode only, an
endpoint that mints a dev token for a chosen role (the role picker).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.bodies import BodyTooLarge, read_body
from gateway.bootstrap import Runtime, policy_of
from gateway.settings import Settings
from gateway.static_files import PAGE_HEADERS, StaticFiles, content_security_policy, default_static_files

GRAPHQL_WS = "vendor/graphql-ws@6.4.2/umd/graphql-ws.min.js"
STYLE = "dashboard/dashboard.css"
APP = "dashboard/app.js"
DEV_TOKEN_SECONDS = 3600
DEV_TOKEN_BODY_BYTES = 1024
DEV_ROLE_ORDER = ("viewer", "user", "operator", "admin")


def page_config(settings: Settings, *, dev_roles: list[str] | None) -> dict[str, Any]:
    """What the page needs to sign in; public (it is in the page), so nothing secret goes here."""
    oidc = None
    if settings.oidc_dashboard_client_id and settings.oidc_issuer:
        issuer = settings.oidc_issuer.rstrip("/")
        project = settings.oidc_project_id
        # The scopes docs/DEPLOY.md "ZITADEL" lists: roles, and the user's org id (the gateway needs it).
        scopes = ["openid", "profile", "email", "urn:zitadel:iam:org:projects:roles"]
        scopes.append("urn:zitadel:iam:user:resourceowner")
        if project:
            # Puts the gateway's project in the access token's audience, which the gateway checks.
            scopes.append(f"urn:zitadel:iam:org:project:id:{project}:aud")
        oidc = {
            "clientId": settings.oidc_dashboard_client_id,
            "authorize": f"{issuer}/oauth/v2/authorize",
            "token": f"{issuer}/oauth/v2/token",
            "endSession": f"{issuer}/oidc/v1/end_session",
            "scope": " ".join(scopes),
        }
    return {"graphql": "/graphql", "oidc": oidc, "devRoles": dev_roles}


def dashboard_csp(settings: Settings) -> str:
    """The page's CSP; with OIDC sign-in, `fetch` may also reach the issuer (the token endpoint)."""
    connect: tuple[str, ...] = ()
    if settings.oidc_dashboard_client_id and settings.oidc_issuer:
        parts = urlsplit(settings.oidc_issuer)
        connect = (f"{parts.scheme}://{parts.netloc}",)
    return content_security_policy(connect=connect)


def dashboard_html(static: StaticFiles, config: dict[str, Any]) -> str:
    # JSON in a non-executed script element: `<` escaped so no value can close the element.
    data = json.dumps(config, separators=(",", ":")).replace("<", "\\u003c").replace("&", "\\u0026")
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="color-scheme" content="light dark">
    <title>{escape("OpenCSP — Instances")}</title>
    {static.stylesheet(STYLE)}
    <script type="application/json" id="dashboard-config">{data}</script>
    {static.script(GRAPHQL_WS)}
    {static.script(APP, module=True)}
  </head>
  <body>
    <a class="skip" href="#main">Skip to content</a>
    <header class="bar">
      <h1>OpenCSP <span class="muted">instances</span></h1>
      <p id="connection" class="pill" role="status" aria-live="polite" data-state="signed-out">Signed out</p>
      <div id="who" class="who" hidden>
        <span id="who-name"></span>
        <button type="button" id="sign-out" class="secondary">Sign out</button>
      </div>
    </header>
    <main id="main" tabindex="-1">
      <noscript><p class="notice">The dashboard needs JavaScript.</p></noscript>
      <div id="notice" class="notice" role="alert" hidden></div>
      <section id="sign-in" aria-labelledby="sign-in-title" hidden></section>
      <div id="board" hidden></div>
    </main>
  </body>
</html>
"""


def dashboard_routes(runtime: Runtime, static: StaticFiles | None = None) -> list[BaseRoute]:
    """`/static/…` always (GraphiQL needs it); the page when the dashboard is on; `/dev/token` in dev
    mode only (the dev issuer exists only there, so production can never mint a token)."""
    static = static or default_static_files()
    settings = runtime.settings
    routes: list[BaseRoute] = [Route("/static/{path:path}", static.handle, methods=["GET"])]
    issuer = runtime.dev_issuer
    roles = sorted(policy_of(settings), key=lambda r: (*DEV_ROLE_ORDER, r).index(r))
    if settings.dashboard_on:
        html = dashboard_html(static, page_config(settings, dev_roles=roles if issuer else None))
        headers = {
            **PAGE_HEADERS,
            "Content-Security-Policy": dashboard_csp(settings),
            "Cache-Control": "no-cache",
        }

        async def page(_: Request) -> Response:
            return HTMLResponse(html, headers=headers)

        routes += [Route("/", page, methods=["GET"]), Route("/dashboard", page, methods=["GET"])]
    if issuer is not None:

        async def dev_token(request: Request) -> Response:
            # JSON only: a cross-site page cannot send it without a CORS preflight, which fails here.
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                return JSONResponse({"error": 'send JSON: {"role": "…"}'}, 415)
            try:
                body = orjson.loads(await read_body(request, DEV_TOKEN_BODY_BYTES))
            except BodyTooLarge as error:
                return JSONResponse({"error": str(error)}, 413)
            except orjson.JSONDecodeError:
                return JSONResponse({"error": "the body is not JSON"}, 400)
            role = body.get("role") if isinstance(body, dict) else None
            if role not in roles:
                return JSONResponse({"error": f"role must be one of {', '.join(roles)}"}, 400)
            token = issuer.issue(role, sub=f"dev-{role}", name=f"Dev {role.title()}", ttl=DEV_TOKEN_SECONDS)
            return JSONResponse(
                {"token": token, "expiresIn": DEV_TOKEN_SECONDS}, headers={"Cache-Control": "no-store"}
            )

        routes.append(Route("/dev/token", dev_token, methods=["POST"]))
    return routes
