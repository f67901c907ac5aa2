"""The files the gateway's pages load, shipped in the package and served from `/static/`.

Both pages (GraphiQL and the dashboard) must work on a machine with no route to a CDN, so every script
and style they load lives under `gateway/static/`: third-party files as their pinned npm packages ship
them (`vendor/<package>@<version>/<path>`, checked byte for byte by tests/test_static_files.py), the
gateway's own files next to them. Everything is read once at start-up: the set of servable paths is
then a fixed dictionary, so no request path ever reaches the filesystem, and each file's SRI hash is
computed from the very bytes that are served.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

STATIC_DIR = Path(__file__).parent / "static"
PREFIX = "/static/"

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# vendor/ paths carry the package version, so a file under one URL never changes: cache it for a year.
# The gateway's own files change with the gateway: revalidate them (cheap, by ETag).
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"

# Headers every page of the gateway carries (docs/SECURITY.md "Browser pages").
PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    integrity: str  # the SRI value: sha384-<base64>
    etag: str
    cache_control: str


def sri(body: bytes) -> str:
    """The Subresource Integrity value of `body` (sha384, as browsers and npm CDNs use)."""
    return "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()


class StaticFiles:
    """Every file under `directory` with a known type, in memory, by its path relative to it."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.assets: dict[str, Asset] = {}
        for file in sorted(directory.rglob("*")):
            content_type = _TYPES.get(file.suffix)
            if content_type is None or not file.is_file():
                continue
            relative = file.relative_to(directory).as_posix()
            body = file.read_bytes()
            integrity = sri(body)
            self.assets[relative] = Asset(
                body=body,
                content_type=content_type,
                integrity=integrity,
                etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                cache_control=_IMMUTABLE if relative.startswith("vendor/") else _REVALIDATE,
            )

    def url(self, relative: str) -> str:
        if relative not in self.assets:
            raise KeyError(f"no static file {relative!r} in the package")
        return PREFIX + relative

    def integrity(self, relative: str) -> str:
        return self.assets[relative].integrity

    def script(self, relative: str, *, module: bool = False) -> str:
        """A `<script>` tag loading `relative` with its integrity hash."""
        kind = ' type="module"' if module else ""
        return f'<script{kind} src="{self.url(relative)}" integrity="{self.integrity(relative)}"></script>'

    def stylesheet(self, relative: str) -> str:
        return f'<link rel="stylesheet" href="{self.url(relative)}" integrity="{self.integrity(relative)}">'

    async def handle(self, request: Request) -> Response:
        asset = self.assets.get(request.path_params["path"])
        if asset is None:
            return PlainTextResponse("Not Found", status_code=404, headers={"Cache-Control": "no-store"})
        headers = {
            "Cache-Control": asset.cache_control,
            "ETag": asset.etag,
            "X-Content-Type-Options": "nosniff",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if asset.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        # For HEAD the server sends the headers (Content-Length included) and drops the body.
        return Response(asset.body, media_type=asset.content_type, headers=headers)


def content_security_policy(*, connect: tuple[str, ...] = (), inline_style_elements: bool = False) -> str:
    """A page's CSP: scripts and styles from the gateway only, nothing framed, nothing posted elsewhere.

    `connect`: origins beyond the gateway that `fetch` may reach (the OIDC issuer's token endpoint).
    `'self'` covers the gateway's own `ws:`/`wss:` URL (CSP Level 3).
    `inline_style_elements`: `<style>` elements a script inserts are allowed (GraphiQL's dialogs need
    it); `style=` attributes in markup stay blocked either way."""
    connect_src = " ".join(("'self'", *connect))
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            *(["style-src-elem 'self' 'unsafe-inline'"] if inline_style_elements else []),
            "img-src 'self' data:",
            "font-src 'self' data:",
            f"connect-src {connect_src}",
            "form-action 'self'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


@functools.cache
def default_static_files() -> StaticFiles:
    """The package's files, read once per process (GraphiQL alone is 4 MB)."""
    return StaticFiles()
