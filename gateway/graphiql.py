"""GraphiQL's page, loading React, GraphiQL and its explorer from the package (gateway/static/vendor/).

Strawberry's page loads them from unpkg, so on a machine without internet it stays at "Loading..."
forever; this page loads the same pinned files from `/static/`, with integrity hashes and a CSP that
allows no inline script. The page's own script (static/graphiql/graphiql-init.js) also makes GraphiQL
send the Headers tab on websockets, where the gateway authenticates subscriptions.
"""

from __future__ import annotations

from html import escape

from gateway.static_files import PAGE_HEADERS, StaticFiles, content_security_policy, default_static_files

REACT = "vendor/react@18.2.0/umd/react.production.min.js"
REACT_DOM = "vendor/react-dom@18.2.0/umd/react-dom.production.min.js"
GRAPHIQL_JS = "vendor/graphiql@3.8.3/graphiql.min.js"
GRAPHIQL_CSS = "vendor/graphiql@3.8.3/graphiql.min.css"
EXPLORER_JS = "vendor/@graphiql/plugin-explorer@1.0.2/dist/index.umd.js"
EXPLORER_CSS = "vendor/@graphiql/plugin-explorer@1.0.2/dist/style.css"
PAGE_CSS = "graphiql/graphiql.css"
INIT = "graphiql/graphiql-init.js"

# GraphiQL's dialogs (Radix, through react-remove-scroll-bar) insert a `<style>` element whose text
# depends on the scrollbar width, so no fixed hash fits: `<style>` elements are allowed on this page
# only. Scripts and `style=` attributes stay strict. See docs/SECURITY.md "Browser pages".
GRAPHIQL_CSP = content_security_policy(inline_style_elements=True)


def graphiql_html(static: StaticFiles | None = None) -> str:
    static = static or default_static_files()
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{escape("OpenCSP Gateway — GraphiQL")}</title>
    {static.stylesheet(GRAPHIQL_CSS)}
    {static.stylesheet(EXPLORER_CSS)}
    {static.stylesheet(PAGE_CSS)}
  </head>
  <body>
    <div id="graphiql" class="graphiql-container">Loading...</div>
    {static.script(REACT)}
    {static.script(REACT_DOM)}
    {static.script(GRAPHIQL_JS)}
    {static.script(EXPLORER_JS)}
    {static.script(INIT)}
  </body>
</html>
"""


def graphiql_headers() -> dict[str, str]:
    return {**PAGE_HEADERS, "Content-Security-Policy": GRAPHIQL_CSP}
